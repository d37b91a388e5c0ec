//! What one Watch stream sends: a full snapshot first, then deltas from what that stream
//! last sent to the current snapshot, each with its secrets sealed to the node.
//!
//! The per-node work is only the sealing: the wire state of a version
//! ([`SnapshotState`], no secrets) and the delta between two versions are computed once and
//! shared by every stream through [`Deliveries`]. A delta seals only the secrets that are
//! new or changed since the version it is based on (an upstream key whose provider/key id
//! had another fingerprint or was absent, an HS256 secret that is new or changed, the
//! pepper if it changed); an unchanged one travels without its sealed value ("keep the one
//! you hold").

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use prost::Message as _;
use secrecy::ExposeSecret as _;
use warden_core::jwt::SigningAlgorithm;
use warden_core::seal::{Binding, Field, NodePublicKey};
use warden_proto::sync::v1 as pb;
use warden_proto::sync_delta::SnapshotState;

use super::snapshot_wire::{Recipient, unsealed};
use crate::snapshot::SnapshotData;

/// Wire states kept (the current version and the few before it).
const STATES_KEPT: usize = 3;
/// Deltas kept, by (from, to) version pair.
const DELTAS_KEPT: usize = 8;

/// Wire states and deltas shared by every Watch stream of one control plane.
#[derive(Debug, Default)]
pub struct Deliveries {
    cache: Mutex<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    /// Keyed by the snapshot they were made of (a `Weak`, so that a snapshot is freed when
    /// no one else holds it, and its address cannot be reused while the entry is kept).
    states: VecDeque<(Weak<SnapshotData>, Arc<SnapshotState>)>,
    deltas: VecDeque<(Weak<SnapshotData>, Weak<SnapshotData>, Arc<pb::Snapshot>)>,
}

impl Deliveries {
    /// The wire state of `s`, made once. Blocks (on the lock while another stream makes
    /// it): call from a blocking thread.
    pub fn state(&self, s: &Arc<SnapshotData>) -> Arc<SnapshotState> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, state)) = cache
            .states
            .iter()
            .find(|(w, _)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(s)))
        {
            return Arc::clone(state);
        }
        let state = Arc::new(SnapshotState::from_full(&unsealed(s)));
        if cache.states.len() >= STATES_KEPT {
            cache.states.pop_front();
        }
        cache
            .states
            .push_back((Arc::downgrade(s), Arc::clone(&state)));
        state
    }

    /// The delta (nothing sealed) from `from` to `to`, made once per pair.
    pub fn delta(
        &self,
        (from, from_state): (&Arc<SnapshotData>, &SnapshotState),
        (to, to_state): (&Arc<SnapshotData>, &SnapshotState),
    ) -> Arc<pb::Snapshot> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, delta)) = cache.deltas.iter().find(|(f, t, _)| {
            std::ptr::eq(f.as_ptr(), Arc::as_ptr(from)) && std::ptr::eq(t.as_ptr(), Arc::as_ptr(to))
        }) {
            return Arc::clone(delta);
        }
        let delta = Arc::new(from_state.diff(to_state));
        if cache.deltas.len() >= DELTAS_KEPT {
            cache.deltas.pop_front();
        }
        cache
            .deltas
            .push_back((Arc::downgrade(from), Arc::downgrade(to), Arc::clone(&delta)));
        delta
    }
}

/// The secrets one delivery released to a node.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Released {
    /// `provider/key_id:fingerprint` of every upstream key sealed in it.
    pub upstream_keys: Vec<String>,
    pub vkey_pepper: bool,
    pub jwt_secrets: usize,
}

impl Released {
    pub fn is_empty(&self) -> bool {
        self.upstream_keys.is_empty() && !self.vkey_pepper && self.jwt_secrets == 0
    }

    /// The `secret.release` audit subject: the version and the provider keys released, by
    /// fingerprint (`v12 keys=openai/key_1:0123456789ab,…`). Never a value.
    pub fn subject(&self, version: u64) -> String {
        let keys = if self.upstream_keys.is_empty() {
            "-".to_owned()
        } else {
            self.upstream_keys.join(",")
        };
        format!("v{version} keys={keys}")
    }

    /// The `secret.release` audit detail: which node key the secrets were sealed to, how
    /// many of each kind were released, and the version a delta was based on (0: full).
    pub fn detail(&self, key: &NodePublicKey, base_version: u64) -> String {
        format!(
            "node_key={} upstream_keys={} vkey_pepper={} jwt_secrets={} base_version={base_version}",
            key.fingerprint(),
            self.upstream_keys.len(),
            u8::from(self.vkey_pepper),
            self.jwt_secrets,
        )
    }
}

