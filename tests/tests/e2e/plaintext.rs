//! Credentials never cross a network in clear without a word (#12 item 3): `wardenctl` and
//! `warden-dp` refuse an `http://` control plane that is not on this machine unless told
//! `--allow-plaintext`, which warns (and, on a node, is audited as a dangerous setting); a
//! bare `host:port` off loopback means `https://`. The hosts are `.invalid` names (RFC 6761:
//! never resolve) or loopback addresses; nothing here reaches a routable address.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use warden_tests::cluster::{bin, free_port};

/// Runs `command` to its end, or kills it after `limit`; `None` when it had to be killed.
fn run_bounded(mut command: Command, limit: Duration) -> Option<Output> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// `wardenctl ARGS provider list` with a (made-up) admin credential and nothing else in the
/// environment but `env`.
fn wardenctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(bin("wardenctl").unwrap());
    command
        .args(args)
        .args(["provider", "list"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "WARDEN_ADMIN_TOKEN",
            "wa_madeUpCredentialForThePlaintextTests000000000000000",
        )
        .envs(env.iter().copied());
    run_bounded(command, Duration::from_secs(30)).expect("wardenctl did not finish in 30 s")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn wardenctl_refuses_http_off_loopback_without_allow_plaintext() {
    let started = Instant::now();
    let out = wardenctl(&["--cp-addr", "http://cp.invalid:50051"], &[]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("--allow-plaintext"), "{err}");
    assert!(err.contains("http://cp.invalid:50051"), "{err}");
    // Refused before any connection attempt (no DNS lookup, no connect timeout).
    assert!(!err.contains("cannot reach"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The same through the environment.
    let out = wardenctl(&[], &[("WARDEN_CP_ADDR", "http://10.0.0.1.invalid:1")]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--allow-plaintext"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn wardenctl_with_allow_plaintext_warns_then_connects() {
    for (args, env) in [
        (
            vec!["--cp-addr", "http://cp.invalid:50051", "--allow-plaintext"],
            vec![],
        ),
        (
            vec!["--cp-addr", "http://cp.invalid:50051"],
            vec![("WARDEN_ALLOW_PLAINTEXT", "true")],
        ),
    ] {
        let out = wardenctl(&args, &env);
        let err = stderr(&out);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains("warning:"), "no warning: {err}");
        assert!(err.contains("unencrypted"), "{err}");
        // It went on to connect (and the `.invalid` name did not resolve).
        assert!(
            err.contains("cannot reach the control plane at http://cp.invalid:50051"),
            "{err}"
        );
    }
}

#[test]
fn a_bare_host_port_means_https_off_loopback_and_http_on_it() {
    // Off loopback: https://, which needs the CA.
    let out = wardenctl(&["--cp-addr", "cp.invalid:50051"], &[]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("https://") && err.contains("--ca-file"),
        "{err}"
    );
    assert!(!err.contains("--allow-plaintext"), "{err}");
    // With a CA it goes to https://cp.invalid:50051 (and fails on the name).
    let dir = tempfile::tempdir().unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["cp.invalid".to_owned()]).unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert.pem()).unwrap();
    let out = wardenctl(
        &[
            "--cp-addr",
            "cp.invalid:50051",
            "--ca-file",
            ca_file.to_str().unwrap(),
        ],
        &[],
    );
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("https://cp.invalid:50051"), "{err}");
    // On loopback (any 127.0.0.0/8 address, localhost): http:// as before, no warning.
    let port = free_port().unwrap();
    for addr in [
        format!("127.0.0.1:{port}"),
        format!("127.0.0.7:{port}"),
        format!("localhost:{port}"),
        format!("http://127.0.0.3:{port}"),
    ] {
        let out = wardenctl(&["--cp-addr", &addr], &[]);
        let err = stderr(&out);
        assert!(!out.status.success());
        assert!(
            err.contains("cannot reach the control plane at http://"),
            "{addr}: {err}"
        );
        assert!(!err.contains("warning"), "{addr}: {err}");
    }
}

/// `warden-dp` with a made-up node credential, its spool in `spool`, and `--cp-addr addr`.
fn node(addr: &str, spool: &Path, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(bin("warden-dp").unwrap());
    command
        .arg("--http-addr")
        .arg(format!("127.0.0.1:{}", free_port().unwrap()))
        .arg("--cp-addr")
        .arg(addr)
        .arg("--node-id")
        .arg("plain-1")
        .arg("--audit-spool-dir")
        .arg(spool)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "WARDEN_NODE_TOKEN",
            "wn_madeUpCredentialForThePlaintextTests000000000000000",
        )
        .env("RUST_LOG", "info")
        .envs(env.iter().copied());
    command
}

/// Every file under `dir`, concatenated (the spool's segments, wherever they sit).
fn read_tree(dir: &Path) -> String {
    let mut text = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                text.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
    text
}

#[test]
fn a_node_refuses_http_off_loopback_without_allow_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = run_bounded(
        node("http://cp.invalid:50051", &dir.path().join("spool"), &[]),
        Duration::from_secs(15),
    )
    .expect("warden-dp kept running with an http:// control plane off loopback");
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("--allow-plaintext"), "{err}");
    assert!(err.contains("http://cp.invalid:50051"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_node_with_allow_plaintext_warns_and_audits_it() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let log = dir.path().join("node.log");
    let mut child = node(
        "http://cp.invalid:50051",
        &spool,
        &[("WARDEN_ALLOW_PLAINTEXT", "true")],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = (String::new(), String::new());
    while Instant::now() < deadline {
        assert!(
            child.try_wait().unwrap().is_none(),
            "warden-dp exited: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        seen = (
            std::fs::read_to_string(&log).unwrap_or_default(),
            read_tree(&spool),
        );
        if seen.0.contains("--allow-plaintext") && seen.1.contains("node.dangerous_settings") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let (log, spooled) = seen;
    let warning = log
        .lines()
        .find(|l| l.contains("--allow-plaintext"))
        .unwrap_or_else(|| panic!("no warning in the node's log:\n{log}"));
    assert!(warning.contains("WARN"), "{warning}");
    let event = spooled
        .lines()
        .find(|l| l.contains("node.dangerous_settings"))
        .unwrap_or_else(|| panic!("no node.dangerous_settings event in the spool:\n{spooled}"));
    assert!(event.contains("allow_plaintext=true"), "{event}");
}
