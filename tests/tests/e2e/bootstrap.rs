//! The first admin credential: `warden-cp bootstrap-admin --bootstrap-token-out FILE` writes
//! it to a new 0600 file and never to stdout, and a second run issues none. (Replicas
//! racing on one database: `store_backends::*::bootstrap_admin_once`.)

use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use warden_tests::cluster::bin;

fn master_key() -> String {
    base64::engine::general_purpose::STANDARD.encode(
        [
            uuid::Uuid::new_v4().into_bytes(),
            uuid::Uuid::new_v4().into_bytes(),
        ]
        .concat(),
    )
}

fn bootstrap(
    data_dir: &std::path::Path,
    key: &str,
    env: &[(&str, &str)],
    out: Option<&std::path::Path>,
) -> Command {
    let mut command = Command::new(bin("warden-cp").unwrap());
    command
        .arg("bootstrap-admin")
        .arg("--data-dir")
        .arg(data_dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WARDEN_MASTER_KEY", key)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(out) = out {
        command.arg("--bootstrap-token-out").arg(out);
    }
    command
}

fn issued(out: &Output) -> bool {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout.contains("first start")
}

#[test]
fn bootstrap_admin_writes_a_private_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let key = master_key();
    let file = dir.path().join("admin-token");
    let data = dir.path().join("data");
    let out = bootstrap(&data, &key, &[], Some(&file)).output().unwrap();
    assert!(issued(&out));
    let written = std::fs::read_to_string(&file).unwrap();
    let credential = written.trim();
    assert!(credential.starts_with("wa_"), "{written}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(credential));
    assert!(!String::from_utf8_lossy(&out.stderr).contains(credential));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // Once only: a second run issues none and leaves the file alone.
    let again = bootstrap(&data, &key, &[], None).output().unwrap();
    assert!(!issued(&again));
    assert!(!String::from_utf8_lossy(&again.stdout).contains("wa_"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), written);
}
