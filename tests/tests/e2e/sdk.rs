//! The official `openai` Python SDK against a node: plain and streaming completions, model
//! listing, and its error classes for the gateway's 401 and 403.

use std::process::Command;

use serde_json::Value;
use warden_tests::cluster::{MODEL, TestCluster};

fn python() -> String {
    std::env::var("WARDEN_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "WARDEN_TEST_PYTHON is not set: run the suite with scripts/test.sh, which installs the \
             openai SDK into .venv (or point it at a python with `openai` installed)"
        )
    })
}

#[tokio::test]
async fn openai_python_sdk_plain_and_streaming() {
    let c = TestCluster::start(1).await.unwrap();
    let token = c.issue_token("python-sdk", MODEL).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/sdk_openai.py");
    let out = tokio::task::spawn_blocking({
        let env = c.env_for(0, &token);
        move || Command::new(python()).arg(script).envs(env).output()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        out.status.success(),
        "sdk script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["plain_content"], "mock: hello from the sdk", "{r}");
    assert_eq!(r["plain_finish_reason"], "stop");
    assert!(r["plain_total_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        r["stream_content"], "mock: stream these words please",
        "{r}"
    );
    assert!(r["stream_chunks"].as_u64().unwrap() >= 5, "{r}");
    assert_eq!(r["stream_finish_reason"], "stop");
    assert_eq!(r["models"], serde_json::json!([MODEL]));
    assert_eq!(r["bad_credential_error"], "AuthenticationError");
    assert_eq!(r["bad_credential_status"], 401);
    assert_eq!(r["forbidden_error"], "PermissionDeniedError");
    assert_eq!(r["forbidden_status"], 403);
}
