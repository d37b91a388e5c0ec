//! Generates the tonic/prost code for Warden's `.proto` files with the vendored `protoc`,
//! so that building needs nothing installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure().compile_with_config(
        config,
        &[
            "proto/warden/admin/v1/admin.proto",
            "proto/warden/sync/v1/sync.proto",
            "proto/warden/audit/v1/audit.proto",
        ],
        &["proto"],
    )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
