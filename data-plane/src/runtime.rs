//! The node's compiled view of one snapshot: lookup tables built once per snapshot so that
//! the request path does only hash-map lookups. [`Runtime::from_snapshot`] rejects a
//! malformed snapshot as a whole (the node keeps the last good one); the swap itself is one
//! atomic pointer store (`ArcSwap`), so no request ever sees half a snapshot.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use secrecy::{SecretBox, SecretString};
use warden_core::jwt::{SigningAlgorithm, VerificationKey, Verifier};
use warden_proto::sync::v1 as pb;

use crate::limits::Policy;

fn policy(p: Option<pb::Policy>) -> Policy {
    let p = p.unwrap_or_default();
    Policy {
        rpm: p.rpm,
        tpm: p.tpm,
        max_parallel: p.max_parallel,
        max_budget_micros: p.max_budget_micros,
        budget_period_secs: if p.budget_period_seconds == 0 {
            30 * 24 * 3600
        } else {
            p.budget_period_seconds
        },
        max_tokens: p.max_tokens,
    }
}

/// The API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenAi,
    Anthropic,
    Echo,
}

/// One upstream key.
pub struct UpstreamKey {
    pub id: String,
    pub fingerprint: String,
    pub secret: SecretString,
    /// Quarantined by an admin or rejected by the provider: not used.
    pub disabled: bool,
    /// Changes when an admin re-enables the key (fresh shared health record).
    pub health_epoch: u64,
}

impl std::fmt::Debug for UpstreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamKey")
            .field("id", &self.id)
            .field("fingerprint", &self.fingerprint)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// A provider with its key pool.
#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub format: Format,
    pub base_url: String,
    pub keys: Vec<UpstreamKey>,
    /// Each client brings its own upstream key (header [`crate::upstream::CLIENT_KEY_HEADER`]).
    pub passthrough: bool,
    /// Top-level request parameters removed before sending.
    pub drop_params: Vec<String>,
    /// Local round-robin cursor (shared across nodes in Redis by the shared-state issue).
    pub cursor: AtomicUsize,
}

/// Per-million-token prices of a model, in USD.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

/// Where a model alias goes.
#[derive(Debug, Clone)]
pub struct Route {
    pub alias: String,
    pub provider: Arc<Provider>,
    pub upstream_model: String,
    /// Aliases to try, in order, when this route's keys are all unavailable.
    pub fallbacks: Vec<String>,
    pub policy: Policy,
    pub price: Price,
    /// Every deployment of the alias (its own provider and upstream model first), each
    /// with its weight; one is picked per request by weight, the others follow.
    pub deployments: Vec<Deployment>,
}

/// One provider + upstream model answering for an alias.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub provider: Arc<Provider>,
    pub upstream_model: String,
    pub weight: u32,
}

impl Route {
    /// This route's deployments in the order to try them: a weighted random draw without
    /// replacement (a deployment of weight 3 comes first three times as often as one of
    /// weight 1).
    pub fn deployment_order(&self) -> Vec<Route> {
        use rand::Rng as _;
        let mut left: Vec<&Deployment> = self.deployments.iter().collect();
        let mut out = Vec::with_capacity(left.len());
        let mut rng = rand::rng();
        while !left.is_empty() {
            let total: u64 = left.iter().map(|d| u64::from(d.weight.max(1))).sum();
            let mut pick = rng.random_range(0..total);
            let mut index = 0;
            for (i, d) in left.iter().enumerate() {
                let w = u64::from(d.weight.max(1));
                if pick < w {
                    index = i;
                    break;
                }
                pick -= w;
            }
            let d = left.remove(index);
            let mut r = self.clone();
            r.provider = Arc::clone(&d.provider);
            r.upstream_model = d.upstream_model.clone();
            out.push(r);
        }
        if out.is_empty() {
            out.push(self.clone());
        }
        out
    }
}

/// A virtual key as the node knows it.
#[derive(Debug, Clone)]
pub struct VirtualKey {
    pub id: String,
    pub hash: String,
    pub models: Vec<String>,
    pub scopes: Vec<String>,
    pub expires_at: i64,
    pub policy: Policy,
}

/// Everything a request needs from one snapshot.
pub struct Runtime {
    pub version: u64,
    pub content_hash: String,
    pub routes: HashMap<String, Route>,
    /// Every provider by name (for `provider:model` addressing).
    pub providers: HashMap<String, Arc<Provider>>,
    /// Aliases in a stable order for `/v1/models`.
    pub aliases: Vec<String>,
    pub verifier: Verifier,
    pub revoked_jtis: HashSet<String>,
    pub virtual_keys: HashMap<String, VirtualKey>,
    pub pepper: SecretBox<Vec<u8>>,
    pub global_policy: Policy,
    pub subject_policies: HashMap<String, Policy>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("version", &self.version)
            .field("routes", &self.aliases)
            .finish_non_exhaustive()
    }
}

