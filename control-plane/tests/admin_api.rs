//! Pins what every Admin RPC answers and what it leaves behind: its response or its status
//! code and message, how many snapshots it published, and the audit rows it wrote (action,
//! actor, subject, outcome, detail). One table-like script runs every RPC through
//! [`AdminService`] in-process, on success and on its usual failures, and the whole
//! transcript is compared with `tests/fixtures/admin_api.txt`.
//!
//! Random ids, secrets and timestamps are replaced by stable placeholders (`<vk_#1>`,
//! `<time>`) so the transcript is the same on every run. After a deliberate change of an
//! admin response or audit row, regenerate the fixture with
//! `WARDEN_BLESS=1 cargo nextest run -p warden-control-plane --test admin_api` and review
//! the diff.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail by panicking"
)]

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use secrecy::ExposeSecret as _;
use tonic::{Request, Response, Status};
use warden_control_plane::ControlPlane;
use warden_control_plane::config::RawConfig;
use warden_control_plane::domain::CredentialTable;
use warden_control_plane::grpc::admin::AdminService;
use warden_control_plane::secrets::cipher::MasterKey;
use warden_core::credential::{self, Kind};
use warden_proto::admin::v1 as pb;
use warden_proto::admin::v1::admin_server::Admin as _;

const FIXTURE: &str = "tests/fixtures/admin_api.txt";

async fn open_cp(dir: &std::path::Path) -> Arc<ControlPlane> {
    let vars: HashMap<String, String> = [
        (
            "WARDEN_MASTER_KEY".to_owned(),
            MasterKey::generate_base64().to_string(),
        ),
        ("WARDEN_DATA_DIR".to_owned(), dir.display().to_string()),
    ]
    .into();
    let config = RawConfig::from_toml("test.toml", "")
        .unwrap()
        .build_and_validate(&vars)
        .unwrap();
    warden_control_plane::open(&config).await.unwrap()
}

/// Replaces what differs between runs with placeholders numbered by first appearance:
/// generated ids, UUIDs, fingerprints, credentials, JWTs, timestamps.
#[derive(Default)]
struct Normaliser {
    seen: HashMap<String, String>,
    counts: HashMap<&'static str, usize>,
}

impl Normaliser {
    fn kind(word: &str) -> Option<&'static str> {
        let hex = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit());
        for prefix in ["vk_", "key_", "adm_", "node_", "k"] {
            if let Some(rest) = word.strip_prefix(prefix)
                && rest.len() == 16
                && hex(rest)
            {
                return Some(prefix);
            }
        }
        if word.len() == 36
            && word.char_indices().all(|(i, c)| {
                if [8, 13, 18, 23].contains(&i) {
                    c == '-'
                } else {
                    c.is_ascii_hexdigit()
                }
            })
        {
            return Some("uuid");
        }
        if word.starts_with("eyJ") && word.len() > 40 {
            return Some("jwt");
        }
        for prefix in ["wa_", "wn_", "wk_"] {
            if word.starts_with(prefix) && word.len() > 20 {
                return Some(prefix);
            }
        }
        // A fingerprint (12 hex characters), or an id inside a secret's name (16).
        if hex(word) && word.chars().any(|c| c.is_ascii_lowercase()) {
            match word.len() {
                12 => return Some("fp"),
                16 => return Some("hex"),
                _ => {}
            }
        }
        None
    }

    fn word(&mut self, word: &str) -> String {
        if word.len() >= 10 && word.chars().all(|c| c.is_ascii_digit()) {
            return "<time>".to_owned();
        }
        let Some(kind) = Self::kind(word) else {
            if word.contains('-') {
                return word
                    .split('-')
                    .map(|w| self.word(w))
                    .collect::<Vec<_>>()
                    .join("-");
            }
            return word.to_owned();
        };
        if let Some(p) = self.seen.get(word) {
            return p.clone();
        }
        let n = self.counts.entry(kind).or_default();
        *n += 1;
        let placeholder = format!("<{kind}#{n}>");
        self.seen.insert(word.to_owned(), placeholder.clone());
        placeholder
    }

    fn text(&mut self, text: &str) -> String {
        let mut out = String::new();
        let mut word = String::new();
        for c in text.chars() {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                word.push(c);
            } else {
                out.push_str(&self.word_or_jwt(&word));
                word.clear();
                out.push(c);
            }
        }
        out.push_str(&self.word_or_jwt(&word));
        out
    }

    /// A JWT is three dot-joined parts; other dotted words are judged without the dots.
    fn word_or_jwt(&mut self, word: &str) -> String {
        if word.starts_with("eyJ") {
            return self.word(word);
        }
        word.split('.')
            .map(|w| self.word(w))
            .collect::<Vec<_>>()
            .join(".")
    }
}

