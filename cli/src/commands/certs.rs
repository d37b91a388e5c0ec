//! `wardenctl certs dev --out DIR`: a throwaway certificate authority and the certificates a
//! TLS (and mTLS) setup on one machine needs, made with `rcgen` — for trying TLS out and for
//! tests, never for production (the CA key sits next to the certificates it signed).
//!
//! It writes `ca.pem`/`ca.key` (the CA, `CA:TRUE`, path length 0), `server.pem`/`server.key`
//! (`localhost` and 127.0.0.1 plus any `--server-name`, extended key usage serverAuth),
//! `node.pem`/`node.key` and `admin.pem`/`admin.key` (client certificates, clientAuth). Keys
//! are ECDSA P-256 in PKCS#8, written 0600 into a directory made 0700; nothing is written
//! when a file exists already, unless `--force`. Runs offline: no control plane needed.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

/// How long the certificates `certs dev` writes are valid.
pub const DEV_CERT_VALIDITY_DAYS: i64 = 90;

/// The names every dev server certificate holds.
const DEFAULT_SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// `wardenctl certs …`.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Write a throwaway CA, a server certificate for localhost/127.0.0.1, and a node and an
    /// admin client certificate (development and tests only).
    Dev(DevArgs),
}

/// Flags of `wardenctl certs dev`.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Directory to write into (created 0700 when missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Replace files that exist already (all eight are written anew, with a new CA).
    #[arg(long)]
    force: bool,
    /// One more DNS name or IP address for the server certificate (repeatable), e.g. the
    /// control plane's name in a compose network.
    #[arg(long = "server-name", value_name = "NAME")]
    server_names: Vec<String>,
}

/// One PEM file to write.
struct Output {
    name: &'static str,
    text: String,
    /// A private key: 0600.
    secret: bool,
}

/// Runs `certs dev` (the only subcommand), printing what it wrote and the flags that use it.
pub fn run(command: CertsCommand) -> anyhow::Result<()> {
    let CertsCommand::Dev(args) = command;
    let outputs = generate(&args.server_names)?;
    let written = write_all(&args.out, &outputs, args.force)?;
    let dir = args.out.display();
    for path in &written {
        println!("wrote {}", path.display());
    }
    println!();
    println!(
        "Throwaway certificates, valid {DEV_CERT_VALIDITY_DAYS} days (the CA key is beside them: never for production). Use them with:"
    );
    println!(
        "  warden-cp:  WARDEN_TLS_CERT_FILE={dir}/server.pem WARDEN_TLS_KEY_FILE={dir}/server.key warden-cp …"
    );
    println!(
        "  warden-dp:  warden-dp --cp-addr https://localhost:50051 --cp-ca-file {dir}/ca.pem …"
    );
    println!("  wardenctl:  wardenctl --cp-addr https://localhost:50051 --ca-file {dir}/ca.pem …");
    println!(
        "  client certificates (mTLS): {dir}/node.pem + node.key for nodes, {dir}/admin.pem + admin.key for wardenctl"
    );
    Ok(())
}

/// The CA, the server certificate and the two client certificates, as PEM.
fn generate(extra_server_names: &[String]) -> anyhow::Result<Vec<Output>> {
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks behind this one.
    let not_before = now - time::Duration::hours(1);
    let not_after = now + time::Duration::days(DEV_CERT_VALIDITY_DAYS);
    let params = |names: Vec<String>, common_name: &str| -> anyhow::Result<CertificateParams> {
        let mut p = CertificateParams::new(names).context("invalid certificate name")?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Warden dev");
        dn.push(DnType::CommonName, common_name);
        p.distinguished_name = dn;
        p.not_before = not_before;
        p.not_after = not_after;
        p.use_authority_key_identifier_extension = true;
        Ok(p)
    };

    let ca_key = KeyPair::generate().context("generating the CA key")?;
    // Each CA gets its own name (from its key), so a certificate from another `certs dev`
    // run is reported as signed by an unknown CA rather than as a bad signature.
    let ca_id: String = CertificateParams::default()
        .key_identifier(&ca_key)
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut ca_params = params(Vec::new(), &format!("Warden dev CA {ca_id}"))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.use_authority_key_identifier_extension = false;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).context("signing the CA")?;

    let leaf = |names: Vec<String>,
                common_name: &str,
                usage: ExtendedKeyUsagePurpose|
     -> anyhow::Result<(String, String)> {
        let mut p = params(names, common_name)?;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![usage];
        let key = KeyPair::generate().context("generating a key")?;
        let cert = p
            .signed_by(&key, &ca)
            .with_context(|| format!("signing the {common_name} certificate"))?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let mut server_names: Vec<String> = DEFAULT_SERVER_NAMES.map(str::to_owned).to_vec();
    for name in extra_server_names {
        let name = name.trim();
        if name.is_empty() {
            bail!("--server-name must not be empty");
        }
        if !server_names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            server_names.push(name.to_owned());
        }
    }
    let (server, server_key) = leaf(
        server_names,
        "localhost",
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let (node, node_key) = leaf(
        vec!["warden-node".to_owned()],
        "warden-node",
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    let (admin, admin_key) = leaf(
        vec!["warden-admin".to_owned()],
        "warden-admin",
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    let out = |name, text, secret| Output { name, text, secret };
    Ok(vec![
        out("ca.pem", ca.pem(), false),
        out("ca.key", ca_key_pem, true),
        out("server.pem", server, false),
        out("server.key", server_key, true),
        out("node.pem", node, false),
        out("node.key", node_key, true),
        out("admin.pem", admin, false),
        out("admin.key", admin_key, true),
    ])
}

/// Writes `outputs` into `dir`; refuses (writing nothing) when one exists and not `force`.
fn write_all(dir: &Path, outputs: &[Output], force: bool) -> anyhow::Result<Vec<PathBuf>> {
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    } else if !dir.is_dir() {
        bail!("--out {} is not a directory", dir.display());
    }
    let existing: Vec<String> = outputs
        .iter()
        .map(|o| dir.join(o.name))
        .filter(|p| p.symlink_metadata().is_ok())
        .map(|p| p.display().to_string())
        .collect();
    if !existing.is_empty() && !force {
        bail!(
            "refusing to overwrite {} (pass --force to replace every file with a new CA)",
            existing.join(", ")
        );
    }
    let mut written = Vec::new();
    for o in outputs {
        let path = dir.join(o.name);
        if force {
            // A fresh file (never through a symlink, never keeping old permissions).
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot replace {}", path.display()));
                }
            }
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, if o.secret { 0o600 } else { 0o644 });
        let mut file = options
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        file.write_all(o.text.as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_overwrite_without_force_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("node.key"), "mine").unwrap();
        let outputs = generate(&[]).unwrap();
        let err = write_all(dir.path(), &outputs, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("node.key") && err.contains("--force"), "{err}");
        assert!(!dir.path().join("ca.pem").exists());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("node.key")).unwrap(),
            "mine"
        );
        write_all(dir.path(), &outputs, true).unwrap();
        assert!(
            std::fs::read_to_string(dir.path().join("node.key"))
                .unwrap()
                .contains("PRIVATE KEY")
        );
    }
}