/// Why a snapshot was rejected.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot has no JWT settings")]
    MissingJwt,
    #[error("provider {0} has an unknown API format")]
    UnknownFormat(String),
    #[error("JWT key {0} has an unsupported algorithm")]
    BadKeyAlgorithm(String),
    #[error("model {alias} routes to unknown provider {provider}")]
    UnknownProvider { alias: String, provider: String },
    #[error("snapshot carries no credential pepper")]
    MissingPepper,
    #[error("model {alias} falls back to unknown model {fallback}")]
    UnknownFallback { alias: String, fallback: String },
}

impl Runtime {
    /// Compiles a snapshot, checking its internal consistency.
    pub fn from_snapshot(s: pb::Snapshot) -> Result<Self, SnapshotError> {
        let jwt = s.jwt.ok_or(SnapshotError::MissingJwt)?;
        if s.vkey_pepper.is_empty() {
            return Err(SnapshotError::MissingPepper);
        }
        let mut providers = HashMap::new();
        for p in s.providers {
            let format = match pb::ApiFormat::try_from(p.format) {
                Ok(pb::ApiFormat::Openai) => Format::OpenAi,
                Ok(pb::ApiFormat::Anthropic) => Format::Anthropic,
                Ok(pb::ApiFormat::Echo) => Format::Echo,
                _ => return Err(SnapshotError::UnknownFormat(p.name)),
            };
            let keys = p
                .keys
                .into_iter()
                .map(|k| UpstreamKey {
                    id: k.id,
                    fingerprint: k.fingerprint,
                    secret: SecretString::from(k.secret),
                    disabled: !k.disabled_reason.is_empty(),
                    health_epoch: k.health_epoch,
                })
                .collect();
            providers.insert(
                p.name.clone(),
                Arc::new(Provider {
                    name: p.name,
                    format,
                    base_url: p.base_url,
                    keys,
                    passthrough: p.passthrough,
                    drop_params: p.drop_params,
                    cursor: AtomicUsize::new(0),
                }),
            );
        }
        let mut routes = HashMap::new();
        let mut aliases = Vec::new();
        let all_aliases: std::collections::HashSet<String> =
            s.models.iter().map(|m| m.alias.clone()).collect();
        for m in s.models {
            if let Some(f) = m.fallbacks.iter().find(|f| !all_aliases.contains(*f)) {
                return Err(SnapshotError::UnknownFallback {
                    alias: m.alias.clone(),
                    fallback: f.clone(),
                });
            }
            let provider = providers.get(&m.provider).cloned().ok_or_else(|| {
                SnapshotError::UnknownProvider {
                    alias: m.alias.clone(),
                    provider: m.provider.clone(),
                }
            })?;
            let mut deployments = vec![Deployment {
                provider: Arc::clone(&provider),
                upstream_model: m.upstream_model.clone(),
                weight: m.weight.max(1),
            }];
            for d in &m.deployments {
                let p = providers.get(&d.provider).cloned().ok_or_else(|| {
                    SnapshotError::UnknownProvider {
                        alias: m.alias.clone(),
                        provider: d.provider.clone(),
                    }
                })?;
                deployments.push(Deployment {
                    provider: p,
                    upstream_model: d.upstream_model.clone(),
                    weight: d.weight.max(1),
                });
            }
            aliases.push(m.alias.clone());
            routes.insert(
                m.alias.clone(),
                Route {
                    alias: m.alias,
                    provider,
                    upstream_model: m.upstream_model,
                    fallbacks: m.fallbacks,
                    deployments,
                    policy: policy(m.policy),
                    price: m.price.map_or_else(Price::default, |p| Price {
                        input_per_mtok: p.input_per_mtok,
                        output_per_mtok: p.output_per_mtok,
                    }),
                },
            );
        }
        aliases.sort();
        let mut keys = Vec::new();
        for k in jwt.keys {
            let algorithm = SigningAlgorithm::parse(&k.algorithm)
                .ok_or_else(|| SnapshotError::BadKeyAlgorithm(k.kid.clone()))?;
            keys.push(VerificationKey {
                kid: k.kid,
                algorithm,
                key: SecretBox::new(Box::new(k.key)),
            });
        }
        let verifier = Verifier::new(
            jwt.issuer,
            jwt.audience,
            u64::from(jwt.leeway_seconds),
            keys,
        );
        let virtual_keys = s
            .virtual_keys
            .into_iter()
            .flat_map(|k| {
                let key = VirtualKey {
                    id: k.id,
                    hash: k.hash,
                    models: k.models,
                    scopes: k.scopes,
                    expires_at: k.expires_at,
                    policy: policy(k.policy),
                };
                // A rotated key's replaced secret: the same key, until its own deadline.
                let previous = (!k.previous_hash.is_empty()).then(|| VirtualKey {
                    hash: k.previous_hash,
                    expires_at: k.previous_expires_at,
                    ..key.clone()
                });
                std::iter::once(key)
                    .chain(previous)
                    .map(|v| (v.hash.clone(), v))
            })
            .collect();
        Ok(Self {
            version: s.version,
            content_hash: s.content_hash,
            routes,
            providers,
            aliases,
            verifier,
            revoked_jtis: s.revoked_tokens.into_iter().map(|t| t.jti).collect(),
            virtual_keys,
            pepper: SecretBox::new(Box::new(s.vkey_pepper)),
            global_policy: policy(s.global_policy),
            subject_policies: s
                .subject_policies
                .into_iter()
                .map(|p| (p.subject, policy(p.policy)))
                .collect(),
        })
    }

