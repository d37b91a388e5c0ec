//! The node's compiled view of one snapshot: lookup tables built once per snapshot so that
//! the request path does only hash-map lookups. [`Snapshot::compile`] rejects a
//! malformed snapshot as a whole (the node keeps the last good one); the swap itself is one
//! atomic pointer store (`ArcSwap`), so no request ever sees half a snapshot.
//!
//! Secrets arrive sealed to this node's key ([`warden_core::seal`]); they are opened here,
//! straight into `secrecy` types, and a snapshot with any value that does not open is
//! rejected like a malformed one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use axum::http::HeaderValue;
use secrecy::{ExposeSecret as _, SecretBox, SecretString};
use warden_core::jwt::{SigningAlgorithm, VerificationKey, Verifier};
use warden_core::seal::{Binding, Field, NodeKeyPair, SealError, Sealed};
use warden_proto::sync::v1 as pb;

use crate::limits::Policy;
use crate::principal::Principal;
use crate::upstream::clients::UpstreamClients;

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
    /// Each client brings its own upstream key (header `x-warden-upstream-key`).
    pub passthrough: bool,
    /// Top-level request parameters removed before sending.
    pub drop_params: Vec<String>,
    /// The client of the provider's own CA bundle (those roots only); `None`: the node's
    /// default client (the public web roots).
    pub client: Option<reqwest::Client>,
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
    /// Whether the model has a price: an unpriced route is refused when a budget applies.
    pub priced: bool,
    /// The alias whose per-model limits (and their counters) apply: the alias itself, or,
    /// for `provider:model`, the alias serving the same upstream model.
    pub limits_alias: String,
    /// Every deployment of the alias (its own provider and upstream model first), each
    /// with its weight; one is picked per request by weight, the others follow.
    pub deployments: Vec<Deployment>,
    /// `alias` as the answer's `x-warden-model` header, built once per snapshot (`None`
    /// when the alias is not a valid header value).
    pub alias_header: Option<HeaderValue>,
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
    /// The key's own IP and origin lists, if any.
    pub access: Option<Arc<crate::access::CredentialAccess>>,
    /// Who a request with this key is: built with the snapshot (its suspension included),
    /// handed out by [`crate::auth::authenticate`] as an `Arc` clone.
    pub principal: Arc<Principal>,
}

/// The policy, price and per-model limit counters a `provider:model` request takes from an
/// alias that serves the same provider and upstream model.
#[derive(Debug, Clone)]
pub struct DirectTerms {
    pub policy: Policy,
    pub price: Price,
    pub priced: bool,
    pub limits_alias: String,
}

impl DirectTerms {
    /// For every provider and upstream model some alias serves (as its primary or one of
    /// its deployments), the terms of the first priced such alias in `aliases` order, else
    /// of the first one. Built once per snapshot, so a request does one lookup.
    pub fn by_served_model(
        aliases: &[String],
        routes: &HashMap<String, Route>,
    ) -> HashMap<String, HashMap<String, DirectTerms>> {
        let mut table: HashMap<String, HashMap<String, DirectTerms>> = HashMap::new();
        for route in aliases.iter().filter_map(|a| routes.get(a)) {
            let served = std::iter::once((&route.provider.name, &route.upstream_model)).chain(
                route
                    .deployments
                    .iter()
                    .map(|d| (&d.provider.name, &d.upstream_model)),
            );
            for (provider, model) in served {
                let terms = DirectTerms {
                    policy: route.policy,
                    price: route.price,
                    priced: route.priced,
                    limits_alias: route.limits_alias.clone(),
                };
                let by_model = table.entry(provider.clone()).or_default();
                match by_model.get(model) {
                    Some(kept) if kept.priced || !route.priced => {}
                    _ => {
                        by_model.insert(model.clone(), terms);
                    }
                }
            }
        }
        table
    }
}

