//! Incident response on real processes (issue 14 item 5): a control plane, two nodes and
//! the mock provider.
//!
//! - `wardenctl credentials suspend --subject S` refuses S's JWTs on both nodes within a
//!   second (403 `credential_suspended`, in the endpoint's error shape), others keep
//!   working, and `resume` undoes it; `--prefix P` covers JWT subjects, virtual key owners
//!   and virtual key ids starting with P.
//! - `wardenctl lockdown` refuses every client request on both nodes (503
//!   `gateway_locked_down`, the same for a valid and a made-up credential) while the mock
//!   provider receives nothing, admin calls keep working and nodes keep syncing; `lift`
//!   restores traffic within a second.
//! - `wardenctl credentials revoke-all --yes` makes every existing JWT and virtual key
//!   useless for good — a token freshly signed with the old signing key too — while new
//!   ones work; without `--yes` and no terminal it refuses and revokes nothing.
//!
//! Each action has its audit row with actor and scope; refused requests have request rows
//! with the reason; an `operator` may not use any of it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;
use tonic::Code;
use tonic::metadata::MetadataValue;
use warden_proto::admin::v1 as pb;
use warden_proto::admin::v1::admin_client::AdminClient;
use warden_tests::cluster::{MODEL, TestCluster};

/// A change must be in force on every node within this long of the command's return.
const WITHIN: Duration = Duration::from_secs(1);

fn ctl_json(c: &TestCluster, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&c.ctl_ok(&all, None).unwrap()).unwrap()
}

/// Creates a virtual key; returns (secret, id).
fn vkey(c: &TestCluster, name: &str, owner: &str) -> (String, String) {
    let v = ctl_json(c, &["vkey", "create", "--name", name, "--owner", owner]);
    (
        v["key"].as_str().unwrap().to_owned(),
        v["id"].as_str().unwrap().to_owned(),
    )
}

