//! The node's smaller findings of "Security II": arithmetic on client numbers saturates.
//! (The parallel-limit 429's masked key id is checked in `limits.rs`, the log redactor's
//! keys of alias-less providers in `warden-data-plane`'s `compiled` tests.)

use serde_json::{Value, json};
use warden_tests::cluster::{MODEL, TestCluster};

/// `prompt + max_tokens` is the reservation taken from the limits; a client's
/// `max_tokens` of u64::MAX used to overflow it (a panic in a debug build, the connection
/// dropped without an answer). Now it saturates: the request is answered (by the caller's
/// tokens-per-minute limit, or by the provider) and the node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_max_tokens_of_u64_max_is_answered_and_the_node_keeps_serving() {
    let c = TestCluster::start(1).await.unwrap();
    let token = c.issue_token("overflow", MODEL).unwrap();
    let vkey = c
        .ctl_ok(&["vkey", "create", "--name", "tpm", "--tpm", "1000"], None)
        .unwrap();
    for credential in [&token, &vkey] {
        let mut body = TestCluster::chat_body(MODEL, "hello there", false);
        body["max_tokens"] = json!(u64::MAX);
        let r = c
            .chat(0, credential, &body)
            .await
            .expect("the node answers a huge max_tokens");
        let status = r.status().as_u16();
        let answer: Value = r.json().await.unwrap();
        // Admitted (the reservation is capped at the bucket) or refused by the limit: an
        // answer in the API's shape either way, never a dropped connection or a 5xx.
        assert!(status == 200 || status == 429, "{status} {answer}");
        assert!(answer["choices"].is_array() || answer["error"]["message"].is_string());
    }
    let r = c
        .chat(
            0,
            &token,
            &TestCluster::chat_body(MODEL, "still here?", false),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
