//! The wire form of a snapshot (`warden.sync.v1.Snapshot`) without its secrets: the same
//! for every node, made once per version; [`super::delivery`] seals the secrets per node.

use secrecy::ExposeSecret as _;
use warden_core::jwt::SigningAlgorithm;
use warden_core::seal::NodePublicKey;
use warden_proto::sync::v1 as pb;

use crate::domain::{ApiFormat, SuspensionTarget};
use crate::snapshot::SnapshotData;

fn policy(l: &crate::domain::Limits) -> pb::Policy {
    pb::Policy {
        rpm: l.rpm,
        tpm: l.tpm,
        max_parallel: l.max_parallel,
        max_budget_micros: l.max_budget_micros,
        budget_period_seconds: l.budget_period_secs,
        max_tokens: l.max_tokens,
    }
}

/// The node a snapshot is converted for: its secrets are sealed to `key`, bound to
/// `node_id`.
#[derive(Debug, Clone, Copy)]
pub struct Recipient<'a> {
    pub node_id: &'a str,
    pub key: &'a NodePublicKey,
}

/// A snapshot's wire form with no secret in it: every `sealed_*` field is absent (they are
/// filled per node by `grpc::delivery::seal`). The same for every node, so it is made
/// once per version.
pub fn unsealed(s: &SnapshotData) -> pb::Snapshot {
    let format = |f: ApiFormat| match f {
        ApiFormat::OpenAi => pb::ApiFormat::Openai as i32,
        ApiFormat::Anthropic => pb::ApiFormat::Anthropic as i32,
        ApiFormat::Echo => pb::ApiFormat::Echo as i32,
    };
    let mut providers = Vec::with_capacity(s.providers.len());
    for p in &s.providers {
        let mut keys = Vec::with_capacity(p.keys.len());
        for k in &p.keys {
            keys.push(pb::UpstreamKey {
                id: k.id.clone(),
                fingerprint: k.fingerprint.clone(),
                sealed_secret: None,
                disabled_reason: k.disabled_reason.clone(),
                health_epoch: k.health_epoch,
            });
        }
        providers.push(pb::Provider {
            name: p.name.clone(),
            format: format(p.format),
            base_url: p.base_url.clone(),
            passthrough: p.passthrough,
            drop_params: p.drop_params.clone(),
            ca_pem: p.ca_pem.clone().unwrap_or_default(),
            keys,
        });
    }
    let mut jwt_keys = Vec::with_capacity(s.jwt_keys.len());
    for k in &s.jwt_keys {
        // An EdDSA key is a public key and travels as it is; anything else is a shared
        // secret (HS256), sealed per node.
        let key = match SigningAlgorithm::parse(&k.algorithm) {
            Some(SigningAlgorithm::EdDSA) => k.key.expose_secret().clone(),
            _ => Vec::new(),
        };
        jwt_keys.push(pb::JwtVerificationKey {
            kid: k.kid.clone(),
            algorithm: k.algorithm.clone(),
            key,
            sealed_key: None,
        });
    }
    pb::Snapshot {
        version: s.version,
        content_hash: String::new(),
        providers,
        models: s
            .models
            .iter()
            .map(|m| pb::Model {
                alias: m.alias.clone(),
                provider: m.provider.clone(),
                upstream_model: m.upstream_model.clone(),
                weight: m.weight,
                deployments: m
                    .deployments
                    .iter()
                    .map(|(provider, upstream_model, weight)| pb::Deployment {
                        provider: provider.clone(),
                        upstream_model: upstream_model.clone(),
                        weight: *weight,
                    })
                    .collect(),
                fallbacks: m.fallbacks.clone(),
                policy: Some(policy(&m.policy)),
                price: Some(pb::Price {
                    input_per_mtok: m.price.input_per_mtok,
                    output_per_mtok: m.price.output_per_mtok,
                }),
            })
            .collect(),
        jwt: Some(pb::JwtSettings {
            issuer: s.jwt_issuer.clone(),
            audience: s.jwt_audience.clone(),
            keys: jwt_keys,
            leeway_seconds: s.jwt_leeway_seconds,
        }),
        virtual_keys: s
            .virtual_keys
            .iter()
            .map(|k| pb::VirtualKey {
                id: k.id.clone(),
                hash: k.hash.clone(),
                name: k.name.clone(),
                owner: k.owner.clone(),
                models: k.models.clone(),
                scopes: k.scopes.clone(),
                expires_at: k.expires_at,
                policy: Some(policy(&k.policy)),
                previous_hash: k.previous.as_ref().map(|p| p.0.clone()).unwrap_or_default(),
                previous_expires_at: k.previous.as_ref().map_or(0, |p| p.1),
                allowed_ips: k.access.allowed_ips.clone(),
                allowed_origins: k.access.allowed_origins.clone(),
            })
            .collect(),
        revoked_tokens: s
            .revoked_tokens
            .iter()
            .map(|(jti, exp)| pb::RevokedToken {
                jti: jti.clone(),
                expires_at: *exp,
            })
            .collect(),
        sealed_vkey_pepper: None,
        global_policy: Some(policy(&s.global_policy)),
        subject_policies: s
            .subject_policies
            .iter()
            .map(|s| pb::SubjectPolicy {
                subject: s.subject.clone(),
                policy: s.limits.as_ref().map(policy),
                allowed_ips: s.access.allowed_ips.clone(),
                allowed_origins: s.access.allowed_origins.clone(),
            })
            .collect(),
        lockdown: s.lockdown,
        suspensions: s
            .suspensions
            .iter()
            .map(|t| match t {
                SuspensionTarget::Subject(v) => pb::Suspension {
                    subject: v.clone(),
                    prefix: String::new(),
                },
                SuspensionTarget::Prefix(v) => pb::Suspension {
                    subject: String::new(),
                    prefix: v.clone(),
                },
            })
            .collect(),
        ip_blocks: s
            .ip_blocks
            .iter()
            .map(|(cidr, expires_at)| pb::IpBlock {
                cidr: cidr.clone(),
                expires_at: expires_at.unwrap_or(0),
            })
            .collect(),
        dlp_rules: s.dlp_rules.iter().map(dlp_rule).collect(),
        client_policy: client_policy(&s.client_access),
        base_version: 0,
        removed: None,
    }
}

/// A DLP rule on the wire.
fn dlp_rule(r: &warden_core::dlp::RuleSpec) -> pb::DlpRule {
    let (kind, id) = r.scope.parts();
    pb::DlpRule {
        name: r.name.clone(),
        detector: r.detector.as_str().to_owned(),
        pattern: r.pattern.clone(),
        action: r.action.as_str().to_owned(),
        scope_kind: kind.to_owned(),
        scope_id: id.to_owned(),
    }
}

/// The gateway's IP allow-list and CORS on the wire; `None` when nothing is set.
fn client_policy(a: &crate::domain::AccessPolicy) -> Option<pb::ClientPolicy> {
    if a.is_empty() {
        return None;
    }
    Some(pb::ClientPolicy {
        allowed_ips: a.allowed_ips.clone(),
        cors: (!a.allowed_origins.is_empty()).then(|| pb::Cors {
            origins: a.allowed_origins.clone(),
            methods: a.cors_methods.clone(),
            headers: a.cors_headers.clone(),
            expose_headers: a.cors_expose_headers.clone(),
            max_age_seconds: a.cors_max_age_seconds,
            allow_credentials: a.cors_allow_credentials,
        }),
    })
}