    /// Every secret value this snapshot holds that has no recognisable shape, for the log
    /// redactor.
    pub fn secrets_for_redaction(&self) -> Vec<SecretString> {
        use secrecy::ExposeSecret as _;
        let mut seen = HashSet::new();
        self.routes
            .values()
            .flat_map(|r| r.provider.keys.iter())
            .filter(|k| seen.insert(k.id.clone()))
            .map(|k| SecretString::from(k.secret.expose_secret().to_owned()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    const FIXTURE_V1: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/snapshot-v1.bin"
    );

    fn sample() -> pb::Snapshot {
        pb::Snapshot {
            version: 7,
            content_hash: "fixture".into(),
            providers: vec![pb::Provider {
                name: "openai".into(),
                format: pb::ApiFormat::Openai as i32,
                base_url: "https://api.openai.com/v1".into(),
                keys: vec![pb::UpstreamKey {
                    id: "key_1".into(),
                    fingerprint: "0123456789ab".into(),
                    secret: "sk-fixture-not-a-real-key".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            models: vec![pb::Model {
                alias: "gpt-4o".into(),
                provider: "openai".into(),
                upstream_model: "gpt-4o-2024-08-06".into(),
                ..Default::default()
            }],
            jwt: Some(pb::JwtSettings {
                issuer: "warden".into(),
                audience: "warden".into(),
                keys: vec![pb::JwtVerificationKey {
                    kid: "k1".into(),
                    algorithm: "EdDSA".into(),
                    key: vec![7; 32],
                }],
                leeway_seconds: 30,
            }),
            virtual_keys: vec![pb::VirtualKey {
                id: "vk_1".into(),
                hash: "ab".repeat(32),
                name: "team".into(),
                owner: "ops".into(),
                models: vec!["*".into()],
                scopes: vec!["read".into(), "write".into()],
                expires_at: 0,
                ..Default::default()
            }],
            revoked_tokens: vec![pb::RevokedToken {
                jti: "revoked-1".into(),
                expires_at: 4_000_000_000,
            }],
            vkey_pepper: vec![1; 32],
            ..Default::default()
        }
    }

    /// Snapshots written by older control planes must keep decoding. The fixture is the
    /// v1 encoding, committed; regenerate only for a deliberate format change with
    /// `WARDEN_REGENERATE_FIXTURES=1 cargo test -p warden-data-plane`.
    #[test]
    fn v1_snapshot_fixture_still_decodes() {
        if std::env::var_os("WARDEN_REGENERATE_FIXTURES").is_some() {
            std::fs::write(FIXTURE_V1, sample().encode_to_vec()).unwrap();
        }
        let bytes = std::fs::read(FIXTURE_V1).expect("fixture missing");
        let snapshot = pb::Snapshot::decode(bytes.as_slice()).unwrap();
        let rt = Runtime::from_snapshot(snapshot).unwrap();
        assert_eq!(rt.version, 7);
        let route = &rt.routes["gpt-4o"];
        assert_eq!(route.upstream_model, "gpt-4o-2024-08-06");
        assert_eq!(route.provider.format, Format::OpenAi);
        assert_eq!(route.provider.keys[0].fingerprint, "0123456789ab");
        assert!(rt.revoked_jtis.contains("revoked-1"));
        assert!(rt.virtual_keys.contains_key(&"ab".repeat(32)));
    }

    #[test]
    fn inconsistent_snapshots_are_rejected() {
        let mut s = sample();
        s.models[0].provider = "missing".into();
        assert!(matches!(
            Runtime::from_snapshot(s),
            Err(SnapshotError::UnknownProvider { .. })
        ));
        let mut s = sample();
        s.jwt = None;
        assert!(Runtime::from_snapshot(s).is_err());
        let mut s = sample();
        s.vkey_pepper.clear();
        assert!(Runtime::from_snapshot(s).is_err());
        let mut s = sample();
        s.providers[0].format = 99;
        assert!(Runtime::from_snapshot(s).is_err());
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let rt = Runtime::from_snapshot(sample()).unwrap();
        let dbg = format!("{rt:?} {:?}", rt.routes["gpt-4o"]);
        assert!(!dbg.contains("sk-fixture"), "{dbg}");
    }
}
