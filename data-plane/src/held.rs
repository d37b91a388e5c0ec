//! What a node holds of its last applied snapshot, so that a delta can be applied to it:
//! the wire state ([`SnapshotState`], no secrets) and the secrets opened from the
//! deliveries so far (upstream keys by provider and key id with their fingerprint, HS256
//! secrets by kid, the pepper). In memory only, like the compiled snapshot: nothing of it
//! is written to disk.
//!
//! A delta applies only on top of exactly its `base_version`, and only when every value it
//! does not carry is held (an upstream key sent without its sealed secret must be held
//! with the same fingerprint); otherwise [`Held::apply`] fails and the node resyncs.

use std::collections::HashMap;
use std::sync::Arc;

use secrecy::{ExposeSecret as _, SecretBox};
use warden_core::jwt::SigningAlgorithm;
use warden_core::seal::Field;
use warden_proto::sync::v1 as pb;
use warden_proto::sync_delta::SnapshotState;

use crate::compiled::{Recipient, SecretSource, Snapshot, SnapshotError};
use crate::upstream::clients::UpstreamClients;

type Secret = Arc<SecretBox<Vec<u8>>>;

/// The node's last applied snapshot, as state and opened secrets.
#[derive(Clone)]
pub struct Held {
    state: SnapshotState,
    content_hash: String,
    pepper: Secret,
    /// By (provider, key id): the fingerprint the secret was sent with, and the secret.
    upstream: HashMap<(String, String), (String, Secret)>,
    /// HS256 secrets by kid.
    jwt: HashMap<String, Secret>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("version", &self.state.version)
            .field("content_hash", &self.content_hash)
            .finish_non_exhaustive()
    }
}

fn is_shared_secret(algorithm: &str) -> bool {
    SigningAlgorithm::parse(algorithm) == Some(SigningAlgorithm::HS256)
}

impl Held {
    /// The version held.
    pub fn version(&self) -> u64 {
        self.state.version
    }

    /// A full snapshot (`base_version` 0), every secret opened with `to`'s key.
    pub fn from_full(s: &pb::Snapshot, to: Recipient<'_>) -> Result<Self, SnapshotError> {
        let version = s.version;
        if s.sealed_vkey_pepper.is_none() {
            return Err(SnapshotError::MissingPepper);
        }
        let pepper = Arc::new(to.open(version, Field::VkeyPepper, s.sealed_vkey_pepper.clone())?);
        let mut upstream = HashMap::new();
        for p in &s.providers {
            for k in &p.keys {
                let field = Field::UpstreamKey {
                    provider: &p.name,
                    key_id: &k.id,
                };
                let secret = to.open(version, field, k.sealed_secret.clone())?;
                upstream.insert(
                    (p.name.clone(), k.id.clone()),
                    (k.fingerprint.clone(), Arc::new(secret)),
                );
            }
        }
        let mut jwt = HashMap::new();
        for k in s.jwt.iter().flat_map(|j| &j.keys) {
            if is_shared_secret(&k.algorithm) {
                let secret = to.open(version, Field::Jwt { kid: &k.kid }, k.sealed_key.clone())?;
                jwt.insert(k.kid.clone(), Arc::new(secret));
            }
        }
        Ok(Self {
            state: SnapshotState::from_full(s),
            content_hash: s.content_hash.clone(),
            pepper,
            upstream,
            jwt,
        })
    }

