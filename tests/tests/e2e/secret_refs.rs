//! An admin tries to read Warden's own secrets (or secrets outside the allowed prefixes)
//! through a provider key whose `base_url` the admin chose: every reference is refused with
//! a gRPC status naming the rule, audited, and no secret value reaches the provider, a log
//! or the audit log; the gateway keeps serving.

use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use warden_tests::cluster::{
    CANARY_ANTHROPIC_KEY, CANARY_UPSTREAM_KEY, MODEL, Options, TestCluster,
};

fn require_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("{name} is not set: run scripts/test.sh (it starts the test backends)"),
    }
}

fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

async fn vault_write(path: &str, value: &str) {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/v1/secret/data/{path}",
            require_env("WARDEN_TEST_VAULT_ADDR")
        ))
        .header("X-Vault-Token", require_env("WARDEN_TEST_VAULT_TOKEN"))
        .json(&json!({ "data": { "value": value } }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
}

#[tokio::test]
async fn an_admin_cannot_send_wardens_own_secrets_to_a_provider_of_their_choosing() {
    let id = suffix();
    let allowed_path = format!("e2e-allowed-{id}/openai");
    let outside_path = format!("e2e-outside-{id}/db-password");
    let allowed_value = format!("sk-canary-allowed-{id}");
    let outside_value = format!("sk-canary-outside-{id}");
    let home_value = format!("/home/canary-{id}");
    vault_write(&allowed_path, &allowed_value).await;
    vault_write(&outside_path, &outside_value).await;
    let config = format!(
        r#"
[secrets]
allowed_ref_prefixes = ["vault://secret/e2e-allowed-{id}/"]
[[secrets.backends]]
type = "vault"
address = "{addr}"
auth = {{ type = "token", token_env = "E2E_VAULT_TOKEN" }}
"#,
        addr = require_env("WARDEN_TEST_VAULT_ADDR"),
    );
    let cluster = TestCluster::start_with(
        1,
        Options {
            cp_config: Some(config),
            cp_env: vec![
                (
                    "E2E_VAULT_TOKEN".to_owned(),
                    require_env("WARDEN_TEST_VAULT_TOKEN"),
                ),
                ("HOME".to_owned(), home_value.clone()),
            ],
            ..Options::default()
        },
    )
    .await
    .unwrap();

    // The secrets at stake, read the way an attacker holding the database and the master
    // key would have to: they live in the state store, not in the `file` backend's file.
    let pepper = cluster
        .own_secret("warden/credential-pepper")
        .await
        .unwrap()
        .expose_secret()
        .to_owned();
    let file = cluster.dir.path().join("cp-data").join("secrets.json");
    if let Ok(text) = std::fs::read_to_string(&file) {
        assert!(
            !text.contains("\"warden/"),
            "own secrets in {}",
            file.display()
        );
    }

    // The admin's own "provider": the mock, which records every Authorization it gets.
    let base = cluster.mock.base_url();
    cluster
        .ctl_ok(
            &[
                "provider",
                "add",
                "exfil",
                "--format",
                "openai",
                "--base-url",
                &base,
            ],
            None,
        )
        .unwrap();
    cluster
        .ctl_ok(
            &["model", "add", "exfil-model", "--provider", "exfil"],
            None,
        )
        .unwrap();

    let outside_ref = format!("vault://secret/{outside_path}#value");
    let attempts = [
        ("file://warden/credential-pepper", "Warden's own secrets"),
        ("file://warden/audit/checkpoint-key", "Warden's own secrets"),
        ("env://WARDEN_MASTER_KEY", "config file"),
        ("env://HOME", "config file"),
        ("env://E2E_VAULT_TOKEN", "config file"),
        (
            "vault://secret/warden/credential-pepper",
            "Warden's own secrets",
        ),
        ("aws-sm://warden/credential-pepper", "Warden's own secrets"),
        (outside_ref.as_str(), "allowed_ref_prefixes"),
    ];
    for (reference, rule) in attempts {
        let out = cluster
            .ctl(
                &["provider", "key", "add", "exfil", "--ref", reference],
                None,
            )
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{reference} was accepted");
        assert!(
            err.contains("refused") && err.contains(rule),
            "{reference}: {err}"
        );
        // gRPC PermissionDenied, which wardenctl words as "not allowed".
        assert!(err.contains("not allowed"), "{reference}: {err}");
    }

    // A reference under the allowed prefix is accepted (the rules do not refuse everything).
    cluster
        .ctl_ok(
            &[
                "provider",
                "key",
                "add",
                "exfil",
                "--ref",
                &format!("vault://secret/{allowed_path}#value"),
            ],
            None,
        )
        .unwrap();

    // Each refusal is audited with its outcome and rule, naming the reference only.
    let audit: Value = serde_json::from_str(
        &cluster
            .ctl_ok(
                &[
                    "-o",
                    "json",
                    "audit",
                    "list",
                    "--action",
                    "provider.key.add",
                    "--limit",
                    "100",
                ],
                None,
            )
            .unwrap(),
    )
    .unwrap();
    let rows = audit.as_array().unwrap();
    let refused: Vec<&Value> = rows
        .iter()
        .filter(|r| r["result"] == "permission_denied")
        .collect();
    assert_eq!(refused.len(), attempts.len(), "{rows:#?}");
    for row in &refused {
        let detail = row["detail"].as_str().unwrap();
        assert!(detail.contains("is refused"), "{detail}");
        assert!(row["subject"].as_str().unwrap().starts_with("exfil ref="));
    }
    assert!(
        refused
            .iter()
            .any(|r| r["subject"] == "exfil ref=file://warden/credential-pepper")
    );

    // The gateway still serves, the exfil provider with the allowed key, the mock with its own.
    let token = cluster
        .issue_token("svc", &format!("{MODEL},exfil-model"))
        .unwrap();
    for model in [MODEL, "exfil-model"] {
        let response = cluster
            .chat(0, &token, &TestCluster::chat_body(model, "hi", false))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{model}");
    }

    // The provider saw only keys meant for it; no secret at stake is anywhere.
    let expected = [
        format!("Bearer {CANARY_UPSTREAM_KEY}"),
        format!("Bearer {allowed_value}"),
    ];
    for r in cluster.mock.requests() {
        if let Some(auth) = &r.authorization {
            assert!(expected.contains(auth), "the provider received {auth:?}");
        }
        if let Some(key) = &r.x_api_key {
            assert_eq!(key, CANARY_ANTHROPIC_KEY);
        }
    }
    let audit_text = audit.to_string();
    for secret in [
        pepper.as_str(),
        cluster.master_key.as_str(),
        home_value.as_str(),
        outside_value.as_str(),
    ] {
        assert!(!cluster.logs().contains(secret));
        assert!(!audit_text.contains(secret));
        assert!(
            !cluster
                .mock
                .requests()
                .iter()
                .any(|r| format!("{r:?}").contains(secret))
        );
    }
    assert!(cluster.find_everywhere(&outside_value).is_empty());
}
