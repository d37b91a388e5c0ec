//! Generates the client and server of an older `warden.sync.v1` for the wire-compatibility
//! tests (tests/e2e/wire_compat.rs): `proto/sync-v1-7b37173/` is `sync.proto` exactly as
//! commit 7b37173 released it (the first contract with sealed secrets, the oldest a node or
//! control plane of today still speaks to), checked with
//! `git show 7b37173:proto/proto/warden/sync/v1/sync.proto | diff - tests/proto/sync-v1-7b37173/warden/sync/v1/sync.proto`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure().compile_with_config(
        config,
        &["proto/sync-v1-7b37173/warden/sync/v1/sync.proto"],
        &["proto/sync-v1-7b37173"],
    )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
