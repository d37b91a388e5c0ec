//! Snapshot deltas (`Snapshot.base_version`, `SnapshotRemovals`): the content of one
//! snapshot version held as keyed maps ([`SnapshotState`]), the delta between two states
//! ([`SnapshotState::diff`]) and its application ([`SnapshotState::apply`]). Both sides
//! use the same code, so that `apply(state(v1), diff(v1, v2)) == state(v2)` holds by test,
//! not by two implementations agreeing.
//!
//! A state holds no secret: sealed values (`UpstreamKey.sealed_secret`,
//! `JwtVerificationKey.sealed_key`, `Snapshot.sealed_vkey_pepper`) are stripped when a
//! state is made; the control plane seals them per node and the node keeps what it opened.

use std::collections::BTreeMap;

use crate::sync::v1 as pb;

/// Why a delta does not apply to a state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    #[error("delta against version {base}, but version {held} is held")]
    BaseMismatch { base: u64, held: u64 },
    #[error("delta removes {list} entry {key}, which is not held")]
    UnknownRemoval { list: &'static str, key: String },
}

/// The key of a suspension entry: (subject, prefix).
type SuspensionKey = (String, String);

/// The content of one snapshot version, every list keyed (and therefore in key order).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SnapshotState {
    pub version: u64,
    pub providers: BTreeMap<String, pb::Provider>,
    pub models: BTreeMap<String, pb::Model>,
    pub jwt: Option<pb::JwtSettings>,
    pub virtual_keys: BTreeMap<String, pb::VirtualKey>,
    pub revoked_tokens: BTreeMap<String, pb::RevokedToken>,
    pub global_policy: Option<pb::Policy>,
    pub subject_policies: BTreeMap<String, pb::SubjectPolicy>,
    pub client_policy: Option<pb::ClientPolicy>,
    pub ip_blocks: BTreeMap<String, pb::IpBlock>,
    pub dlp_rules: BTreeMap<String, pb::DlpRule>,
    pub lockdown: bool,
    pub suspensions: BTreeMap<SuspensionKey, pb::Suspension>,
}

fn strip_provider(mut p: pb::Provider) -> pb::Provider {
    for k in &mut p.keys {
        k.sealed_secret = None;
    }
    p
}

fn strip_jwt(mut j: pb::JwtSettings) -> pb::JwtSettings {
    for k in &mut j.keys {
        k.sealed_key = None;
    }
    j
}

fn suspension_key(s: &pb::Suspension) -> SuspensionKey {
    (s.subject.clone(), s.prefix.clone())
}

fn keyed<T: Clone>(items: &[T], key: impl Fn(&T) -> String) -> BTreeMap<String, T> {
    items.iter().map(|i| (key(i), i.clone())).collect()
}

/// The entries of `new` that `old` lacks or holds differently, and the keys `old` holds
/// that `new` lacks.
fn changes<K: Ord + Clone, T: PartialEq + Clone>(
    old: &BTreeMap<K, T>,
    new: &BTreeMap<K, T>,
) -> (Vec<T>, Vec<K>) {
    let upserts = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(_, v)| v.clone())
        .collect();
    let removed = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .cloned()
        .collect();
    (upserts, removed)
}

/// Removes `keys` from `map`; each must be held.
fn remove<K: Ord + Clone + std::fmt::Debug, T>(
    map: &mut BTreeMap<K, T>,
    keys: impl IntoIterator<Item = K>,
    list: &'static str,
) -> Result<(), DeltaError> {
    for k in keys {
        if map.remove(&k).is_none() {
            return Err(DeltaError::UnknownRemoval {
                list,
                key: format!("{k:?}"),
            });
        }
    }
    Ok(())
}

impl SnapshotState {
    /// The state of a full snapshot (its sealed values stripped). A key listed twice keeps
    /// its last entry, as a node compiling the list does.
    pub fn from_full(s: &pb::Snapshot) -> Self {
        Self {
            version: s.version,
            providers: s
                .providers
                .iter()
                .map(|p| (p.name.clone(), strip_provider(p.clone())))
                .collect(),
            models: keyed(&s.models, |m| m.alias.clone()),
            jwt: s.jwt.clone().map(strip_jwt),
            virtual_keys: keyed(&s.virtual_keys, |k| k.id.clone()),
            revoked_tokens: keyed(&s.revoked_tokens, |t| t.jti.clone()),
            global_policy: s.global_policy,
            subject_policies: keyed(&s.subject_policies, |p| p.subject.clone()),
            client_policy: s.client_policy.clone(),
            ip_blocks: keyed(&s.ip_blocks, |b| b.cidr.clone()),
            dlp_rules: keyed(&s.dlp_rules, |r| r.name.clone()),
            lockdown: s.lockdown,
            suspensions: s
                .suspensions
                .iter()
                .map(|t| (suspension_key(t), t.clone()))
                .collect(),
        }
    }