/// Everything a request needs from one snapshot.
pub struct Snapshot {
    pub version: u64,
    pub content_hash: String,
    pub routes: HashMap<String, Route>,
    /// Every provider by name (for `provider:model` addressing).
    pub providers: HashMap<String, Arc<Provider>>,
    /// Aliases in a stable order for `/v1/models`.
    pub aliases: Vec<String>,
    /// What a `provider:model` request is charged under, by provider then upstream model:
    /// the terms of the alias serving that model ([`DirectTerms::by_served_model`]).
    pub direct_terms: HashMap<String, HashMap<String, DirectTerms>>,
    pub verifier: Verifier,
    pub revoked_jtis: HashSet<String>,
    pub virtual_keys: HashMap<String, VirtualKey>,
    pub pepper: SecretBox<Vec<u8>>,
    /// [`Snapshot::pepper`] as the HMAC key virtual keys are looked up by, prepared once.
    pub vkey_hmac: aws_lc_rs::hmac::Key,
    /// The JWTs verified under this snapshot (empty when it arrives: a new snapshot is a
    /// new cache, so a revocation or suspension applies at once).
    pub verified_jwts: crate::auth::jwt_cache::VerifiedJwts,
    pub global_policy: Policy,
    pub subject_policies: HashMap<String, Policy>,
    /// Lockdown and suspended credentials.
    pub incident: crate::incident::Incident,
    /// Addresses and networks blocked by an operator.
    pub ip_blocks: Vec<crate::ip_block::ManualBlock>,
    /// DLP rules, compiled once per snapshot; empty when none is set.
    pub dlp: Arc<warden_core::dlp::RuleSet>,
    /// The IP and origin lists of JWT subjects that have them.
    pub subject_access: HashMap<String, Arc<crate::access::CredentialAccess>>,
    /// The global IP allow-list and CORS.
    pub client_policy: crate::access::ClientPolicy,
    /// The `alias` and `provider` metric labels of the configured names.
    pub metric_labels: crate::metrics::RouteLabels,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("version", &self.version)
            .field("routes", &self.aliases)
            .finish_non_exhaustive()
    }
}

