//! `wardenctl`, `warden-cp` and `warden-dp` as an operator meets them: output that scripts
//! can capture, errors that say what is wrong, and admin authentication that is audited.

use std::process::Command;

use serde_json::Value;
use warden_tests::cluster::{CANARY_UPSTREAM_KEY, TestCluster, bin};

#[tokio::test]
async fn issued_credentials_are_alone_on_stdout() {
    let c = TestCluster::start(0).await.unwrap();
    let out = c
        .ctl(
            &["token", "issue", "--subject", "script", "--ttl", "2h"],
            None,
        )
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert_eq!(stdout.trim().split('.').count(), 3, "not a JWT: {stdout}");
    let out = c
        .ctl(&["vkey", "create", "--name", "scripted"], None)
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1);
    assert!(stdout.starts_with("wk_"));
    let json: Value = serde_json::from_str(
        &c.ctl_ok(&["token", "issue", "--subject", "j", "-o", "json"], None)
            .unwrap(),
    )
    .unwrap();
    assert!(json["token"].as_str().unwrap().starts_with("eyJ"));
    assert!(json["jti"].is_string());
}

#[tokio::test]
async fn admin_calls_need_a_valid_admin_credential_and_failures_are_audited() {
    let c = TestCluster::start(0).await.unwrap();
    let out = c.ctl_with(&["provider", "list"], None, &[]).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("WARDEN_ADMIN_TOKEN"), "{err}");
    let forged = warden_core::credential::generate(warden_core::credential::Kind::Admin);
    let forged = secrecy::ExposeSecret::expose_secret(&forged).to_owned();
    let out = c
        .ctl_with(
            &["provider", "list"],
            None,
            &[("WARDEN_ADMIN_TOKEN", &forged)],
        )
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rejected the admin credential"), "{err}");
    assert!(!err.contains(&forged), "the CLI echoed the credential");
    // A client token without the admin scope is no admin credential either.
    let client = c.issue_token("not-admin", "*").unwrap();
    let out = c
        .ctl_with(
            &["provider", "list"],
            None,
            &[("WARDEN_ADMIN_TOKEN", &client)],
        )
        .unwrap();
    assert!(!out.status.success());
    // …but a JWT with the admin scope is.
    let admin_jwt = c
        .ctl_ok(
            &["token", "issue", "--subject", "ops", "--scopes", "admin"],
            None,
        )
        .unwrap();
    let out = c
        .ctl_with(
            &["provider", "list"],
            None,
            &[("WARDEN_ADMIN_TOKEN", &admin_jwt)],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let audit: Value = serde_json::from_str(
        &c.ctl_ok(
            &["audit", "list", "--action", "auth.admin", "-o", "json"],
            None,
        )
        .unwrap(),
    )
    .unwrap();
    let rows = audit.as_array().unwrap();
    let reasons: Vec<&str> = rows.iter().filter_map(|r| r["detail"].as_str()).collect();
    for reason in ["unknown_credential", "missing_admin_scope"] {
        assert!(
            reasons.iter().any(|d| warden_core::audit_detail::parse(d)
                .get("reason")
                .is_some_and(|r| r == reason)),
            "no audit row for {reason}: {reasons:?}"
        );
    }
    assert!(
        !audit.to_string().contains(&forged),
        "the audit row holds the credential"
    );
    // Admin actions are audited with their actor.
    let audit = c
        .ctl_ok(
            &["audit", "list", "--action", "token.issue", "-o", "json"],
            None,
        )
        .unwrap();
    assert!(audit.contains("admin:adm_"), "{audit}");
}

#[tokio::test]
async fn provider_keys_come_from_stdin_and_only_fingerprints_come_back() {
    let c = TestCluster::start(0).await.unwrap();
    let out = c
        .ctl(
            &[
                "provider",
                "add",
                "remote",
                "--format",
                "openai",
                "--base-url",
                "http://api.example.com/v1",
            ],
            None,
        )
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("https"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.ctl_ok(
        &[
            "provider",
            "add",
            "second",
            "--format",
            "anthropic",
            "--base-url",
            "https://api.anthropic.com/v1",
        ],
        None,
    )
    .unwrap();
    let second_key = "sk-ant-second-canary-9d8c7b6a";
    c.ctl_ok(
        &["provider", "key", "add", "second"],
        Some(&format!("{second_key}\n")),
    )
    .unwrap();
    let out = c
        .ctl(&["provider", "key", "add", "second"], Some(second_key))
        .unwrap();
    assert!(!out.status.success(), "a duplicate key must be refused");
    let out = c
        .ctl(&["provider", "key", "add", "second"], Some(""))
        .unwrap();
    assert!(!out.status.success(), "an empty key must be refused");
    for format in [
        &["provider", "list"][..],
        &["provider", "list", "-o", "json"],
    ] {
        let listing = c.ctl_ok(format, None).unwrap();
        assert!(
            !listing.contains(second_key) && !listing.contains(CANARY_UPSTREAM_KEY),
            "{listing}"
        );
        assert!(
            listing.contains(&warden_core::fingerprint::of(second_key.as_bytes())),
            "{listing}"
        );
    }
    let hits = c.find_everywhere(second_key);
    assert!(hits.is_empty(), "{hits:?}");
    c.ctl_ok(&["provider", "remove", "second"], None).unwrap();
    let out = c
        .ctl(&["model", "add", "x", "--provider", "second"], None)
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn control_plane_refuses_to_start_without_a_master_key_and_names_bad_fields() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin("warden-cp").unwrap())
        .args(["--data-dir"])
        .arg(dir.path())
        .env_remove("WARDEN_MASTER_KEY")
        .env_remove("WARDEN_MASTER_KEY_FILE")
        .env_remove("WARDEN_DEV")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("master key") && err.contains("secrets.master_key_file"),
        "{err}"
    );

    let config = dir.path().join("warden.toml");
    std::fs::write(&config, "[server]\ngrpc_addr = \"127.0.0.1:1\"\n\n[[providers]]\nname = \"p\"\nformat = \"openai\"\nbase_url = \"https://x/v1\"\nkeys = [\"env://WARDEN_TEST_UNSET_VAR\"]\n").unwrap();
    let out = Command::new(bin("warden-cp").unwrap())
        .arg("--config")
        .arg(&config)
        .arg("validate")
        .env("WARDEN_MASTER_KEY", "x")
        .env_remove("WARDEN_TEST_UNSET_VAR")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("providers[0].keys[0]"), "{err}");

    std::fs::write(&config, "[server]\ngrpc_adress = \"127.0.0.1:1\"\n").unwrap();
    let out = Command::new(bin("warden-cp").unwrap())
        .arg("--config")
        .arg(&config)
        .arg("validate")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("grpc_adress"));

    let out = Command::new(bin("warden-dp").unwrap())
        .env_remove("WARDEN_NODE_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("WARDEN_NODE_TOKEN"));
    for b in ["warden-cp", "warden-dp", "wardenctl"] {
        let out = Command::new(bin(b).unwrap())
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{b} --help");
    }
}