    /// The state as a full snapshot (lists in key order, nothing sealed, no hash).
    pub fn to_full(&self) -> pb::Snapshot {
        pb::Snapshot {
            version: self.version,
            providers: self.providers.values().cloned().collect(),
            models: self.models.values().cloned().collect(),
            jwt: self.jwt.clone(),
            virtual_keys: self.virtual_keys.values().cloned().collect(),
            revoked_tokens: self.revoked_tokens.values().cloned().collect(),
            global_policy: self.global_policy,
            subject_policies: self.subject_policies.values().cloned().collect(),
            client_policy: self.client_policy.clone(),
            ip_blocks: self.ip_blocks.values().cloned().collect(),
            dlp_rules: self.dlp_rules.values().cloned().collect(),
            lockdown: self.lockdown,
            suspensions: self.suspensions.values().cloned().collect(),
            ..pb::Snapshot::default()
        }
    }

    /// The delta from `self` to `new` (nothing sealed, no hash): `base_version` is
    /// `self.version`, the singletons are sent whole.
    pub fn diff(&self, new: &Self) -> pb::Snapshot {
        let (providers, removed_providers) = changes(&self.providers, &new.providers);
        let (models, removed_models) = changes(&self.models, &new.models);
        let (virtual_keys, removed_vkeys) = changes(&self.virtual_keys, &new.virtual_keys);
        let (revoked_tokens, removed_revoked) = changes(&self.revoked_tokens, &new.revoked_tokens);
        let (subject_policies, removed_subjects) =
            changes(&self.subject_policies, &new.subject_policies);
        let (ip_blocks, removed_blocks) = changes(&self.ip_blocks, &new.ip_blocks);
        let (dlp_rules, removed_rules) = changes(&self.dlp_rules, &new.dlp_rules);
        let (suspensions, removed_suspensions) = changes(&self.suspensions, &new.suspensions);
        pb::Snapshot {
            version: new.version,
            base_version: self.version,
            providers,
            models,
            jwt: new.jwt.clone(),
            virtual_keys,
            revoked_tokens,
            global_policy: new.global_policy,
            subject_policies,
            client_policy: new.client_policy.clone(),
            ip_blocks,
            dlp_rules,
            lockdown: new.lockdown,
            suspensions,
            removed: Some(pb::SnapshotRemovals {
                providers: removed_providers,
                models: removed_models,
                virtual_keys: removed_vkeys,
                revoked_tokens: removed_revoked,
                subject_policies: removed_subjects,
                ip_blocks: removed_blocks,
                dlp_rules: removed_rules,
                suspensions: removed_suspensions
                    .into_iter()
                    .map(|(subject, prefix)| pb::Suspension { subject, prefix })
                    .collect(),
            }),
            ..pb::Snapshot::default()
        }
    }