struct Script {
    cp: Arc<ControlPlane>,
    admin: AdminService,
    credential: String,
    log: String,
}

impl Script {
    fn request<T>(&self, message: T) -> Request<T> {
        Self::with_credential(message, &self.credential)
    }

    fn with_credential<T>(message: T, credential: &str) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {credential}").parse().unwrap(),
        );
        request
    }

    /// Runs one RPC and writes its outcome and the number of snapshots it published.
    async fn step<T: Debug>(
        &mut self,
        name: &str,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Option<T> {
        let before = self.cp.current_version();
        let result = call.await;
        let published = self.cp.current_version() - before;
        let (line, value) = match result {
            Ok(r) => {
                let r = r.into_inner();
                (format!("ok {r:?}"), Some(r))
            }
            Err(s) => (format!("{:?} {:?}", s.code(), s.message()), None),
        };
        self.log
            .push_str(&format!("{name} [published {published}]: {line}\n"));
        value
    }

    /// Checks a node credential as the Sync API does and writes the outcome.
    async fn auth_node(&mut self, name: &str, presented: Option<&str>) {
        let line = match self
            .cp
            .authenticate_node(None, Default::default(), presented, "edge-1")
            .await
        {
            Ok(record) => format!("ok {} {}", record.id, record.name),
            Err(e) => format!("{:?} {e}", e.code()),
        };
        self.log
            .push_str(&format!("authenticate_node {name}: {line}\n"));
    }
}

fn target_vkey(id: &str) -> Option<pb::PolicyTarget> {
    Some(pb::PolicyTarget {
        target: Some(pb::policy_target::Target::VirtualKey(id.to_owned())),
    })
}