/// A manual block of the snapshot; one the control plane should never have sent (not an
/// address or CIDR) is left out with a warning rather than refusing every other change.
fn ip_block(b: pb::IpBlock) -> Option<crate::ip_block::ManualBlock> {
    let net = b
        .cidr
        .parse::<ipnet::IpNet>()
        .or_else(|_| b.cidr.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
    match net {
        Ok(net) => Some(crate::ip_block::ManualBlock {
            net: net.trunc(),
            expires_at: (b.expires_at > 0).then_some(b.expires_at),
        }),
        Err(_) => {
            tracing::warn!("snapshot: an ip block that is not an address or CIDR was ignored");
            None
        }
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
    #[error("provider {provider}: {reason}")]
    BadCa { provider: String, reason: String },
    #[error("secret {0} is not sealed (control plane too old?)")]
    NotSealed(String),
    #[error("secret {0} is not valid UTF-8")]
    NotUtf8(String),
    #[error("JWT key {0} (HS256) carries its secret in the clear")]
    ClearJwtSecret(String),
    #[error("client access lists: {0}")]
    Access(String),
    #[error(transparent)]
    Sealed(#[from] SealError),
    #[error("DLP rules: {0}")]
    Dlp(String),
    #[error("delta: {0}")]
    Delta(String),
}

/// The snapshot's DLP rules, compiled; an unknown detector, action or scope, or a rule
/// that does not compile, rejects the snapshot.
fn dlp_rules(rules: Vec<pb::DlpRule>) -> Result<warden_core::dlp::RuleSet, SnapshotError> {
    use warden_core::dlp::{Action, Detector, RuleSet, RuleSpec, Scope};
    if rules.is_empty() {
        return Ok(RuleSet::default());
    }
    let mut specs = Vec::with_capacity(rules.len());
    for r in rules {
        let bad = |what: &str| SnapshotError::Dlp(format!("rule {}: unknown {what}", r.name));
        specs.push(RuleSpec {
            detector: Detector::parse(&r.detector).ok_or_else(|| bad("detector"))?,
            action: Action::parse(&r.action).ok_or_else(|| bad("action"))?,
            scope: Scope::from_parts(&r.scope_kind, &r.scope_id).ok_or_else(|| bad("scope"))?,
            name: r.name,
            pattern: r.pattern,
        });
    }
    RuleSet::compile(specs).map_err(|e| SnapshotError::Dlp(e.to_string()))
}

/// Whom a snapshot's secrets are sealed to: this node.
#[derive(Debug, Clone, Copy)]
pub struct Recipient<'a> {
    pub node_id: &'a str,
    pub keys: &'a NodeKeyPair,
}

/// Where the secrets of a snapshot being compiled come from: its sealed values, opened
/// with this node's key ([`Recipient`]), or the values the node already holds
/// ([`crate::held::Held`], for a state built from deltas).
pub trait SecretSource {
    /// The value of `field` in snapshot `version`; `sealed` is the value as delivered.
    fn open(
        &self,
        version: u64,
        field: Field<'_>,
        sealed: Option<pb::SealedSecret>,
    ) -> Result<SecretBox<Vec<u8>>, SnapshotError>;
}

impl SecretSource for Recipient<'_> {
    /// Opens the sealed value of `field` in snapshot `version`.
    fn open(
        &self,
        version: u64,
        field: Field<'_>,
        sealed: Option<pb::SealedSecret>,
    ) -> Result<SecretBox<Vec<u8>>, SnapshotError> {
        let sealed = sealed.ok_or_else(|| SnapshotError::NotSealed(field.to_string()))?;
        let binding = Binding {
            node_id: self.node_id,
            version,
            field,
        };
        let sealed = Sealed {
            encapped_key: sealed.encapped_key,
            ciphertext: sealed.ciphertext,
        };
        Ok(self.keys.open(&binding, &sealed)?)
    }
}

impl Snapshot {
    /// Compiles a snapshot, opening its sealed secrets with `to`'s key pair and checking its
    /// internal consistency; a provider's CA bundle becomes its client from `clients`
    /// (which then drops the clients of bundles this snapshot no longer names).
    pub fn compile(
        s: pb::Snapshot,
        to: Recipient<'_>,
        clients: &UpstreamClients,
    ) -> Result<Self, SnapshotError> {
        Self::compile_with(s, &to, clients)
    }

    /// [`Snapshot::compile`] with the secrets from `to`.
    pub fn compile_with(
        s: pb::Snapshot,
        to: &dyn SecretSource,
        clients: &UpstreamClients,
    ) -> Result<Self, SnapshotError> {
        let version = s.version;
        let jwt = s.jwt.ok_or(SnapshotError::MissingJwt)?;
        if s.sealed_vkey_pepper.is_none() {
            return Err(SnapshotError::MissingPepper);
        }
        let pepper = to.open(version, Field::VkeyPepper, s.sealed_vkey_pepper)?;
        if pepper.expose_secret().is_empty() {
            return Err(SnapshotError::MissingPepper);
        }
        let mut providers = HashMap::new();
        let mut bundles = HashSet::new();
        for p in s.providers {
            let format = match pb::ApiFormat::try_from(p.format) {
                Ok(pb::ApiFormat::Openai) => Format::OpenAi,
                Ok(pb::ApiFormat::Anthropic) => Format::Anthropic,
                Ok(pb::ApiFormat::Echo) => Format::Echo,
                _ => return Err(SnapshotError::UnknownFormat(p.name)),
            };
            let client = if p.ca_pem.is_empty() {
                None
            } else {
                let (bundle, client) =
                    clients
                        .for_ca(&p.ca_pem)
                        .map_err(|e| SnapshotError::BadCa {
                            provider: p.name.clone(),
                            reason: e.to_string(),
                        })?;
                bundles.insert(bundle);
                Some(client)
            };
            let mut keys = Vec::with_capacity(p.keys.len());
            for k in p.keys {
                let field = Field::UpstreamKey {
                    provider: &p.name,
                    key_id: &k.id,
                };
                let opened = to.open(version, field, k.sealed_secret)?;
                let secret = std::str::from_utf8(opened.expose_secret())
                    .map_err(|_| SnapshotError::NotUtf8(field.to_string()))?;
                keys.push(UpstreamKey {
                    secret: SecretString::from(secret),
                    id: k.id,
                    fingerprint: k.fingerprint,
                    disabled: !k.disabled_reason.is_empty(),
                    health_epoch: k.health_epoch,
                });
            }
            providers.insert(
                p.name.clone(),
                Arc::new(Provider {
                    name: p.name,
                    format,
                    base_url: p.base_url,
                    keys,
                    passthrough: p.passthrough,
                    drop_params: p.drop_params,
                    client,
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
                    priced: m
                        .price
                        .is_some_and(|p| p.input_per_mtok > 0.0 || p.output_per_mtok > 0.0),
                    limits_alias: m.alias.clone(),
                    alias_header: HeaderValue::from_str(&m.alias).ok(),
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
            let key = match algorithm {
                // A public key: travels in the clear.
                SigningAlgorithm::EdDSA => SecretBox::new(Box::new(k.key)),
                // A shared secret: must arrive sealed.
                SigningAlgorithm::HS256 => {
                    if !k.key.is_empty() {
                        return Err(SnapshotError::ClearJwtSecret(k.kid));
                    }
                    to.open(version, Field::Jwt { kid: &k.kid }, k.sealed_key)?
                }
            };
            keys.push(VerificationKey {
                kid: k.kid,
                algorithm,
                key,
            });
        }
        let verifier = Verifier::new(
            jwt.issuer,
            jwt.audience,
            u64::from(jwt.leeway_seconds),
            keys,
        );
        let incident =
            crate::incident::Incident::compile(s.lockdown, s.suspensions, &s.virtual_keys);
        let client_policy =
            crate::access::ClientPolicy::compile(s.client_policy).map_err(SnapshotError::Access)?;
        let mut subject_access = HashMap::new();
        for p in &s.subject_policies {
            if let Some(a) =
                crate::access::CredentialAccess::compile(&p.allowed_ips, &p.allowed_origins)
                    .map_err(|e| SnapshotError::Access(format!("subject {}: {e}", p.subject)))?
            {
                subject_access.insert(p.subject.clone(), Arc::new(a));
            }
        }
        let mut vkey_access = HashMap::new();
        for k in &s.virtual_keys {
            if let Some(a) =
                crate::access::CredentialAccess::compile(&k.allowed_ips, &k.allowed_origins)
                    .map_err(|e| SnapshotError::Access(format!("virtual key {}: {e}", k.id)))?
            {
                vkey_access.insert(k.id.clone(), Arc::new(a));
            }
        }
        let virtual_keys = s
            .virtual_keys
            .into_iter()
            .flat_map(|k| {
                let access = vkey_access.get(&k.id).cloned();
                let key_policy = policy(k.policy);
                let principal = Arc::new(Principal::virtual_key(
                    &k.id,
                    &k.scopes,
                    k.models.clone(),
                    key_policy,
                    access.clone(),
                    incident.virtual_key_suspended(&k.id),
                ));
                let key = VirtualKey {
                    access,
                    principal,
                    id: k.id,
                    hash: k.hash,
                    models: k.models,
                    scopes: k.scopes,
                    expires_at: k.expires_at,
                    policy: key_policy,
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
        let direct_terms = DirectTerms::by_served_model(&aliases, &routes);
        clients.retain(&bundles);
        let dlp = Arc::new(dlp_rules(s.dlp_rules)?);
        let metric_labels = crate::metrics::RouteLabels::new(
            routes.keys(),
            providers
                .keys()
                .chain(routes.values().map(|r| &r.provider.name)),
        );
        Ok(Self {
            version: s.version,
            content_hash: s.content_hash,
            routes,
            providers,
            aliases,
            direct_terms,
            verifier,
            revoked_jtis: s.revoked_tokens.into_iter().map(|t| t.jti).collect(),
            virtual_keys,
            vkey_hmac: warden_core::credential::hash_key(pepper.expose_secret()),
            verified_jwts: crate::auth::jwt_cache::VerifiedJwts::default(),
            pepper,
            global_policy: policy(s.global_policy),
            subject_policies: s
                .subject_policies
                .into_iter()
                // A subject with only access lists has no limits to apply.
                .filter(|p| p.policy.is_some())
                .map(|p| (p.subject, policy(p.policy)))
                .collect(),
            incident,
            ip_blocks: s.ip_blocks.into_iter().filter_map(ip_block).collect(),
            dlp,
            subject_access,
            client_policy,
            metric_labels,
        })
    }

    /// Every secret value this snapshot holds that has no recognisable shape, for the log
    /// redactor: the keys of every provider, whether or not an alias routes to it (a
    /// provider without one is still reached as `provider:model`).
    pub fn secrets_for_redaction(&self) -> Vec<SecretString> {
        let mut seen = HashSet::new();
        self.providers
            .values()
            .flat_map(|p| p.keys.iter().map(move |k| (p, k)))
            .filter(|(p, k)| seen.insert((p.name.clone(), k.id.clone())))
            .map(|(_, k)| k)
            .map(|k| SecretString::from(k.secret.expose_secret().to_owned()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    /// The v1 encoding: secrets in the clear (fields since reserved). Frozen.
    const FIXTURE_V1: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/snapshot-v1.bin"
    );
    /// The v2 encoding: secrets sealed to [`fixture_keys`] for [`FIXTURE_NODE`].
    const FIXTURE_V2: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/snapshot-v2.bin"
    );
    const FIXTURE_NODE: &str = "fixture-node";
    const UPSTREAM_SECRET: &str = "sk-fixture-not-a-real-key";
    const PEPPER: [u8; 32] = [1; 32];
    const HS_SECRET: &[u8] = b"hs256-fixture-shared-secret-0123";

    /// [`Snapshot::compile`] with clients of no particular setting.
    fn compile(s: pb::Snapshot, to: Recipient<'_>) -> Result<Snapshot, SnapshotError> {
        let clients = UpstreamClients::new(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(1),
            &crate::egress::EgressSettings::default(),
        )
        .unwrap();
        Snapshot::compile(s, to, &clients)
    }

    /// A fixed key pair, so that the committed v2 fixture opens.
    fn fixture_keys() -> NodeKeyPair {
        NodeKeyPair::from_seed(&[0x5e; 32])
    }

    fn to(keys: &NodeKeyPair) -> Recipient<'_> {
        Recipient {
            node_id: FIXTURE_NODE,
            keys,
        }
    }

    fn seal(keys: &NodeKeyPair, version: u64, field: Field<'_>, value: &[u8]) -> pb::SealedSecret {
        let binding = Binding {
            node_id: FIXTURE_NODE,
            version,
            field,
        };
        let sealed = keys.public_key().seal(&binding, value).unwrap();
        pb::SealedSecret {
            encapped_key: sealed.encapped_key,
            ciphertext: sealed.ciphertext,
        }
    }

    /// A snapshot as the control plane sends it to [`FIXTURE_NODE`] holding `keys`.
    fn sample(keys: &NodeKeyPair) -> pb::Snapshot {
        let version = 7;
        pb::Snapshot {
            version,
            content_hash: "fixture".into(),
            providers: vec![pb::Provider {
                name: "openai".into(),
                format: pb::ApiFormat::Openai as i32,
                base_url: "https://api.openai.com/v1".into(),
                keys: vec![pb::UpstreamKey {
                    id: "key_1".into(),
                    fingerprint: "0123456789ab".into(),
                    sealed_secret: Some(seal(
                        keys,
                        version,
                        Field::UpstreamKey {
                            provider: "openai",
                            key_id: "key_1",
                        },
                        UPSTREAM_SECRET.as_bytes(),
                    )),
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
                keys: vec![
                    pb::JwtVerificationKey {
                        kid: "k1".into(),
                        algorithm: "EdDSA".into(),
                        key: vec![7; 32],
                        sealed_key: None,
                    },
                    pb::JwtVerificationKey {
                        kid: "hs".into(),
                        algorithm: "HS256".into(),
                        key: Vec::new(),
                        sealed_key: Some(seal(keys, version, Field::Jwt { kid: "hs" }, HS_SECRET)),
                    },
                ],
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
            sealed_vkey_pepper: Some(seal(keys, version, Field::VkeyPepper, &PEPPER)),
            ..Default::default()
        }
    }

    /// Snapshots written by older control planes must keep decoding. The fixture is the
    /// v2 encoding, committed; regenerate only for a deliberate format change with
    /// `WARDEN_REGENERATE_FIXTURES=1 cargo test -p warden-data-plane`.
    #[test]
    fn v2_snapshot_fixture_still_decodes_and_opens() {
        let keys = fixture_keys();
        if std::env::var_os("WARDEN_REGENERATE_FIXTURES").is_some() {
            std::fs::write(FIXTURE_V2, sample(&keys).encode_to_vec()).unwrap();
        }
        let bytes = std::fs::read(FIXTURE_V2).expect("fixture missing");
        assert!(
            !bytes
                .windows(UPSTREAM_SECRET.len())
                .any(|w| w == UPSTREAM_SECRET.as_bytes()),
            "the v2 fixture holds the upstream key in the clear"
        );
        let snapshot = pb::Snapshot::decode(bytes.as_slice()).unwrap();
        let compiled = compile(snapshot, to(&keys)).unwrap();
        assert_eq!(compiled.version, 7);
        // Written before lockdowns existed: none, and no suspension.
        assert!(!compiled.incident.locked_down);
        assert!(!compiled.incident.subject_suspended("alice"));
        let route = &compiled.routes["gpt-4o"];
        assert_eq!(route.upstream_model, "gpt-4o-2024-08-06");
        assert_eq!(route.provider.format, Format::OpenAi);
        assert_eq!(route.provider.keys[0].fingerprint, "0123456789ab");
        assert_eq!(
            route.provider.keys[0].secret.expose_secret(),
            UPSTREAM_SECRET
        );
        assert_eq!(compiled.pepper.expose_secret().as_slice(), PEPPER);
        assert!(compiled.revoked_jtis.contains("revoked-1"));
        assert!(compiled.virtual_keys.contains_key(&"ab".repeat(32)));
    }

    /// The keys of a provider no alias routes to reach the log redactor too.
    #[test]
    fn keys_of_providers_without_an_alias_are_redacted() {
        let keys = fixture_keys();
        let mut s = sample(&keys);
        let spare = "spare0key0without0any0shape";
        s.providers.push(pb::Provider {
            name: "spare".into(),
            format: pb::ApiFormat::Openai as i32,
            base_url: "https://spare.invalid/v1".into(),
            keys: vec![pb::UpstreamKey {
                id: "key_1".into(),
                fingerprint: "ba9876543210".into(),
                sealed_secret: Some(seal(
                    &keys,
                    s.version,
                    Field::UpstreamKey {
                        provider: "spare",
                        key_id: "key_1",
                    },
                    spare.as_bytes(),
                )),
                ..Default::default()
            }],
            ..Default::default()
        });
        let compiled = compile(s, to(&keys)).unwrap();
        let secrets: Vec<String> = compiled
            .secrets_for_redaction()
            .iter()
            .map(|k| k.expose_secret().to_owned())
            .collect();
        assert!(secrets.contains(&spare.to_owned()), "{}", secrets.len());
        assert!(secrets.contains(&UPSTREAM_SECRET.to_owned()));
        assert_eq!(secrets.len(), 2, "each key once, same id in two providers");
        warden_core::redact::register(compiled.secrets_for_redaction());
        let line = format!("upstream said: bad key {spare}");
        assert!(!warden_core::redact::redact(&line).contains(spare));
    }

    /// The v1 encoding (secrets in the clear) still decodes, but a node no longer accepts
    /// it: its clear fields are reserved and ignored, so it has no pepper it can open.
    #[test]
    fn access_lists_compile_and_a_bad_entry_rejects_the_snapshot() {
        let keys = fixture_keys();
        let mut s = sample(&keys);
        s.client_policy = Some(pb::ClientPolicy {
            allowed_ips: vec!["10.0.0.0/8".into()],
            cors: Some(pb::Cors {
                origins: vec!["https://app.example".into()],
                ..Default::default()
            }),
        });
        s.virtual_keys[0].allowed_ips = vec!["::1".into()];
        s.subject_policies = vec![pb::SubjectPolicy {
            subject: "alice".into(),
            policy: None,
            allowed_ips: Vec::new(),
            allowed_origins: vec!["https://app.example".into()],
        }];
        let compiled = compile(s.clone(), to(&keys)).unwrap();
        assert!(compiled.client_policy.cors.is_some());
        assert!(
            compiled
                .client_policy
                .allows_ip(Some("10.1.2.3".parse().unwrap()))
        );
        assert!(compiled.virtual_keys.values().all(|k| k.access.is_some()));
        assert!(compiled.subject_access.contains_key("alice"));
        // A subject with only access lists has no limits.
        assert!(!compiled.subject_policies.contains_key("alice"));
        s.virtual_keys[0].allowed_ips = vec!["10.0.0.0/33".into()];
        assert!(matches!(
            compile(s, to(&keys)),
            Err(SnapshotError::Access(_))
        ));
    }

    #[test]
    fn v1_snapshot_with_clear_secrets_decodes_but_is_refused() {
        let bytes = std::fs::read(FIXTURE_V1).expect("fixture missing");
        let snapshot = pb::Snapshot::decode(bytes.as_slice()).unwrap();
        assert_eq!(snapshot.version, 7);
        assert!(snapshot.providers[0].keys[0].sealed_secret.is_none());
        assert!(matches!(
            compile(snapshot.clone(), to(&fixture_keys())),
            Err(SnapshotError::MissingPepper)
        ));
        // Even with a sealed pepper, the clear upstream key is not taken.
        let mut with_pepper = snapshot;
        with_pepper.sealed_vkey_pepper = sample(&fixture_keys()).sealed_vkey_pepper;
        assert!(matches!(
            compile(with_pepper, to(&fixture_keys())),
            Err(SnapshotError::NotSealed(field)) if field == "upstream_key/openai/key_1"
        ));
    }

    #[test]
    fn inconsistent_snapshots_are_rejected() {
        let keys = fixture_keys();
        let mut s = sample(&keys);
        s.models[0].provider = "missing".into();
        assert!(matches!(
            compile(s, to(&keys)),
            Err(SnapshotError::UnknownProvider { .. })
        ));
        let mut s = sample(&keys);
        s.jwt = None;
        assert!(compile(s, to(&keys)).is_err());
        let mut s = sample(&keys);
        s.sealed_vkey_pepper = None;
        assert!(compile(s, to(&keys)).is_err());
        let mut s = sample(&keys);
        s.providers[0].format = 99;
        assert!(compile(s, to(&keys)).is_err());
    }

    /// A provider's CA bundle becomes its own client; a malformed one rejects the snapshot
    /// (the node keeps the last good one), naming the provider and not quoting the text.
    #[test]
    fn provider_ca_bundles_compile_into_clients_or_reject_the_snapshot() {
        let keys = fixture_keys();
        let compiled = compile(sample(&keys), to(&keys)).unwrap();
        assert!(compiled.providers["openai"].client.is_none());
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap()
            .pem();
        let mut s = sample(&keys);
        s.providers[0].ca_pem = ca;
        let compiled = compile(s, to(&keys)).unwrap();
        assert!(compiled.routes["gpt-4o"].provider.client.is_some());
        let mut s = sample(&keys);
        s.providers[0].ca_pem = "-----BEGIN CERTIFICATE-----\nnot-base64!\n".into();
        let err = compile(s, to(&keys)).unwrap_err();
        assert!(
            matches!(&err, SnapshotError::BadCa { provider, .. } if provider == "openai"),
            "{err}"
        );
        assert!(!err.to_string().contains("not-base64"), "{err}");
    }

    #[test]
    fn secrets_that_do_not_open_reject_the_snapshot() {
        let keys = fixture_keys();
        // Sealed to another node's key.
        let other = NodeKeyPair::generate().unwrap();
        assert!(matches!(
            compile(sample(&other), to(&keys)),
            Err(SnapshotError::Sealed(SealError::Open(_)))
        ));
        // Bound to another node id.
        let err = compile(
            sample(&keys),
            Recipient {
                node_id: "another-node",
                keys: &keys,
            },
        )
        .unwrap_err();
        assert!(matches!(err, SnapshotError::Sealed(SealError::Open(_))));
        // Replayed under another version.
        let mut s = sample(&keys);
        s.version = 8;
        assert!(matches!(
            compile(s, to(&keys)),
            Err(SnapshotError::Sealed(SealError::Open(_)))
        ));
        // One field's sealed value moved into another field.
        let mut s = sample(&keys);
        s.providers[0].keys[0].sealed_secret = s.sealed_vkey_pepper.clone();
        let err = compile(s, to(&keys)).unwrap_err();
        assert!(
            matches!(&err, SnapshotError::Sealed(SealError::Open(f)) if f == "upstream_key/openai/key_1"),
            "{err}"
        );
        // Altered ciphertext.
        let mut s = sample(&keys);
        if let Some(jwt) = s.jwt.as_mut()
            && let Some(sealed) = jwt.keys[1].sealed_key.as_mut()
        {
            sealed.ciphertext[0] ^= 1;
        }
        assert!(matches!(
            compile(s, to(&keys)),
            Err(SnapshotError::Sealed(SealError::Open(f))) if f == "jwt/hs"
        ));
        // An upstream key without its sealed value, an HS256 secret in the clear.
        let mut s = sample(&keys);
        s.providers[0].keys[0].sealed_secret = None;
        assert!(matches!(
            compile(s, to(&keys)),
            Err(SnapshotError::NotSealed(_))
        ));
        let mut s = sample(&keys);
        if let Some(jwt) = s.jwt.as_mut() {
            jwt.keys[1].key = HS_SECRET.to_vec();
        }
        assert!(matches!(
            compile(s, to(&keys)),
            Err(SnapshotError::ClearJwtSecret(kid)) if kid == "hs"
        ));
    }

    #[test]
    fn rejections_and_debug_output_hold_no_secret() {
        let keys = fixture_keys();
        let compiled = compile(sample(&keys), to(&keys)).unwrap();
        let dbg = format!("{compiled:?} {:?} {keys:?}", compiled.routes["gpt-4o"]);
        assert!(!dbg.contains("sk-fixture"), "{dbg}");
        let other = NodeKeyPair::generate().unwrap();
        let err = compile(sample(&other), to(&keys)).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("sk-fixture"), "{shown}");
    }
}