fn sealed(
    to: Recipient<'_>,
    version: u64,
    field: Field<'_>,
    plaintext: &[u8],
) -> Result<pb::SealedSecret, String> {
    let binding = Binding {
        node_id: to.node_id,
        version,
        field,
    };
    to.key
        .seal(&binding, plaintext)
        .map(|s| pb::SealedSecret {
            encapped_key: s.encapped_key,
            ciphertext: s.ciphertext,
        })
        .map_err(|e| e.to_string())
}

/// Fills the sealed values of `wire` (a full snapshot or a delta of `new`, nothing sealed)
/// for node `to`, bound to `new.version`, and sets its content hash. With `old` (the
/// snapshot the delta is based on) only what is new or changed since `old` is sealed.
pub fn seal(
    mut wire: pb::Snapshot,
    old: Option<&SnapshotData>,
    new: &SnapshotData,
    to: Recipient<'_>,
) -> Result<(pb::Snapshot, Released), String> {
    let version = new.version;
    let mut released = Released::default();
    let secrets: HashMap<(&str, &str), &crate::snapshot::SnapshotKey> = new
        .providers
        .iter()
        .flat_map(|p| {
            p.keys
                .iter()
                .map(move |k| ((p.name.as_str(), k.id.as_str()), k))
        })
        .collect();
    let held: HashMap<(&str, &str), &str> = old
        .into_iter()
        .flat_map(|o| o.providers.iter())
        .flat_map(|p| {
            p.keys
                .iter()
                .map(move |k| ((p.name.as_str(), k.id.as_str()), k.fingerprint.as_str()))
        })
        .collect();
    for p in &mut wire.providers {
        for k in &mut p.keys {
            let at = (p.name.as_str(), k.id.as_str());
            if held.get(&at) == Some(&k.fingerprint.as_str()) {
                continue;
            }
            let secret = secrets
                .get(&at)
                .ok_or_else(|| format!("upstream key {}/{} has no secret", p.name, k.id))?;
            let field = Field::UpstreamKey {
                provider: &p.name,
                key_id: &k.id,
            };
            k.sealed_secret = Some(sealed(
                to,
                version,
                field,
                secret.secret.expose_secret().as_bytes(),
            )?);
            released
                .upstream_keys
                .push(format!("{}/{}:{}", p.name, k.id, k.fingerprint));
        }
    }
    if let Some(jwt) = &mut wire.jwt {
        for k in &mut jwt.keys {
            if SigningAlgorithm::parse(&k.algorithm) == Some(SigningAlgorithm::EdDSA) {
                continue;
            }
            let Some(secret) = new.jwt_keys.iter().find(|s| s.kid == k.kid) else {
                return Err(format!("JWT key {} has no secret", k.kid));
            };
            let unchanged = old.is_some_and(|o| {
                o.jwt_keys
                    .iter()
                    .any(|h| h.kid == k.kid && h.key.expose_secret() == secret.key.expose_secret())
            });
            if unchanged {
                continue;
            }
            k.sealed_key = Some(sealed(
                to,
                version,
                Field::Jwt { kid: &k.kid },
                secret.key.expose_secret(),
            )?);
            released.jwt_secrets += 1;
        }
    }
    let pepper_held =
        old.is_some_and(|o| o.vkey_pepper.expose_secret() == new.vkey_pepper.expose_secret());
    if !pepper_held {
        wire.sealed_vkey_pepper = Some(sealed(
            to,
            version,
            Field::VkeyPepper,
            new.vkey_pepper.expose_secret(),
        )?);
        released.vkey_pepper = true;
    }
    wire.version = 0;
    wire.content_hash.clear();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &wire.encode_to_vec());
    wire.content_hash = hex::encode(digest.as_ref());
    wire.version = version;
    Ok((wire, released))
}

/// Converts a snapshot to its wire form for one node, every secret sealed to the node's key,
/// with its content hash (which therefore covers the sealed bytes of this delivery).
pub fn to_proto(s: &SnapshotData, to: Recipient<'_>) -> Result<pb::Snapshot, String> {
    let state = warden_proto::sync_delta::SnapshotState::from_full(&unsealed(s));
    seal(state.to_full(), None, s, to).map(|(wire, _)| wire)
}

#[cfg(test)]
mod tests {
    use secrecy::{SecretBox, SecretString};
    use warden_core::seal::NodeKeyPair;

    use super::*;
    use crate::snapshot::{SnapshotKey, SnapshotVirtualKey};

    fn vkey(id: &str) -> SnapshotVirtualKey {
        SnapshotVirtualKey {
            id: id.into(),
            hash: format!("{id}-hash"),
            name: String::new(),
            owner: String::new(),
            models: vec!["*".into()],
            scopes: Vec::new(),
            expires_at: 0,
            policy: crate::domain::Limits::default(),
            previous: None,
            access: crate::domain::AccessPolicy::default(),
        }
    }