    /// This state with delta `d` applied (the secrets it carries opened with `to`'s key).
    /// Takes the state: a delta that does not apply leads to a resync, which replaces it
    /// anyway (and copying 100,000 keys to keep it would cost more than the delta).
    pub fn apply(self, d: &pb::Snapshot, to: Recipient<'_>) -> Result<Self, SnapshotError> {
        let version = d.version;
        let mut next = self;
        next.state
            .apply(d)
            .map_err(|e| SnapshotError::Delta(e.to_string()))?;
        next.content_hash = d.content_hash.clone();
        if d.sealed_vkey_pepper.is_some() {
            next.pepper =
                Arc::new(to.open(version, Field::VkeyPepper, d.sealed_vkey_pepper.clone())?);
        }
        for name in d.removed.iter().flat_map(|r| &r.providers) {
            next.upstream.retain(|(p, _), _| p != name);
        }
        // The secrets held before this delta (a few; the keys of providers it changes are
        // rebuilt from them below).
        let before_upstream = next.upstream.clone();
        let before_jwt = std::mem::take(&mut next.jwt);
        for p in &d.providers {
            // The provider's keys are exactly those of its new entry.
            next.upstream.retain(|(name, _), _| name != &p.name);
            for k in &p.keys {
                let at = (p.name.clone(), k.id.clone());
                let secret = if k.sealed_secret.is_some() {
                    let field = Field::UpstreamKey {
                        provider: &p.name,
                        key_id: &k.id,
                    };
                    Arc::new(to.open(version, field, k.sealed_secret.clone())?)
                } else {
                    match before_upstream.get(&at) {
                        Some((fingerprint, secret)) if fingerprint == &k.fingerprint => {
                            Arc::clone(secret)
                        }
                        _ => {
                            return Err(SnapshotError::Delta(format!(
                                "upstream key {}/{} came without its secret and is not held with fingerprint {}",
                                p.name, k.id, k.fingerprint
                            )));
                        }
                    }
                };
                next.upstream.insert(at, (k.fingerprint.clone(), secret));
            }
        }
        for k in d.jwt.iter().flat_map(|j| &j.keys) {
            if !is_shared_secret(&k.algorithm) {
                continue;
            }
            let secret = if k.sealed_key.is_some() {
                Arc::new(to.open(version, Field::Jwt { kid: &k.kid }, k.sealed_key.clone())?)
            } else {
                before_jwt.get(&k.kid).cloned().ok_or_else(|| {
                    SnapshotError::Delta(format!(
                        "JWT key {} came without its secret and is not held",
                        k.kid
                    ))
                })?
            };
            next.jwt.insert(k.kid.clone(), secret);
        }
        Ok(next)
    }

    /// The snapshot this state compiles to.
    pub fn compile(&self, clients: &UpstreamClients) -> Result<Snapshot, SnapshotError> {
        let mut s = self.state.to_full();
        s.content_hash = self.content_hash.clone();
        // The pepper is held ([`SecretSource`] below); this marks it present.
        s.sealed_vkey_pepper = Some(pb::SealedSecret::default());
        Snapshot::compile_with(s, self, clients)
    }
}