#[tokio::test]
async fn every_admin_rpc_answers_publishes_and_audits_as_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let cp = open_cp(dir.path()).await;
    let credential = cp.bootstrap_admin().await.unwrap().unwrap();
    let mut s = Script {
        admin: AdminService::new(Arc::clone(&cp)),
        cp: Arc::clone(&cp),
        credential: credential.expose_secret().to_owned(),
        log: String::new(),
    };
    let admin = s.admin.clone();

    // ---- authentication
    s.step(
        "list_providers without a credential",
        admin.list_providers(Request::new(pb::ListProvidersRequest::default())),
    )
    .await;
    s.step(
        "list_providers with an unknown credential",
        admin.list_providers(Script::with_credential(
            pb::ListProvidersRequest::default(),
            "wa_notacredentialatall",
        )),
    )
    .await;

    // ---- providers
    let provider = |name: &str, format: pb::ApiFormat| pb::AddProviderRequest {
        name: name.into(),
        format: format as i32,
        base_url: "http://127.0.0.1:9/v1/".into(),
        passthrough: false,
        drop_params: vec!["seed".into()],
        ca_pem: String::new(),
    };
    s.step(
        "add_provider",
        admin.add_provider(s.request(provider("p", pb::ApiFormat::Openai))),
    )
    .await;
    s.step(
        "add_provider anthropic",
        admin.add_provider(s.request(provider("q", pb::ApiFormat::Anthropic))),
    )
    .await;
    s.step(
        "add_provider echo format",
        admin.add_provider(s.request(provider("e", pb::ApiFormat::Echo))),
    )
    .await;
    s.step(
        "add_provider bad name",
        admin.add_provider(s.request(provider("bad name", pb::ApiFormat::Openai))),
    )
    .await;
    s.step(
        "add_provider bad drop_params",
        admin.add_provider(s.request(pb::AddProviderRequest {
            drop_params: vec!["model".into()],
            ..provider("p", pb::ApiFormat::Openai)
        })),
    )
    .await;
    s.step(
        "add_provider ca_pem not PEM",
        admin.add_provider(s.request(pb::AddProviderRequest {
            base_url: "https://127.0.0.1:9/v1".into(),
            ca_pem: "not a certificate".into(),
            ..provider("p", pb::ApiFormat::Openai)
        })),
    )
    .await;
    s.step(
        "add_provider bad base_url",
        admin.add_provider(s.request(pb::AddProviderRequest {
            base_url: "ftp://x".into(),
            ..provider("p", pb::ApiFormat::Openai)
        })),
    )
    .await;

    // ---- provider keys
    let add_key = |provider: &str, secret: &str, reference: &str| pb::AddProviderKeyRequest {
        provider: provider.into(),
        secret: secret.into(),
        reference: reference.into(),
    };
    let key = s
        .step(
            "add_provider_key",
            admin.add_provider_key(s.request(add_key("p", "sk-test-one", ""))),
        )
        .await
        .unwrap();
    s.step(
        "add_provider_key duplicate",
        admin.add_provider_key(s.request(add_key("p", "sk-test-one", ""))),
    )
    .await;
    s.step(
        "add_provider_key both secret and reference",
        admin.add_provider_key(s.request(add_key("p", "sk-x", "env://X"))),
    )
    .await;
    s.step(
        "add_provider_key unknown provider",
        admin.add_provider_key(s.request(add_key("nope", "sk-x", ""))),
    )
    .await;
    s.step(
        "add_provider_key empty value",
        admin.add_provider_key(s.request(add_key("p", "   ", ""))),
    )
    .await;
    s.step(
        "add_provider_key bad reference",
        admin.add_provider_key(s.request(add_key("p", "", "nope://x"))),
    )
    .await;
    s.step(
        "add_provider passthrough with stored keys",
        admin.add_provider(s.request(pb::AddProviderRequest {
            passthrough: true,
            ..provider("p", pb::ApiFormat::Openai)
        })),
    )
    .await;
    let rotate = |key_id: &str, secret: &str| pb::RotateProviderKeyRequest {
        provider: "p".into(),
        key_id: key_id.into(),
        secret: secret.into(),
    };
    s.step(
        "rotate_provider_key same value",
        admin.rotate_provider_key(s.request(rotate(&key.id, "sk-test-one"))),
    )
    .await;
    s.step(
        "rotate_provider_key",
        admin.rotate_provider_key(s.request(rotate(&key.id, "sk-test-two"))),
    )
    .await;
    s.step(
        "rotate_provider_key unknown key",
        admin.rotate_provider_key(s.request(rotate("key_0000000000000000", "sk-test-three"))),
    )
    .await;
    let key_state = |key_id: &str, action: i32, reason: &str| pb::SetProviderKeyStateRequest {
        provider: "p".into(),
        key_id: key_id.into(),
        action,
        reason: reason.into(),
    };
    let quarantine = pb::set_provider_key_state_request::Action::Quarantine as i32;
    let enable = pb::set_provider_key_state_request::Action::Enable as i32;
    s.step(
        "set_provider_key_state quarantine",
        admin.set_provider_key_state(s.request(key_state(&key.id, quarantine, "leaked"))),
    )
    .await;
    s.step(
        "set_provider_key_state enable",
        admin.set_provider_key_state(s.request(key_state(&key.id, enable, ""))),
    )
    .await;
    s.step(
        "set_provider_key_state bad action",
        admin.set_provider_key_state(s.request(key_state(&key.id, 0, ""))),
    )
    .await;
    s.step(
        "set_provider_key_state unknown key",
        admin.set_provider_key_state(s.request(key_state("key_0000000000000000", quarantine, ""))),
    )
    .await;
    s.step(
        "set_provider_key_state long reason",
        admin.set_provider_key_state(s.request(key_state(&key.id, quarantine, &"x".repeat(201)))),
    )
    .await;
    let second = s
        .step(
            "add_provider_key second",
            admin.add_provider_key(s.request(add_key("q", "sk-test-q", ""))),
        )
        .await
        .unwrap();
    s.step(
        "list_providers",
        admin.list_providers(s.request(pb::ListProvidersRequest::default())),
    )
    .await;
    s.step(
        "remove_provider_key",
        admin.remove_provider_key(s.request(pb::RemoveProviderKeyRequest {
            provider: "q".into(),
            key_id: second.id.clone(),
        })),
    )
    .await;
    s.step(
        "remove_provider_key again",
        admin.remove_provider_key(s.request(pb::RemoveProviderKeyRequest {
            provider: "q".into(),
            key_id: second.id.clone(),
        })),
    )
    .await;

    // ---- models and deployments
    let model = |alias: &str, provider: &str, fallbacks: &[&str]| pb::AddModelRequest {
        alias: alias.into(),
        provider: provider.into(),
        upstream_model: format!("up-{alias}"),
        fallbacks: fallbacks.iter().map(|f| (*f).to_owned()).collect(),
        input_price_per_mtok: 1.5,
        output_price_per_mtok: 2.0,
        weight: 0,
    };
    s.step(
        "add_model",
        admin.add_model(s.request(model("m1", "p", &[]))),
    )
    .await;
    s.step(
        "add_model with fallback",
        admin.add_model(s.request(model("m2", "q", &["m1"]))),
    )
    .await;
    s.step(
        "add_model falls back to itself",
        admin.add_model(s.request(model("m3", "p", &["m3"]))),
    )
    .await;
    s.step(
        "add_model unknown fallback",
        admin.add_model(s.request(model("m3", "p", &["nope"]))),
    )
    .await;
    s.step(
        "add_model unknown provider",
        admin.add_model(s.request(model("m3", "nope", &[]))),
    )
    .await;
    s.step(
        "add_model negative price",
        admin.add_model(s.request(pb::AddModelRequest {
            input_price_per_mtok: -1.0,
            ..model("m3", "p", &[])
        })),
    )
    .await;
    let deployment = |provider: &str, weight: u32| pb::AddDeploymentRequest {
        alias: "m1".into(),
        provider: provider.into(),
        upstream_model: "up-other".into(),
        weight,
    };
    s.step(
        "add_deployment",
        admin.add_deployment(s.request(deployment("q", 3))),
    )
    .await;
    s.step(
        "add_deployment reweights the first",
        admin.add_deployment(s.request(pb::AddDeploymentRequest {
            upstream_model: "up-m1".into(),
            ..deployment("p", 2)
        })),
    )
    .await;
    s.step(
        "add_deployment weight too high",
        admin.add_deployment(s.request(deployment("q", 1001))),
    )
    .await;
    s.step(
        "add_deployment unknown model",
        admin.add_deployment(s.request(pb::AddDeploymentRequest {
            alias: "nope".into(),
            ..deployment("q", 1)
        })),
    )
    .await;
    s.step(
        "list_models",
        admin.list_models(s.request(pb::ListModelsRequest::default())),
    )
    .await;
    let remove_deployment = pb::RemoveDeploymentRequest {
        alias: "m1".into(),
        provider: "q".into(),
        upstream_model: "up-other".into(),
    };
    s.step(
        "remove_deployment",
        admin.remove_deployment(s.request(remove_deployment.clone())),
    )
    .await;
    s.step(
        "remove_deployment again",
        admin.remove_deployment(s.request(remove_deployment)),
    )
    .await;

    // ---- tokens
    let token = |subject: &str, scopes: &[&str], ttl: u64| pb::IssueTokenRequest {
        subject: subject.into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        models: vec!["m1".into(), "p:*".into()],
        ttl_seconds: ttl,
        policy: None,
    };
    let issued = s
        .step(
            "issue_token",
            admin.issue_token(s.request(token("alice", &[], 3600))),
        )
        .await
        .unwrap();
    let reader = s
        .step(
            "issue_token with a policy",
            admin.issue_token(s.request(pb::IssueTokenRequest {
                policy: Some(pb::Policy {
                    rpm: 10,
                    max_budget_usd: 5.0,
                    ..Default::default()
                }),
                ..token("bob", &["read"], 0)
            })),
        )
        .await
        .unwrap();
    s.step(
        "issue_token unknown scope",
        admin.issue_token(s.request(token("carol", &["root"], 60))),
    )
    .await;
    s.step(
        "issue_token ttl too long",
        admin.issue_token(s.request(token("carol", &[], 10_000_000_000))),
    )
    .await;
    s.step(
        "issue_token empty subject",
        admin.issue_token(s.request(token(" ", &[], 60))),
    )
    .await;
    s.step(
        "issue_token negative budget",
        admin.issue_token(s.request(pb::IssueTokenRequest {
            policy: Some(pb::Policy {
                max_budget_usd: -1.0,
                ..Default::default()
            }),
            ..token("carol", &[], 60)
        })),
    )
    .await;
    let request = s.request(pb::ListTokensRequest::default());
    s.step(
        "list_tokens",
        // Sorted here: the store's order of rows created in the same second is not pinned.
        async {
            let r = admin.list_tokens(request).await;
            r.map(|r| {
                r.map(|mut l| {
                    l.tokens.sort_by(|a, b| a.subject.cmp(&b.subject));
                    l
                })
            })
        },
    )
    .await;
    s.step(
        "revoke_token",
        admin.revoke_token(s.request(pb::RevokeTokenRequest {
            jti: issued.jti.clone(),
        })),
    )
    .await;
    s.step(
        "revoke_token again",
        admin.revoke_token(s.request(pb::RevokeTokenRequest {
            jti: issued.jti.clone(),
        })),
    )
    .await;
    s.step(
        "revoke_token unknown",
        admin.revoke_token(s.request(pb::RevokeTokenRequest { jti: "nope".into() })),
    )
    .await;
    s.step(
        "list_audit with a token without the audit scope",
        admin.list_audit(Script::with_credential(
            pb::ListAuditRequest::default(),
            &reader.token,
        )),
    )
    .await;
    s.step(
        "list_providers with a token without the admin scope",
        admin.list_providers(Script::with_credential(
            pb::ListProvidersRequest::default(),
            &reader.token,
        )),
    )
    .await;
    s.step(
        "list_providers with a revoked token",
        admin.list_providers(Script::with_credential(
            pb::ListProvidersRequest::default(),
            &issued.token,
        )),
    )
    .await;

    // ---- virtual keys
    let vkey = |name: &str| pb::CreateVirtualKeyRequest {
        name: name.into(),
        owner: "team-a".into(),
        models: vec![],
        scopes: vec!["read".into(), "read".into()],
        ttl_seconds: 0,
        policy: None,
        ..Default::default()
    };
    let vk1 = s
        .step(
            "create_virtual_key",
            admin.create_virtual_key(s.request(vkey("one"))),
        )
        .await
        .unwrap();
    let vk1 = vk1.info.unwrap();
    s.step(
        "create_virtual_key with a policy and a ttl",
        admin.create_virtual_key(s.request(pb::CreateVirtualKeyRequest {
            ttl_seconds: 86_400,
            policy: Some(pb::Policy {
                tpm: 1000,
                max_parallel: 2,
                ..Default::default()
            }),
            ..vkey("two")
        })),
    )
    .await;
    s.step(
        "create_virtual_key bad name",
        admin.create_virtual_key(s.request(vkey(""))),
    )
    .await;
    s.step(
        "create_virtual_key bad model",
        admin.create_virtual_key(s.request(pb::CreateVirtualKeyRequest {
            models: vec!["a b".into()],
            ..vkey("three")
        })),
    )
    .await;
    let request = s.request(pb::ListVirtualKeysRequest::default());
    s.step("list_virtual_keys", async {
        let r = admin.list_virtual_keys(request).await;
        r.map(|r| {
            r.map(|mut l| {
                l.keys.sort_by(|a, b| a.name.cmp(&b.name));
                l
            })
        })
    })
    .await;
    s.step(
        "rotate_virtual_key",
        admin.rotate_virtual_key(s.request(pb::RotateVirtualKeyRequest {
            id: vk1.id.clone(),
            grace_seconds: 600,
        })),
    )
    .await;
    s.step(
        "rotate_virtual_key grace too long",
        admin.rotate_virtual_key(s.request(pb::RotateVirtualKeyRequest {
            id: vk1.id.clone(),
            grace_seconds: 31 * 86_400,
        })),
    )
    .await;
    s.step(
        "rotate_virtual_key unknown",
        admin.rotate_virtual_key(s.request(pb::RotateVirtualKeyRequest {
            id: "vk_0000000000000000".into(),
            grace_seconds: 0,
        })),
    )
    .await;

    // ---- policies
    let set_policy = |target: Option<pb::PolicyTarget>, policy: pb::Policy| pb::SetPolicyRequest {
        target,
        policy: Some(policy),
        access: None,
    };
    s.step(
        "set_policy",
        admin.set_policy(s.request(set_policy(
            target_vkey(&vk1.id),
            pb::Policy {
                rpm: 60,
                max_budget_usd: 1.25,
                budget_period_seconds: 3600,
                max_tokens: 512,
                ..Default::default()
            },
        ))),
    )
    .await;
    s.step(
        "set_policy short period",
        admin.set_policy(s.request(set_policy(
            target_vkey(&vk1.id),
            pb::Policy {
                max_budget_usd: 1.0,
                budget_period_seconds: 30,
                ..Default::default()
            },
        ))),
    )
    .await;
    s.step(
        "set_policy unknown virtual key",
        admin.set_policy(s.request(set_policy(
            target_vkey("vk_0000000000000000"),
            pb::Policy::default(),
        ))),
    )
    .await;
    s.step(
        "set_policy unknown model",
        admin.set_policy(s.request(set_policy(
            Some(pb::PolicyTarget {
                target: Some(pb::policy_target::Target::Model("nope".into())),
            }),
            pb::Policy::default(),
        ))),
    )
    .await;
    s.step(
        "set_policy global",
        admin.set_policy(s.request(set_policy(
            Some(pb::PolicyTarget {
                target: Some(pb::policy_target::Target::Global(true)),
            }),
            pb::Policy {
                max_parallel: 100,
                ..Default::default()
            },
        ))),
    )
    .await;
    let global = || {
        Some(pb::PolicyTarget {
            target: Some(pb::policy_target::Target::Global(true)),
        })
    };
    s.step(
        "set_policy access only (CORS and an IP allow-list)",
        admin.set_policy(s.request(pb::SetPolicyRequest {
            target: global(),
            policy: None,
            access: Some(pb::AccessPolicy {
                allowed_ips: vec!["10.1.2.3/8".into(), "::1".into()],
                allowed_origins: vec!["HTTPS://App.Example".into()],
                cors_max_age_seconds: 600,
                ..Default::default()
            }),
        })),
    )
    .await;
    s.step(
        "set_policy access wildcard origin with credentials",
        admin.set_policy(s.request(pb::SetPolicyRequest {
            target: global(),
            policy: None,
            access: Some(pb::AccessPolicy {
                allowed_origins: vec!["*".into()],
                cors_allow_credentials: true,
                ..Default::default()
            }),
        })),
    )
    .await;
    s.step(
        "set_policy access bad cidr",
        admin.set_policy(s.request(pb::SetPolicyRequest {
            target: target_vkey(&vk1.id),
            policy: None,
            access: Some(pb::AccessPolicy {
                allowed_ips: vec!["10.0.0.0/33".into()],
                ..Default::default()
            }),
        })),
    )
    .await;
    s.step(
        "create_virtual_key with access lists",
        admin.create_virtual_key(s.request(pb::CreateVirtualKeyRequest {
            allowed_ips: vec!["192.0.2.0/24".into()],
            allowed_origins: vec!["https://app.example".into()],
            ..vkey("four")
        })),
    )
    .await;
    s.step(
        "set_policy without a target",
        admin.set_policy(s.request(set_policy(None, pb::Policy::default()))),
    )
    .await;
    s.step(
        "get_policy",
        admin.get_policy(s.request(pb::GetPolicyRequest {
            target: target_vkey(&vk1.id),
        })),
    )
    .await;
    s.step(
        "get_policy of a subject without one",
        admin.get_policy(s.request(pb::GetPolicyRequest {
            target: Some(pb::PolicyTarget {
                target: Some(pb::policy_target::Target::Subject("zed".into())),
            }),
        })),
    )
    .await;
    s.step(
        "revoke_virtual_key",
        admin.revoke_virtual_key(s.request(pb::RevokeVirtualKeyRequest { id: vk1.id.clone() })),
    )
    .await;
    s.step(
        "revoke_virtual_key again",
        admin.revoke_virtual_key(s.request(pb::RevokeVirtualKeyRequest { id: vk1.id.clone() })),
    )
    .await;

    // ---- signing keys, nodes
    s.step(
        "rotate_signing_key",
        admin.rotate_signing_key(s.request(pb::RotateSigningKeyRequest {})),
    )
    .await;
    let request = s.request(pb::ListSigningKeysRequest::default());
    s.step("list_signing_keys", async {
        let r = admin.list_signing_keys(request).await;
        r.map(|r| {
            r.map(|mut l| {
                l.keys.sort_by_key(|k| k.active);
                l
            })
        })
    })
    .await;
    let node = s
        .step(
            "issue_node_credential",
            admin.issue_node_credential(s.request(pb::IssueNodeCredentialRequest {
                name: "edge-1".into(),
                ..Default::default()
            })),
        )
        .await
        .unwrap();
    s.step(
        "issue_node_credential default name",
        admin.issue_node_credential(s.request(pb::IssueNodeCredentialRequest {
            name: String::new(),
            ..Default::default()
        })),
    )
    .await;
    s.step(
        "issue_node_credential bad name",
        admin.issue_node_credential(s.request(pb::IssueNodeCredentialRequest {
            name: "bad name".into(),
            ..Default::default()
        })),
    )
    .await;
    s.step(
        "list_nodes",
        admin.list_nodes(s.request(pb::ListNodesRequest::default())),
    )
    .await;
    s.step(
        "list_replicas",
        admin.list_replicas(s.request(pb::ListReplicasRequest {})),
    )
    .await;
    let request = s.request(pb::ListCredentialsRequest::default());
    s.step("list_node_credentials", async {
        let r = admin.list_node_credentials(request).await;
        r.map(|r| {
            r.map(|mut l| {
                l.credentials.sort_by(|a, b| a.name.cmp(&b.name));
                l
            })
        })
    })
    .await;
    s.step(
        "revoke_node_credential without id or name",
        admin.revoke_node_credential(s.request(pb::RevokeCredentialRequest::default())),
    )
    .await;
    s.step(
        "revoke_node_credential unknown id",
        admin.revoke_node_credential(s.request(pb::RevokeCredentialRequest {
            id: "node_unknown".into(),
            name: String::new(),
        })),
    )
    .await;
    s.step(
        "revoke_node_credential by name",
        admin.revoke_node_credential(s.request(pb::RevokeCredentialRequest {
            id: String::new(),
            name: "node".into(),
        })),
    )
    .await;
    let operator = s
        .step(
            "issue_admin_credential operator",
            admin.issue_admin_credential(s.request(pb::IssueAdminCredentialRequest {
                name: "ops".into(),
                role: "operator".into(),
                ttl_seconds: 3600,
                ..Default::default()
            })),
        )
        .await
        .unwrap();
    s.step(
        "issue_admin_credential bad role",
        admin.issue_admin_credential(s.request(pb::IssueAdminCredentialRequest {
            name: "ops".into(),
            role: "root".into(),
            ttl_seconds: 0,
            ..Default::default()
        })),
    )
    .await;
    s.step(
        "list_providers as operator",
        admin.list_providers(Script::with_credential(
            pb::ListProvidersRequest::default(),
            &operator.credential,
        )),
    )
    .await;
    s.step(
        "list_models as operator",
        admin.list_models(Script::with_credential(
            pb::ListModelsRequest::default(),
            &operator.credential,
        )),
    )
    .await;
    let request = s.request(pb::ListCredentialsRequest::default());
    s.step("list_admin_credentials", async {
        let r = admin.list_admin_credentials(request).await;
        r.map(|r| {
            r.map(|mut l| {
                l.credentials.sort_by(|a, b| a.name.cmp(&b.name));
                l
            })
        })
    })
    .await;
    s.step(
        "revoke_admin_credential unknown id",
        admin.revoke_admin_credential(s.request(pb::RevokeCredentialRequest {
            id: "adm_unknown".into(),
            name: String::new(),
        })),
    )
    .await;

    // ---- node authentication (the Sync API's check) and credential replacement
    let unknown = credential::generate(Kind::Node);
    let cases = [
        ("without a credential", None),
        ("malformed", Some("wn_short")),
        ("unknown", Some(unknown.expose_secret())),
        ("valid", Some(node.credential.as_str())),
    ];
    for (name, presented) in cases {
        s.auth_node(name, presented).await;
    }
    cp.replace_credential(CredentialTable::Node, "edge-1")
        .await
        .unwrap();
    s.auth_node("replaced", Some(&node.credential)).await;

    // ---- removal
    s.step(
        "remove_model",
        admin.remove_model(s.request(pb::RemoveModelRequest { alias: "m2".into() })),
    )
    .await;
    s.step(
        "remove_model again",
        admin.remove_model(s.request(pb::RemoveModelRequest { alias: "m2".into() })),
    )
    .await;
    s.step(
        "remove_provider",
        admin.remove_provider(s.request(pb::RemoveProviderRequest { name: "p".into() })),
    )
    .await;
    s.step(
        "remove_provider again",
        admin.remove_provider(s.request(pb::RemoveProviderRequest { name: "p".into() })),
    )
    .await;

    // ---- address blocks (no Redis on this control plane: automatic blocks unavailable)
    s.step(
        "block_ip",
        admin.block_ip(s.request(pb::BlockIpRequest {
            network: "203.0.113.9/24".into(),
            duration_seconds: 0,
            reason: "incident 7".into(),
        })),
    )
    .await;
    s.step(
        "block_ip of something that is no address",
        admin.block_ip(s.request(pb::BlockIpRequest {
            network: "example.com".into(),
            duration_seconds: 0,
            reason: String::new(),
        })),
    )
    .await;
    s.step(
        "list_ip_blocks",
        admin.list_ip_blocks(s.request(pb::ListIpBlocksRequest::default())),
    )
    .await;
    s.step(
        "unblock_ip",
        admin.unblock_ip(s.request(pb::UnblockIpRequest {
            network: "203.0.113.0/24".into(),
        })),
    )
    .await;
    s.step(
        "unblock_ip again",
        admin.unblock_ip(s.request(pb::UnblockIpRequest {
            network: "203.0.113.0/24".into(),
        })),
    )
    .await;

    // ---- the audit log
    s.step(
        "verify_audit",
        admin.verify_audit(s.request(pb::VerifyAuditRequest { from_seq: 0 })),
    )
    .await;
    s.step(
        "list_audit of one action",
        admin.list_audit(s.request(pb::ListAuditRequest {
            limit: 0,
            action: "token.revoke".into(),
            ..Default::default()
        })),
    )
    .await;
    s.step(
        "list_audit of one action, one per page",
        admin.list_audit(s.request(pb::ListAuditRequest {
            limit: 2,
            action: "token.revoke".into(),
            page_size: 1,
            ..Default::default()
        })),
    )
    .await;
    s.step(
        "list_audit malformed page_token",
        admin.list_audit(s.request(pb::ListAuditRequest {
            page_token: "bm90LWEtdG9rZW4".into(),
            ..Default::default()
        })),
    )
    .await;

    // A replaced admin credential no longer authenticates.
    cp.replace_credential(CredentialTable::Admin, "bootstrap")
        .await
        .unwrap();
    s.step(
        "list_providers with a replaced admin credential",
        admin.list_providers(s.request(pb::ListProvidersRequest::default())),
    )
    .await;

    // Every audit row, oldest first.
    s.log.push_str("\naudit rows:\n");
    for row in cp.audit_range(0, 1000).await.unwrap() {
        let r = row.record;
        s.log.push_str(&format!(
            "{} | {} | {} | {} | {}\n",
            r.action, r.actor, r.subject, r.result, r.detail
        ));
    }

    let actual = Normaliser::default().text(&s.log);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    if std::env::var_os("WARDEN_BLESS").is_some() {
        std::fs::write(&path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if actual != expected {
        let diff: Vec<String> = actual
            .lines()
            .zip(expected.lines().chain(std::iter::repeat("<missing>")))
            .filter(|(a, e)| a != e)
            .take(10)
            .map(|(a, e)| format!("  expected: {e}\n  actual:   {a}"))
            .collect();
        panic!(
            "the admin transcript differs from {FIXTURE} (first differences below; rerun with WARDEN_BLESS=1 to regenerate after a deliberate change):\n{}\n(actual has {} lines, expected {})",
            diff.join("\n"),
            actual.lines().count(),
            expected.lines().count()
        );
    }
}