    fn key(id: &str, secret: &str) -> SnapshotKey {
        SnapshotKey {
            id: id.into(),
            fingerprint: warden_core::fingerprint::of(secret.as_bytes()),
            secret: SecretString::from(secret),
            disabled_reason: String::new(),
            health_epoch: 0,
        }
    }

    #[test]
    fn a_delta_seals_only_what_changed_and_is_shared() {
        let node = NodeKeyPair::generate().unwrap();
        let to = Recipient {
            node_id: "node-1",
            key: node.public_key(),
        };
        let mut v1 = super::wire_tests::snapshot();
        v1.version = 1;
        v1.virtual_keys = vec![vkey("vk_a"), vkey("vk_b")];
        let v1 = Arc::new(v1);
        let mut v2 = super::wire_tests::snapshot();
        v2.version = 2;
        v2.virtual_keys = vec![vkey("vk_a")];
        v2.providers[0].keys.push(key("key_2", "sk-second-canary"));
        let v2 = Arc::new(v2);
        let deliveries = Deliveries::default();
        let (s1, s2) = (deliveries.state(&v1), deliveries.state(&v2));
        assert!(Arc::ptr_eq(&s1, &deliveries.state(&v1)));
        let delta = deliveries.delta((&v1, &s1), (&v2, &s2));
        assert!(Arc::ptr_eq(
            &delta,
            &deliveries.delta((&v1, &s1), (&v2, &s2))
        ));
        let (wire, released) = seal((*delta).clone(), Some(&v1), &v2, to).unwrap();
        assert_eq!(wire.base_version, 1);
        assert_eq!(wire.version, 2);
        assert_eq!(
            wire.removed.as_ref().unwrap().virtual_keys,
            vec!["vk_b".to_owned()]
        );
        // The changed provider travels whole; only its new key is sealed.
        let keys = &wire.providers[0].keys;
        assert_eq!(keys.len(), 2);
        assert!(keys[0].sealed_secret.is_none());
        assert!(keys[1].sealed_secret.is_some());
        assert!(wire.sealed_vkey_pepper.is_none());
        assert!(wire.jwt.as_ref().unwrap().keys[1].sealed_key.is_none());
        assert_eq!(released.upstream_keys.len(), 1);
        assert!(released.upstream_keys[0].starts_with("openai/key_2:"));
        assert!(!released.vkey_pepper);
        assert_eq!(released.jwt_secrets, 0);
        // A changed pepper is sealed again.
        let mut v3 = super::wire_tests::snapshot();
        v3.version = 3;
        v3.vkey_pepper = SecretBox::new(Box::new(vec![9; 32]));
        let v3 = Arc::new(v3);
        let s3 = deliveries.state(&v3);
        let delta = deliveries.delta((&v2, &s2), (&v3, &s3));
        let (wire, released) = seal((*delta).clone(), Some(&v2), &v3, to).unwrap();
        assert!(wire.sealed_vkey_pepper.is_some() && released.vkey_pepper);
        assert!(released.upstream_keys.is_empty());
    }
}

#[cfg(test)]
mod wire_tests {
    use secrecy::{SecretBox, SecretString};
    use warden_core::seal::{Binding, Field, NodeKeyPair, Sealed};

    use super::*;
    use crate::domain::{ApiFormat, Limits, Price};
    use crate::snapshot::{SnapshotJwtKey, SnapshotKey, SnapshotModel, SnapshotProvider};

    const CANARY: &str = "sk-canary-to-proto-91b2c3d4e5f6";
    const PEPPER: &[u8] = b"pepper-canary-0123456789abcdef01";
    const HS_SECRET: &[u8] = b"hs256-canary-secret-abcdefghijkl";

    pub(super) fn snapshot() -> SnapshotData {
        SnapshotData {
            version: 12,
            providers: vec![SnapshotProvider {
                name: "openai".into(),
                format: ApiFormat::OpenAi,
                base_url: "https://api.openai.com/v1".into(),
                passthrough: false,
                drop_params: Vec::new(),
                ca_pem: None,
                keys: vec![SnapshotKey {
                    id: "key_1".into(),
                    fingerprint: warden_core::fingerprint::of(CANARY.as_bytes()),
                    secret: SecretString::from(CANARY),
                    disabled_reason: String::new(),
                    health_epoch: 0,
                }],
            }],
            models: vec![SnapshotModel {
                alias: "gpt".into(),
                provider: "openai".into(),
                upstream_model: "gpt-4o".into(),
                fallbacks: Vec::new(),
                policy: Limits::default(),
                price: Price::default(),
                weight: 1,
                deployments: Vec::new(),
            }],
            jwt_issuer: "warden".into(),
            jwt_audience: "warden".into(),
            jwt_leeway_seconds: 30,
            jwt_keys: vec![
                SnapshotJwtKey {
                    kid: "ed".into(),
                    algorithm: "EdDSA".into(),
                    key: SecretBox::new(Box::new(vec![7; 32])),
                },
                SnapshotJwtKey {
                    kid: "hs".into(),
                    algorithm: "HS256".into(),
                    key: SecretBox::new(Box::new(HS_SECRET.to_vec())),
                },
            ],
            virtual_keys: Vec::new(),
            revoked_tokens: Vec::new(),
            vkey_pepper: SecretBox::new(Box::new(PEPPER.to_vec())),
            global_policy: Limits::default(),
            subject_policies: Vec::new(),
            lockdown: false,
            suspensions: Vec::new(),
            ip_blocks: Vec::new(),
            dlp_rules: Vec::new(),
            client_access: crate::domain::AccessPolicy::default(),
        }
    }