    /// Applies delta `d` (whose `base_version` must be this state's version); on error
    /// `self` is left partly changed, so apply to a copy when the old state must survive.
    pub fn apply(&mut self, d: &pb::Snapshot) -> Result<(), DeltaError> {
        if d.base_version != self.version {
            return Err(DeltaError::BaseMismatch {
                base: d.base_version,
                held: self.version,
            });
        }
        if let Some(r) = &d.removed {
            remove(
                &mut self.providers,
                r.providers.iter().cloned(),
                "providers",
            )?;
            remove(&mut self.models, r.models.iter().cloned(), "models")?;
            remove(
                &mut self.virtual_keys,
                r.virtual_keys.iter().cloned(),
                "virtual_keys",
            )?;
            remove(
                &mut self.revoked_tokens,
                r.revoked_tokens.iter().cloned(),
                "revoked_tokens",
            )?;
            remove(
                &mut self.subject_policies,
                r.subject_policies.iter().cloned(),
                "subject_policies",
            )?;
            remove(
                &mut self.ip_blocks,
                r.ip_blocks.iter().cloned(),
                "ip_blocks",
            )?;
            remove(
                &mut self.dlp_rules,
                r.dlp_rules.iter().cloned(),
                "dlp_rules",
            )?;
            remove(
                &mut self.suspensions,
                r.suspensions.iter().map(suspension_key),
                "suspensions",
            )?;
        }
        for p in &d.providers {
            self.providers
                .insert(p.name.clone(), strip_provider(p.clone()));
        }
        for m in &d.models {
            self.models.insert(m.alias.clone(), m.clone());
        }
        for k in &d.virtual_keys {
            self.virtual_keys.insert(k.id.clone(), k.clone());
        }
        for t in &d.revoked_tokens {
            self.revoked_tokens.insert(t.jti.clone(), t.clone());
        }
        for p in &d.subject_policies {
            self.subject_policies.insert(p.subject.clone(), p.clone());
        }
        for b in &d.ip_blocks {
            self.ip_blocks.insert(b.cidr.clone(), b.clone());
        }
        for r in &d.dlp_rules {
            self.dlp_rules.insert(r.name.clone(), r.clone());
        }
        for s in &d.suspensions {
            self.suspensions.insert(suspension_key(s), s.clone());
        }
        self.jwt = d.jwt.clone().map(strip_jwt);
        self.global_policy = d.global_policy;
        self.client_policy = d.client_policy.clone();
        self.lockdown = d.lockdown;
        self.version = d.version;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn random_state(rng: &mut StdRng, version: u64) -> SnapshotState {
        // Small key spaces, so that successive states share, change and drop entries.
        let mut s = pb::Snapshot {
            version,
            ..Default::default()
        };
        for i in 0..rng.random_range(0..4) {
            let keys = (0..rng.random_range(0..3))
                .map(|k| pb::UpstreamKey {
                    id: format!("key_{k}"),
                    fingerprint: format!("fp{}", rng.random_range(0..2)),
                    health_epoch: rng.random_range(0..2),
                    ..Default::default()
                })
                .collect();
            s.providers.push(pb::Provider {
                name: format!("p{i}"),
                base_url: format!("https://p{}.example/v1", rng.random_range(0..2)),
                keys,
                ..Default::default()
            });
        }
        for i in 0..rng.random_range(0..6) {
            s.models.push(pb::Model {
                alias: format!("m{}", i * rng.random_range(1..3)),
                provider: "p0".into(),
                weight: rng.random_range(0..3),
                ..Default::default()
            });
        }
        for i in 0..rng.random_range(0..30) {
            s.virtual_keys.push(pb::VirtualKey {
                id: format!("vk_{}", i * rng.random_range(1..3)),
                hash: format!("{:x}", rng.random_range(0..3)),
                models: vec!["*".into()],
                ..Default::default()
            });
        }
        for i in 0..rng.random_range(0..10) {
            s.revoked_tokens.push(pb::RevokedToken {
                jti: format!("jti{}", i + rng.random_range(0..5)),
                expires_at: 100,
            });
        }
        for i in 0..rng.random_range(0..4) {
            s.subject_policies.push(pb::SubjectPolicy {
                subject: format!("sub{i}"),
                policy: Some(pb::Policy {
                    rpm: rng.random_range(0..3),
                    ..Default::default()
                }),
                ..Default::default()
            });
            s.ip_blocks.push(pb::IpBlock {
                cidr: format!("10.0.0.{}", rng.random_range(0..4)),
                expires_at: rng.random_range(0..2),
            });
            s.dlp_rules.push(pb::DlpRule {
                name: format!("r{i}"),
                action: ["block", "flag"][rng.random_range(0..2)].into(),
                ..Default::default()
            });
            s.suspensions.push(pb::Suspension {
                subject: format!("s{}", rng.random_range(0..3)),
                prefix: String::new(),
            });
        }
        s.jwt = Some(pb::JwtSettings {
            issuer: format!("iss{}", rng.random_range(0..2)),
            ..Default::default()
        });
        s.global_policy = rng.random_bool(0.5).then(pb::Policy::default);
        s.client_policy = rng.random_bool(0.5).then(|| pb::ClientPolicy {
            allowed_ips: vec!["10.0.0.0/8".into()],
            cors: None,
        });
        s.lockdown = rng.random_bool(0.2);
        SnapshotState::from_full(&s)
    }

    #[test]
    fn applying_the_diff_gives_the_new_state_over_random_sequences() {
        let mut rng = StdRng::seed_from_u64(0x5eed_de17a);
        for _ in 0..300 {
            let mut held = random_state(&mut rng, 1);
            for version in 2..8 {
                let next = random_state(&mut rng, version);
                let delta = held.diff(&next);
                held.apply(&delta).unwrap();
                assert_eq!(held, next);
                // The full snapshot of a state is that state again.
                assert_eq!(SnapshotState::from_full(&next.to_full()), next);
            }
        }
    }

    #[test]
    fn a_delta_carries_only_changes() {
        let mut rng = StdRng::seed_from_u64(7);
        let v1 = random_state(&mut rng, 1);
        let mut v2 = v1.clone();
        v2.version = 2;
        v2.virtual_keys.insert(
            "vk_new".into(),
            pb::VirtualKey {
                id: "vk_new".into(),
                ..Default::default()
            },
        );
        let d = v1.diff(&v2);
        assert_eq!(d.base_version, 1);
        assert_eq!(d.virtual_keys.len(), 1);
        assert!(d.providers.is_empty() && d.models.is_empty());
        assert_eq!(
            d.removed.unwrap_or_default(),
            pb::SnapshotRemovals::default()
        );
    }

    #[test]
    fn a_delta_on_another_base_or_removing_the_unknown_is_refused() {
        let v1 = SnapshotState {
            version: 3,
            ..Default::default()
        };
        let mut d = v1.diff(&SnapshotState {
            version: 4,
            ..Default::default()
        });
        d.base_version = 2;
        assert_eq!(
            v1.clone().apply(&d),
            Err(DeltaError::BaseMismatch { base: 2, held: 3 })
        );
        d.base_version = 3;
        d.removed = Some(pb::SnapshotRemovals {
            virtual_keys: vec!["vk_gone".into()],
            ..Default::default()
        });
        assert!(matches!(
            v1.clone().apply(&d),
            Err(DeltaError::UnknownRemoval { .. })
        ));
    }
}
