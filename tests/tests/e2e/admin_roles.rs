//! Admin credential roles on a real `warden-cp`: an `operator` credential (`wardenctl admin
//! credential issue --role operator`) is refused provider key add, the audit log (list and
//! `AuditStream.Subscribe`), node credential issue and a token with the `admin` scope
//! (`PermissionDenied`, each refusal audited with its role), and allowed model add and token
//! issue — the token it issued serves through the node. An `auditor` credential reads the
//! audit log and nothing else; a credential issued with `--ttl` stops working when it ends.

use std::time::Duration;

use serde_json::Value;
use tonic::Code;
use tonic::metadata::MetadataValue;
use warden_proto::admin::v1 as pb;
use warden_proto::admin::v1::admin_client::AdminClient;
use warden_proto::audit::v1 as audit_pb;
use warden_proto::audit::v1::audit_stream_client::AuditStreamClient;
use warden_tests::cluster::{MODEL, TestCluster};

fn bearer<T>(message: T, credential: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {credential}").parse().unwrap();
    request
        .metadata_mut()
        .insert(warden_proto::AUTHORIZATION, value);
    request
}

fn issue(c: &TestCluster, name: &str, role: &str, ttl: Option<&str>) -> String {
    let mut args = vec![
        "admin",
        "credential",
        "issue",
        "--name",
        name,
        "--role",
        role,
    ];
    if let Some(ttl) = ttl {
        args.extend_from_slice(&["--ttl", ttl]);
    }
    c.ctl_ok(&args, None).unwrap()
}

fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn an_operator_manages_models_and_tokens_but_not_keys_credentials_or_the_audit_log() {
    let c = TestCluster::start(1).await.unwrap();
    let operator = issue(&c, "ops", "operator", None);
    let auditor = issue(&c, "siem", "auditor", None);
    assert!(operator.starts_with("wa_") && auditor.starts_with("wa_"));
    let channel = tonic::transport::Endpoint::from_shared(c.cp_addr())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin = AdminClient::new(channel.clone());

    // Refused: provider keys, the audit log, node credentials, a privileged token.
    let add_key = pb::AddProviderKeyRequest {
        provider: "mock".into(),
        secret: "sk-operator-should-not".into(),
        reference: String::new(),
    };
    assert_eq!(
        code(admin.add_provider_key(bearer(add_key, &operator)).await),
        Code::PermissionDenied
    );
    let list_audit = || pb::ListAuditRequest {
        limit: 10,
        action: String::new(),
        ..Default::default()
    };
    assert_eq!(
        code(admin.list_audit(bearer(list_audit(), &operator)).await),
        Code::PermissionDenied
    );
    let subscribed = AuditStreamClient::new(channel.clone())
        .subscribe(bearer(
            audit_pb::SubscribeRequest {
                tail: 1,
                ..Default::default()
            },
            &operator,
        ))
        .await;
    assert_eq!(code(subscribed), Code::PermissionDenied);
    let node = pb::IssueNodeCredentialRequest {
        name: "sneaky".into(),
        ..Default::default()
    };
    assert_eq!(
        code(admin.issue_node_credential(bearer(node, &operator)).await),
        Code::PermissionDenied
    );
    let admin_token = pb::IssueTokenRequest {
        subject: "escalate".into(),
        scopes: vec!["admin".into()],
        ..Default::default()
    };
    assert_eq!(
        code(admin.issue_token(bearer(admin_token, &operator)).await),
        Code::PermissionDenied
    );

    // Allowed: a model, and a client token that serves through the node.
    let model = pb::AddModelRequest {
        alias: "ops-model".into(),
        provider: "mock".into(),
        ..Default::default()
    };
    assert_eq!(
        code(admin.add_model(bearer(model, &operator)).await),
        Code::Ok
    );
    let token = admin
        .issue_token(bearer(
            pb::IssueTokenRequest {
                subject: "svc-ops".into(),
                models: vec![MODEL.into()],
                ..Default::default()
            },
            &operator,
        ))
        .await
        .unwrap()
        .into_inner()
        .token;
    let r = c
        .chat(
            0,
            &token,
            &TestCluster::chat_body(MODEL, "by operator", false),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The auditor reads the audit log, and may not add a model.
    assert_eq!(
        code(admin.list_audit(bearer(list_audit(), &auditor)).await),
        Code::Ok
    );
    let model = pb::AddModelRequest {
        alias: "audit-model".into(),
        provider: "mock".into(),
        ..Default::default()
    };
    assert_eq!(
        code(admin.add_model(bearer(model, &auditor)).await),
        Code::PermissionDenied
    );

    // The roles are listed, and every refusal is audited with the role.
    let list: Value = serde_json::from_str(
        &c.ctl_ok(&["admin", "credential", "list", "-o", "json"], None)
            .unwrap(),
    )
    .unwrap();
    let roles: Vec<(&str, &str)> = list["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["role"].as_str().unwrap()))
        .collect();
    assert!(roles.contains(&("ops", "operator")) && roles.contains(&("siem", "auditor")));
    assert!(roles.contains(&("bootstrap", "admin")), "{roles:?}");
    let rows = c
        .ctl_ok(
            &[
                "audit",
                "query",
                "--action",
                "auth.admin",
                "--format",
                "json",
            ],
            None,
        )
        .unwrap();
    let denied: Vec<String> = rows
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["result"] == "denied" && r["detail"].as_str().unwrap().contains("role="))
        .map(|r| r["subject"].as_str().unwrap().to_owned())
        .collect();
    for action in [
        "provider.key.add",
        "audit.list",
        "audit.subscribe",
        "node_credential.create",
        "token.issue",
        "model.add",
    ] {
        assert!(
            denied.iter().any(|d| d == action),
            "{action} not audited: {denied:?}"
        );
    }
    assert!(
        c.find_everywhere("sk-operator-should-not").is_empty(),
        "the refused key was stored or logged"
    );

    // A credential issued for a second works for that second only.
    let brief = issue(&c, "brief", "operator", Some("1s"));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        code(
            admin
                .list_models(bearer(pb::ListModelsRequest::default(), &brief))
                .await
        ),
        Code::Unauthenticated
    );
}
