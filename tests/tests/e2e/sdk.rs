//! The official `openai` Python SDK against a node: plain and streaming completions, model
//! listing, and its error classes for the gateway's 401 and 403.

use warden_tests::cluster::{MODEL, TestCluster};

#[tokio::test]
async fn openai_python_sdk_plain_and_streaming() {
    let c = TestCluster::start(1).await.unwrap();
    let token = c.issue_token("python-sdk", MODEL).unwrap();
    let r = warden_tests::cluster::run_python_script("sdk_openai.py", c.env_for(0, &token))
        .await
        .unwrap();
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