/// The status and JSON body of a chat completion on `node`.
async fn chat(c: &TestCluster, node: usize, credential: &str) -> (u16, Value) {
    let r = c
        .chat(
            node,
            credential,
            &TestCluster::chat_body(MODEL, "hi", false),
        )
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Waits until `credential` gets `status` on every node, at most [`WITHIN`]; panics with
/// what it got otherwise. Returns the last body.
async fn on_every_node_within(c: &TestCluster, credential: &str, status: u16, what: &str) -> Value {
    let deadline = Instant::now() + WITHIN;
    let mut last = Vec::new();
    loop {
        last.clear();
        for node in 0..c.nodes.len() {
            last.push(chat(c, node, credential).await);
        }
        if last.iter().all(|(s, _)| *s == status) {
            return last.pop().unwrap().1;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not {status} on every node within {WITHIN:?}: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Audit rows of `action`, newest first.
fn audit_rows(c: &TestCluster, action: &str) -> Vec<Value> {
    ctl_json(c, &["audit", "list", "--action", action])
        .as_array()
        .unwrap()
        .clone()
}

fn attrs(row: &Value) -> BTreeMap<String, String> {
    warden_core::audit_detail::parse(row["detail"].as_str().unwrap())
}

/// Request rows refused with `error`, once at least `n` are there (nodes deliver their
/// events asynchronously).
async fn refused_requests(c: &TestCluster, error: &str, n: usize) -> Vec<Value> {
    warden_tests::cluster::eventually(Duration::from_secs(10), "request rows", || async {
        let rows: Vec<Value> = audit_rows(c, "request")
            .into_iter()
            .filter(|r| attrs(r).get("error").map(String::as_str) == Some(error))
            .collect();
        (rows.len() >= n).then_some(rows)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn suspensions_refuse_a_subject_or_a_prefix_on_every_node_until_resumed() {
    let c = TestCluster::start(2).await.unwrap();
    let alice = c.issue_token("alice", "*").unwrap();
    let bob = c.issue_token("bob", "*").unwrap();
    let batch = c.issue_token("team-a-batch", "*").unwrap();
    let (team_key, _) = vkey(&c, "team-key", "team-a@example.com");
    let (other_key, other_id) = vkey(&c, "other-key", "team-b");
    for credential in [&alice, &bob, &batch, &team_key, &other_key] {
        on_every_node_within(&c, credential, 200, "before any suspension").await;
    }

    // One subject: its JWTs refused on both nodes, everyone else served.
    let out = ctl_json(
        &c,
        &[
            "credentials",
            "suspend",
            "--subject",
            "alice",
            "--reason",
            "laptop stolen",
        ],
    );
    assert_eq!(out["kind"], "subject");
    let body = on_every_node_within(&c, &alice, 403, "suspended subject").await;
    assert_eq!(body["error"]["code"], "credential_suspended", "{body}");
    assert_eq!(body["error"]["message"], "This credential is suspended.");
    assert!(
        !body.to_string().contains("laptop"),
        "the reason stays private: {body}"
    );
    for credential in [&bob, &batch, &team_key, &other_key] {
        on_every_node_within(&c, credential, 200, "not suspended").await;
    }
    // In the Anthropic shape on /v1/messages; a new token of the subject is refused too.
    let fresh = c.issue_token("alice", "*").unwrap();
    let r = c
        .http
        .post(c.nodes[1].url("/v1/messages"))
        .header("x-api-key", &fresh)
        .json(&serde_json::json!({
            "model": MODEL, "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "permission_error", "{body}");
    // A second suspension of the same subject is refused; the list shows the one in force.
    let again = c
        .ctl(&["credentials", "suspend", "--subject", "alice"], None)
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already suspended"));
    let list = ctl_json(&c, &["credentials", "suspensions"]);
    assert_eq!(list["suspensions"][0]["value"], "alice", "{list}");
    assert_eq!(list["suspensions"][0]["reason"], "laptop stolen");

    // Resumed: served again on both nodes.
    c.ctl_ok(&["credentials", "resume", "--subject", "alice"], None)
        .unwrap();
    on_every_node_within(&c, &alice, 200, "resumed subject").await;
    let missing = c
        .ctl(&["credentials", "resume", "--subject", "alice"], None)
        .unwrap();
    assert!(!missing.status.success(), "nothing left to resume");

    // A prefix: JWT subjects and virtual key owners starting with it.
    c.ctl_ok(&["credentials", "suspend", "--prefix", "team-a"], None)
        .unwrap();
    on_every_node_within(
        &c,
        &team_key,
        403,
        "virtual key of a suspended owner prefix",
    )
    .await;
    on_every_node_within(&c, &batch, 403, "JWT of a suspended subject prefix").await;
    for credential in [&alice, &bob, &other_key] {
        on_every_node_within(&c, credential, 200, "outside the prefix").await;
    }
    // A prefix of a virtual key's id (`vk_…`): that key.
    let id_prefix = &other_id[..8];
    c.ctl_ok(&["credentials", "suspend", "--prefix", id_prefix], None)
        .unwrap();
    on_every_node_within(&c, &other_key, 403, "virtual key of a suspended id prefix").await;
    c.ctl_ok(&["credentials", "resume", "--prefix", "team-a"], None)
        .unwrap();
    on_every_node_within(&c, &team_key, 200, "owner prefix resumed").await;
    on_every_node_within(&c, &batch, 200, "subject prefix resumed").await;
    on_every_node_within(&c, &other_key, 403, "id prefix still suspended").await;

    // Audited: each action with its actor and scope; refused requests with the reason.
    let suspends = audit_rows(&c, "credentials.suspend");
    let first = suspends.last().unwrap();
    assert_eq!(first["subject"], "subject:alice");
    assert_eq!(first["result"], "ok");
    assert!(
        first["actor"].as_str().unwrap().starts_with("admin:"),
        "{first}"
    );
    assert_eq!(attrs(first)["reason"], "laptop stolen");
    assert!(
        suspends
            .iter()
            .any(|r| r["subject"] == "subject:alice" && r["result"] == "already_exists")
    );
    assert!(suspends.iter().any(|r| r["subject"] == "prefix:team-a"));
    let resumes = audit_rows(&c, "credentials.resume");
    assert!(
        resumes
            .iter()
            .any(|r| r["subject"] == "subject:alice" && r["result"] == "ok")
    );
    assert!(
        resumes
            .iter()
            .any(|r| r["subject"] == "prefix:team-a" && r["result"] == "ok")
    );
    let refused = refused_requests(&c, "credential_suspended", 1).await;
    assert!(
        refused
            .iter()
            .any(|r| r["actor"] == "jwt:alice" && r["result"] == "failure"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_lockdown_refuses_every_client_and_uses_no_provider_key_until_lifted() {
    let c = TestCluster::start(2).await.unwrap();
    let token = c.issue_token("alice", "*").unwrap();
    let (key, _) = vkey(&c, "k", "team");
    on_every_node_within(&c, &token, 200, "before the lockdown").await;
    on_every_node_within(&c, &key, 200, "before the lockdown").await;

    let out = ctl_json(&c, &["lockdown", "--reason", "incident 42: key leak"]);
    assert_eq!(out["locked_down"], true, "{out}");
    let upstream_before = c.mock.requests().len();
    let body = on_every_node_within(&c, &token, 503, "JWT in lockdown").await;
    assert_eq!(body["error"]["code"], "gateway_locked_down", "{body}");
    assert!(
        !body.to_string().contains("incident 42"),
        "the reason stays private: {body}"
    );
    // The same answer for a virtual key, a made-up credential and no credential at all.
    on_every_node_within(&c, &key, 503, "virtual key in lockdown").await;
    on_every_node_within(
        &c,
        "not-a-credential",
        503,
        "made-up credential in lockdown",
    )
    .await;
    for node in 0..2 {
        let r = c
            .http
            .post(c.nodes[node].url("/v1/chat/completions"))
            .json(&TestCluster::chat_body(MODEL, "hi", true))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        let r = c
            .http
            .get(c.nodes[node].url("/v1/models"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        let r = c
            .http
            .post(c.nodes[node].url("/v1/messages"))
            .header("x-api-key", &key)
            .json(&serde_json::json!({
                "model": MODEL, "max_tokens": 10, "stream": true,
                "messages": [{"role": "user", "content": "hi"}],
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["type"], "error", "{body}");
    }

    // Admin access is kept: credentials are issued (and refused like any other), status
    // shows the lockdown, and both nodes apply the snapshots published meanwhile.
    let before = c.node_version(0).await.unwrap();
    let during = c.issue_token("bob", "*").unwrap();
    let (during_key, _) = vkey(&c, "during", "team");
    on_every_node_within(&c, &during, 503, "token issued during the lockdown").await;
    on_every_node_within(&c, &during_key, 503, "key made during the lockdown").await;
    let status = ctl_json(&c, &["lockdown", "status"]);
    assert_eq!(status["locked_down"], true);
    assert_eq!(status["reason"], "incident 42: key leak");
    assert!(status["created_by"].as_str().unwrap().starts_with("admin:"));
    let (v0, v1) = (c.node_version(0).await, c.node_version(1).await);
    assert!(v0.unwrap() > before, "nodes keep syncing in a lockdown");
    assert_eq!(v0, v1, "both nodes on the newest snapshot");
    assert_eq!(
        c.mock.requests().len(),
        upstream_before,
        "no request reached the provider during the lockdown"
    );
    assert!(
        !c.ctl(&["lockdown"], None).unwrap().status.success(),
        "a second lockdown is refused"
    );

    // Lifted: traffic resumes on both nodes within a second.
    let lifted = ctl_json(&c, &["lockdown", "lift"]);
    assert_eq!(lifted["locked_down"], false);
    on_every_node_within(&c, &token, 200, "after the lift").await;
    on_every_node_within(&c, &key, 200, "after the lift").await;
    on_every_node_within(&c, &during, 200, "after the lift").await;
    assert!(c.mock.requests().len() > upstream_before);
    assert_eq!(ctl_json(&c, &["lockdown", "status"])["locked_down"], false);

    // Audited with actor and reason; refused requests with the reason code.
    let on = &audit_rows(&c, "lockdown.on");
    assert!(on.iter().any(|r| r["result"] == "ok"
        && r["actor"].as_str().unwrap().starts_with("admin:")
        && attrs(r)["reason"] == "incident 42: key leak"));
    assert!(on.iter().any(|r| r["result"] == "already_exists"));
    let lift = &audit_rows(&c, "lockdown.lift")[0];
    assert_eq!(lift["result"], "ok");
    assert!(attrs(lift).contains_key("duration_s"));
    refused_requests(&c, "gateway_locked_down", 4).await;
}

/// The claims of a JWT, decoded (not verified).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// The `kid` of a JWT's header.
fn kid(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let h: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    h["kid"].as_str().unwrap().to_owned()
}

/// A token the store never saw, signed with the signing key `kid` read from the control
/// plane's own secrets (as an attacker holding a leaked signing key would).
async fn forged(c: &TestCluster, kid: &str, like: &str) -> String {
    use secrecy::ExposeSecret as _;
    let private = c.own_secret(&format!("warden/jwt/{kid}")).await.unwrap();
    let key = warden_core::jwt::KeyMaterial::from_stored(
        kid.to_owned(),
        warden_core::jwt::SigningAlgorithm::EdDSA,
        hex::decode(private.expose_secret()).unwrap(),
    )
    .unwrap();
    let mut claims: warden_core::jwt::Claims = serde_json::from_value(claims(like)).unwrap();
    claims.jti = uuid::Uuid::new_v4().to_string();
    claims.sub = "mallory".into();
    key.sign(&claims).unwrap().expose_secret().to_owned()
}

#[tokio::test]
async fn revoke_all_makes_every_existing_client_credential_useless_for_good() {
    let c = TestCluster::start(2).await.unwrap();
    let alice = c.issue_token("alice", "*").unwrap();
    let bob = c.issue_token("bob", "*").unwrap();
    let (key, _) = vkey(&c, "k", "team");
    let old_kid = kid(&alice);
    let leaked = forged(&c, &old_kid, &alice).await;
    for credential in [&alice, &bob, &key, &leaked] {
        on_every_node_within(&c, credential, 200, "before revoke-all").await;
    }

    // Without --yes and no terminal to confirm at: refused, nothing revoked.
    let refused = c.ctl(&["credentials", "revoke-all"], None).unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));
    on_every_node_within(&c, &alice, 200, "after a refused revoke-all").await;

    let out = ctl_json(&c, &["credentials", "revoke-all", "--yes"]);
    assert_eq!(out["tokens_revoked"], 2, "{out}");
    assert_eq!(out["virtual_keys_revoked"], 1, "{out}");
    assert!(out["signing_keys_retired"].as_u64().unwrap() >= 1, "{out}");
    let new_kid = out["new_kid"].as_str().unwrap();
    assert_ne!(new_kid, old_kid);
    for credential in [&alice, &bob, &key] {
        on_every_node_within(&c, credential, 401, "revoked").await;
    }
    // A token the store never saw, signed with the retired key: refused as well.
    on_every_node_within(&c, &leaked, 401, "signed with a retired key").await;

    // Admin and node credentials kept: new credentials are issued and served.
    let carol = c.issue_token("carol", "*").unwrap();
    assert_eq!(kid(&carol), new_kid);
    let (fresh_key, _) = vkey(&c, "fresh", "team");
    on_every_node_within(&c, &carol, 200, "token issued after revoke-all").await;
    on_every_node_within(&c, &fresh_key, 200, "virtual key made after revoke-all").await;
    // Permanently: a later change (a signing-key rotation) does not bring the old key back.
    c.ctl_ok(&["signing-key", "rotate"], None).unwrap();
    on_every_node_within(&c, &alice, 401, "still revoked").await;
    on_every_node_within(&c, &leaked, 401, "still refused").await;
    on_every_node_within(&c, &carol, 200, "signed by the previous signer").await;
    let keys = ctl_json(&c, &["signing-key", "list"]);
    assert!(keys.as_array().unwrap().iter().any(|k| k["kid"] == old_kid));

    let row = &audit_rows(&c, "credentials.revoke_all")[0];
    assert_eq!(row["result"], "ok");
    assert_eq!(row["subject"], "all");
    assert!(
        row["actor"].as_str().unwrap().starts_with("admin:"),
        "{row}"
    );
    let a = attrs(row);
    assert_eq!(a["tokens"], "2");
    assert_eq!(a["virtual_keys"], "1");
    assert_eq!(a["new_kid"], new_kid);
}

fn as_credential<T>(message: T, credential: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    let v: MetadataValue<_> = format!("Bearer {credential}").parse().unwrap();
    r.metadata_mut().insert(warden_proto::AUTHORIZATION, v);
    r
}

#[tokio::test]
async fn incident_response_is_for_the_admin_role_only() {
    let c = TestCluster::start(0).await.unwrap();
    let operator = c
        .ctl_ok(
            &[
                "admin",
                "credential",
                "issue",
                "--name",
                "ops",
                "--role",
                "operator",
            ],
            None,
        )
        .unwrap();
    let mut admin = AdminClient::connect(c.cp_addr()).await.unwrap();
    let suspend = pb::SuspendCredentialsRequest {
        subject: "alice".into(),
        ..Default::default()
    };
    let refused = admin
        .suspend_credentials(as_credential(suspend, &operator))
        .await;
    assert_eq!(refused.unwrap_err().code(), Code::PermissionDenied);
    let lock = pb::LockdownRequest::default();
    let refused = admin.lockdown(as_credential(lock, &operator)).await;
    assert_eq!(refused.unwrap_err().code(), Code::PermissionDenied);
    let all = pb::RevokeAllClientCredentialsRequest { confirm: true };
    let refused = admin
        .revoke_all_client_credentials(as_credential(all, &operator))
        .await;
    assert_eq!(refused.unwrap_err().code(), Code::PermissionDenied);
    // And the Admin API refuses a revoke-all without `confirm`, even from an admin.
    let unconfirmed = pb::RevokeAllClientCredentialsRequest { confirm: false };
    let refused = admin
        .revoke_all_client_credentials(as_credential(unconfirmed, &c.admin_token))
        .await;
    assert_eq!(refused.unwrap_err().code(), Code::InvalidArgument);
    // Each refusal is audited as `auth.admin`, naming the action.
    let denied = audit_rows(&c, "auth.admin");
    for action in [
        "credentials.suspend",
        "lockdown.on",
        "credentials.revoke_all",
    ] {
        assert!(
            denied.iter().any(|r| r.to_string().contains(action)),
            "{action}: {denied:?}"
        );
    }
    assert_eq!(ctl_json(&c, &["lockdown", "status"])["locked_down"], false);
    assert_eq!(
        ctl_json(&c, &["credentials", "suspensions"])["suspensions"],
        serde_json::json!([])
    );
}