/// Held values, whatever was delivered with them.
impl SecretSource for Held {
    fn open(
        &self,
        _version: u64,
        field: Field<'_>,
        _sealed: Option<pb::SealedSecret>,
    ) -> Result<SecretBox<Vec<u8>>, SnapshotError> {
        let secret = match field {
            Field::VkeyPepper => Some(&self.pepper),
            Field::UpstreamKey { provider, key_id } => self
                .upstream
                .get(&(provider.to_owned(), key_id.to_owned()))
                .map(|(_, s)| s),
            Field::Jwt { kid } => self.jwt.get(kid),
        };
        secret
            .map(|s| SecretBox::new(Box::new(s.expose_secret().clone())))
            .ok_or_else(|| SnapshotError::NotSealed(field.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use warden_core::seal::{Binding, NodeKeyPair};

    use super::*;

    const NODE: &str = "node-delta";

    /// Secrets of one version, by field name.
    type Secrets = HashMap<String, Vec<u8>>;

    fn seal(keys: &NodeKeyPair, version: u64, field: Field<'_>, value: &[u8]) -> pb::SealedSecret {
        let binding = Binding {
            node_id: NODE,
            version,
            field,
        };
        let sealed = keys.public_key().seal(&binding, value).unwrap();
        pb::SealedSecret {
            encapped_key: sealed.encapped_key,
            ciphertext: sealed.ciphertext,
        }
    }

    /// A random but valid snapshot state of `version` and its secrets: small key spaces,
    /// so that successive versions share, change and drop entries.
    fn random(rng: &mut StdRng, version: u64) -> (SnapshotState, Secrets) {
        let mut secrets = Secrets::new();
        let pepper = vec![rng.random_range(1..3u8); 32];
        secrets.insert("pepper".into(), pepper);
        let mut s = pb::Snapshot {
            version,
            ..Default::default()
        };
        for p in 0..rng.random_range(1..3) {
            let name = format!("p{p}");
            let mut keys = Vec::new();
            for k in 0..rng.random_range(0..3) {
                let secret = format!("sk-{}", rng.random_range(0..3));
                keys.push(pb::UpstreamKey {
                    id: format!("key_{k}"),
                    fingerprint: warden_core::fingerprint::of(secret.as_bytes()),
                    health_epoch: rng.random_range(0..2),
                    ..Default::default()
                });
                secrets.insert(format!("{name}/key_{k}"), secret.into_bytes());
            }
            s.providers.push(pb::Provider {
                name,
                format: pb::ApiFormat::Openai as i32,
                base_url: "https://api.example.com/v1".into(),
                keys,
                ..Default::default()
            });
        }
        for m in 0..rng.random_range(0..4) {
            s.models.push(pb::Model {
                alias: format!("m{m}"),
                provider: "p0".into(),
                upstream_model: format!("up{}", rng.random_range(0..2)),
                ..Default::default()
            });
        }
        for k in 0..rng.random_range(0..20) {
            s.virtual_keys.push(pb::VirtualKey {
                id: format!("vk_{}", k * rng.random_range(1..3)),
                hash: format!("h{k}-{}", rng.random_range(0..2)),
                models: vec!["*".into()],
                ..Default::default()
            });
        }
        for t in 0..rng.random_range(0..6) {
            s.revoked_tokens.push(pb::RevokedToken {
                jti: format!("jti{}", t + rng.random_range(0..4)),
                expires_at: 1,
            });
        }
        let hs = vec![rng.random_range(1..3u8); 32];
        secrets.insert("jwt/hs".into(), hs);
        s.jwt = Some(pb::JwtSettings {
            issuer: "warden".into(),
            audience: "warden".into(),
            keys: vec![pb::JwtVerificationKey {
                kid: "hs".into(),
                algorithm: "HS256".into(),
                ..Default::default()
            }],
            leeway_seconds: rng.random_range(0..2),
        });
        s.lockdown = rng.random_bool(0.2);
        (SnapshotState::from_full(&s), secrets)
    }

    /// `wire` with the secrets of `new` sealed: all of them (`old` none) or those not in
    /// `old` (as the control plane seals a delta).
    fn sealed(
        keys: &NodeKeyPair,
        mut wire: pb::Snapshot,
        new: &Secrets,
        old: Option<&Secrets>,
    ) -> pb::Snapshot {
        let version = wire.version;
        let changed = |name: &str| old.and_then(|o| o.get(name)) != new.get(name);
        for p in &mut wire.providers {
            for k in &mut p.keys {
                let name = format!("{}/{}", p.name, k.id);
                if changed(&name) {
                    let field = Field::UpstreamKey {
                        provider: &p.name,
                        key_id: &k.id,
                    };
                    k.sealed_secret = Some(seal(keys, version, field, &new[&name]));
                }
            }
        }
        for k in wire.jwt.iter_mut().flat_map(|j| &mut j.keys) {
            if changed("jwt/hs") {
                k.sealed_key = Some(seal(
                    keys,
                    version,
                    Field::Jwt { kid: "hs" },
                    &new["jwt/hs"],
                ));
            }
        }
        if changed("pepper") {
            wire.sealed_vkey_pepper = Some(seal(keys, version, Field::VkeyPepper, &new["pepper"]));
        }
        wire.content_hash = hex::encode(wire.encode_to_vec().get(..8).unwrap_or_default());
        wire
    }

    fn clients() -> UpstreamClients {
        UpstreamClients::new(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(1),
            &crate::egress::EgressSettings::default(),
        )
        .unwrap()
    }

    /// What a compiled snapshot serves, in a comparable form.
    fn served(s: &Snapshot) -> String {
        let mut providers: Vec<String> = s
            .providers
            .values()
            .map(|p| {
                let keys: Vec<String> = p
                    .keys
                    .iter()
                    .map(|k| {
                        format!(
                            "{}:{}:{}:{}",
                            k.id,
                            k.fingerprint,
                            k.secret.expose_secret(),
                            k.health_epoch
                        )
                    })
                    .collect();
                format!("{}={}", p.name, keys.join(","))
            })
            .collect();
        providers.sort();
        let mut vkeys: Vec<&String> = s.virtual_keys.keys().collect();
        vkeys.sort();
        let mut revoked: Vec<&String> = s.revoked_jtis.iter().collect();
        revoked.sort();
        let routes: Vec<String> = s
            .aliases
            .iter()
            .map(|a| format!("{a}>{}", s.routes[a].upstream_model))
            .collect();
        format!(
            "v{} providers={providers:?} routes={routes:?} vkeys={vkeys:?} revoked={revoked:?} pepper={:?} lockdown={}",
            s.version,
            s.pepper.expose_secret(),
            s.incident.locked_down
        )
    }

    #[test]
    fn applying_deltas_gives_what_the_full_snapshot_of_each_version_gives() {
        let keys = NodeKeyPair::generate().unwrap();
        let to = Recipient {
            node_id: NODE,
            keys: &keys,
        };
        let clients = clients();
        let mut rng = StdRng::seed_from_u64(0xde17a);
        for _ in 0..12 {
            let (state, secrets) = random(&mut rng, 1);
            let full = sealed(&keys, state.to_full(), &secrets, None);
            let mut held = Held::from_full(&full, to).unwrap();
            let (mut prev_state, mut prev_secrets) = (state, secrets);
            for version in 2..6 {
                let (state, secrets) = random(&mut rng, version);
                let delta = sealed(
                    &keys,
                    prev_state.diff(&state),
                    &secrets,
                    Some(&prev_secrets),
                );
                held = held.apply(&delta, to).unwrap();
                let full = sealed(&keys, state.to_full(), &secrets, None);
                let direct = Snapshot::compile(full, to, &clients).unwrap();
                let applied = held.compile(&clients).unwrap();
                assert_eq!(served(&applied), served(&direct));
                (prev_state, prev_secrets) = (state, secrets);
            }
        }
    }

    #[test]
    fn a_delta_that_does_not_apply_is_refused_and_the_held_state_kept() {
        let keys = NodeKeyPair::generate().unwrap();
        let to = Recipient {
            node_id: NODE,
            keys: &keys,
        };
        let mut rng = StdRng::seed_from_u64(3);
        let (v1, s1) = random(&mut rng, 1);
        let held = Held::from_full(&sealed(&keys, v1.to_full(), &s1, None), to).unwrap();
        // Another base version.
        let mut v3 = v1.clone();
        v3.version = 3;
        let mut wrong_base = sealed(&keys, v1.diff(&v3), &s1, Some(&s1));
        wrong_base.base_version = 2;
        assert!(matches!(
            held.clone().apply(&wrong_base, to),
            Err(SnapshotError::Delta(_))
        ));
        // A new upstream key without its secret.
        let mut v2 = v1.clone();
        v2.version = 2;
        v2.providers
            .get_mut("p0")
            .unwrap()
            .keys
            .push(pb::UpstreamKey {
                id: "key_new".into(),
                fingerprint: "0123456789ab".into(),
                ..Default::default()
            });
        let unsealed = v1.diff(&v2);
        assert!(matches!(
            held.clone().apply(&unsealed, to),
            Err(SnapshotError::Delta(_))
        ));
        // A value sealed for another version does not open.
        let mut s2 = s1.clone();
        s2.insert("pepper".into(), vec![9; 32]);
        let mut stale = sealed(&keys, v1.diff(&v3), &s2, Some(&s1));
        stale.version = 2;
        v3.version = 2;
        assert!(held.clone().apply(&stale, to).is_err());
        assert_eq!(held.version(), 1);
    }
}