    fn sealed(s: Option<&pb::SealedSecret>) -> Sealed {
        let s = s.expect("sealed value missing");
        Sealed {
            encapped_key: s.encapped_key.clone(),
            ciphertext: s.ciphertext.clone(),
        }
    }

    #[test]
    fn secrets_leave_only_sealed_to_the_node() {
        let node = NodeKeyPair::generate().unwrap();
        let to = Recipient {
            node_id: "node-1",
            key: node.public_key(),
        };
        let wire = to_proto(&snapshot(), to).unwrap();
        let bytes = wire.encode_to_vec();
        for secret in [CANARY.as_bytes(), PEPPER, HS_SECRET] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret),
                "a secret is in the clear on the wire"
            );
        }
        // The node opens each value under its own binding.
        let binding = |field| Binding {
            node_id: "node-1",
            version: 12,
            field,
        };
        let key = &wire.providers[0].keys[0];
        let opened = node
            .open(
                &binding(Field::UpstreamKey {
                    provider: "openai",
                    key_id: "key_1",
                }),
                &sealed(key.sealed_secret.as_ref()),
            )
            .unwrap();
        assert_eq!(opened.expose_secret().as_slice(), CANARY.as_bytes());
        let pepper = node
            .open(
                &binding(Field::VkeyPepper),
                &sealed(wire.sealed_vkey_pepper.as_ref()),
            )
            .unwrap();
        assert_eq!(pepper.expose_secret().as_slice(), PEPPER);
        // EdDSA: a public key, in the clear; HS256: sealed, `key` empty.
        let jwt = wire.jwt.as_ref().unwrap();
        assert_eq!(jwt.keys[0].key, vec![7; 32]);
        assert!(jwt.keys[0].sealed_key.is_none());
        assert!(jwt.keys[1].key.is_empty());
        let hs = node
            .open(
                &binding(Field::Jwt { kid: "hs" }),
                &sealed(jwt.keys[1].sealed_key.as_ref()),
            )
            .unwrap();
        assert_eq!(hs.expose_secret().as_slice(), HS_SECRET);
        // Another node's key opens nothing.
        let other = NodeKeyPair::generate().unwrap();
        assert!(
            other
                .open(
                    &binding(Field::VkeyPepper),
                    &sealed(wire.sealed_vkey_pepper.as_ref())
                )
                .is_err()
        );
    }

    #[test]
    fn content_hash_covers_the_delivery_without_version_and_hash() {
        let node = NodeKeyPair::generate().unwrap();
        let to = Recipient {
            node_id: "node-1",
            key: node.public_key(),
        };
        let wire = to_proto(&snapshot(), to).unwrap();
        let mut unhashed = wire.clone();
        unhashed.version = 0;
        unhashed.content_hash.clear();
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &unhashed.encode_to_vec());
        assert_eq!(wire.content_hash, hex::encode(digest.as_ref()));
        assert_eq!(wire.version, 12);
        // HPKE is randomised: every delivery seals afresh, so its hash differs.
        assert_ne!(
            to_proto(&snapshot(), to).unwrap().content_hash,
            wire.content_hash
        );
    }

    #[test]
    fn release_audit_names_fingerprints_never_values() {
        let s = snapshot();
        let node = NodeKeyPair::generate().unwrap();
        let to = Recipient {
            node_id: "node-1",
            key: node.public_key(),
        };
        let state = warden_proto::sync_delta::SnapshotState::from_full(&unsealed(&s));
        let (_, released) = seal(state.to_full(), None, &s, to).unwrap();
        let subject = released.subject(s.version);
        let detail = released.detail(node.public_key(), 0);
        let fp = warden_core::fingerprint::of(CANARY.as_bytes());
        assert_eq!(subject, format!("v12 keys=openai/key_1:{fp}"));
        assert_eq!(
            detail,
            format!(
                "node_key={} upstream_keys=1 vkey_pepper=1 jwt_secrets=1 base_version=0",
                node.public_key().fingerprint()
            )
        );
        for text in [&subject, &detail] {
            assert!(!text.contains(CANARY));
        }
    }
}
