//! [`super::authenticate`] against compiled snapshots: principals built per snapshot, and
//! the verified-JWT cache refusing at once what a new snapshot revokes or suspends.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue};
use secrecy::{ExposeSecret as _, SecretBox, SecretString};
use warden_core::jwt::{Claims, KeyMaterial, Scope, SigningAlgorithm};
use warden_core::seal::Field;
use warden_proto::sync::v1 as pb;

use super::{authenticate, jwt_cache};
use crate::compiled::{SecretSource, Snapshot, SnapshotError};
use crate::upstream::clients::UpstreamClients;

const PEPPER: [u8; 32] = [7; 32];

/// Secrets in the clear: only the pepper is asked for (the JWT key is EdDSA, public).
struct Clear;

impl SecretSource for Clear {
    fn open(
        &self,
        _version: u64,
        _field: Field<'_>,
        _sealed: Option<pb::SealedSecret>,
    ) -> Result<SecretBox<Vec<u8>>, SnapshotError> {
        Ok(SecretBox::new(Box::new(PEPPER.to_vec())))
    }
}

/// What differs between the snapshots of a test.
#[derive(Default)]
struct Change {
    revoked: Vec<&'static str>,
    suspended: Vec<pb::Suspension>,
    vkey_scopes: Vec<&'static str>,
    subject_rpm: u64,
}

struct Fixture {
    key: KeyMaterial,
    vkey: SecretString,
}

impl Fixture {
    fn new() -> Self {
        warden_core::install_crypto_providers();
        Self {
            key: KeyMaterial::generate("k1".into(), SigningAlgorithm::EdDSA).unwrap(),
            vkey: warden_core::credential::generate(warden_core::credential::Kind::VirtualKey),
        }
    }

    fn snapshot(&self, version: u64, c: Change) -> Snapshot {
        let s = pb::Snapshot {
            version,
            jwt: Some(pb::JwtSettings {
                issuer: "warden".into(),
                audience: "warden".into(),
                keys: vec![pb::JwtVerificationKey {
                    kid: "k1".into(),
                    algorithm: "EdDSA".into(),
                    key: self.key.verification.expose_secret().clone(),
                    sealed_key: None,
                }],
                leeway_seconds: 0,
            }),
            virtual_keys: vec![pb::VirtualKey {
                id: "vk_0123456789abcdef".into(),
                hash: warden_core::credential::hash(&PEPPER, &self.vkey),
                owner: "team-a".into(),
                models: vec!["*".into()],
                scopes: c.vkey_scopes.iter().map(|s| (*s).to_owned()).collect(),
                policy: Some(pb::Policy {
                    rpm: 60 * version,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            revoked_tokens: c
                .revoked
                .iter()
                .map(|jti| pb::RevokedToken {
                    jti: (*jti).to_owned(),
                    expires_at: 4_000_000_000,
                })
                .collect(),
            suspensions: c.suspended,
            subject_policies: (c.subject_rpm > 0)
                .then(|| pb::SubjectPolicy {
                    subject: "alice".into(),
                    policy: Some(pb::Policy {
                        rpm: c.subject_rpm,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            sealed_vkey_pepper: Some(pb::SealedSecret::default()),
            ..Default::default()
        };
        let clients = UpstreamClients::new(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(1),
            &crate::egress::EgressSettings::default(),
        )
        .unwrap();
        Snapshot::compile_with(s, &Clear, &clients).unwrap()
    }

    fn jwt(&self, jti: &str, exp: i64) -> SecretString {
        let now = warden_core::unix_now();
        self.key
            .sign(&Claims {
                iss: "warden".into(),
                sub: "alice".into(),
                aud: "warden".into(),
                exp,
                nbf: Some(now - 10),
                iat: now - 10,
                jti: jti.into(),
                scope: "read write".into(),
                models: vec!["gpt-4o".into()],
            })
            .unwrap()
    }
}

fn bearer(token: &SecretString) -> HeaderMap {
    let mut h = HeaderMap::new();
    let value = format!("Bearer {}", token.expose_secret());
    h.insert("authorization", HeaderValue::from_str(&value).unwrap());
    h
}

fn refusal(snapshot: &Snapshot, token: &SecretString) -> &'static str {
    authenticate(snapshot, &bearer(token)).unwrap_err().reason
}

fn in_an_hour() -> i64 {
    warden_core::unix_now() + 3600
}

#[test]
fn a_jwt_is_verified_once_per_snapshot_and_reads_as_before() {
    let f = Fixture::new();
    let snapshot = f.snapshot(1, Change::default());
    let token = f.jwt("jti-0123456789abcdef", in_an_hour());
    let first = authenticate(&snapshot, &bearer(&token)).unwrap();
    assert_eq!(snapshot.verified_jwts.len(), 1);
    let again = authenticate(&snapshot, &bearer(&token)).unwrap();
    assert!(Arc::ptr_eq(&first, &again), "the second request is a hit");
    // What the audit event and the limiter read, as before the cache.
    assert_eq!(first.id, "jwt:alice");
    assert_eq!(first.owner, "sub:alice");
    assert_eq!(first.credential, "tok-jti-****cdef");
    assert_eq!(first.models, ["gpt-4o"]);
    assert!(first.scopes.contains(&Scope::Write) && !first.scopes.contains(&Scope::Admin));
    assert!(first.limits.is_none() && !first.suspended);
}

#[test]
fn a_cached_jwt_is_refused_at_once_when_its_jti_is_revoked() {
    let f = Fixture::new();
    let token = f.jwt("jti-revoked", in_an_hour());
    let before = f.snapshot(1, Change::default());
    authenticate(&before, &bearer(&token)).unwrap();
    let after = f.snapshot(
        2,
        Change {
            revoked: vec!["jti-revoked"],
            ..Change::default()
        },
    );
    assert_eq!(refusal(&after, &token), "jwt_revoked");
    assert!(
        after.verified_jwts.is_empty(),
        "a revoked token is not cached"
    );
    // Even a hit in a cache that outlived its revocation list is checked against it.
    after.verified_jwts.insert(
        jwt_cache::digest(token.expose_secret()),
        authenticate(&before, &bearer(&token)).unwrap(),
        in_an_hour(),
        "jti-revoked",
        warden_core::unix_now(),
    );
    assert_eq!(refusal(&after, &token), "jwt_revoked");
}

#[test]
fn a_cached_jwt_reflects_its_subject_suspended_or_limited_in_the_next_snapshot() {
    let f = Fixture::new();
    let token = f.jwt("jti-s", in_an_hour());
    let before = f.snapshot(1, Change::default());
    assert!(!authenticate(&before, &bearer(&token)).unwrap().suspended);
    let suspended = f.snapshot(
        2,
        Change {
            suspended: vec![pb::Suspension {
                subject: "alice".into(),
                prefix: String::new(),
            }],
            ..Change::default()
        },
    );
    let p = authenticate(&suspended, &bearer(&token)).unwrap();
    assert!(p.suspended, "refused by intake::refuse_if_suspended");
    let limited = f.snapshot(
        3,
        Change {
            subject_rpm: 5,
            ..Change::default()
        },
    );
    let p = authenticate(&limited, &bearer(&token)).unwrap();
    let limits = p.limits.as_ref().unwrap();
    assert_eq!((limits.id.as_str(), limits.policy.rpm), ("sub:alice", 5));
}

#[test]
fn a_cache_hit_past_the_expiry_is_refused() {
    let f = Fixture::new();
    let snapshot = f.snapshot(1, Change::default());
    let token = f.jwt("jti-e", in_an_hour());
    let p = authenticate(&snapshot, &bearer(&token)).unwrap();
    // The same token, its cached verification now past its `exp`: refused without
    // verifying again (the signature itself would still pass).
    let now = warden_core::unix_now();
    snapshot.verified_jwts.insert(
        jwt_cache::digest(token.expose_secret()),
        p,
        now - 1,
        "jti-e",
        now - 100,
    );
    assert_eq!(refusal(&snapshot, &token), "jwt_expired");
    // A token that has expired is refused by the verifier, and not cached.
    let fresh = f.snapshot(2, Change::default());
    let expired = f.jwt("jti-old", now - 5);
    assert_eq!(refusal(&fresh, &expired), "jwt_expired");
    assert!(fresh.verified_jwts.is_empty());
}

#[test]
fn a_token_that_fails_verification_is_not_cached() {
    let f = Fixture::new();
    let snapshot = f.snapshot(1, Change::default());
    let other = Fixture::new();
    let forged = other.jwt("jti-f", in_an_hour());
    assert_eq!(refusal(&snapshot, &forged), "jwt_bad_signature");
    assert_eq!(refusal(&snapshot, &forged), "jwt_bad_signature");
    let garbage = SecretString::from("not.a.jwt");
    assert_eq!(refusal(&snapshot, &garbage), "jwt_malformed");
    assert!(snapshot.verified_jwts.is_empty());
}

#[test]
fn a_virtual_key_principal_is_built_with_its_snapshot() {
    let f = Fixture::new();
    let before = f.snapshot(
        1,
        Change {
            vkey_scopes: vec!["read"],
            ..Change::default()
        },
    );
    let a = authenticate(&before, &bearer(&f.vkey)).unwrap();
    let b = authenticate(&before, &bearer(&f.vkey)).unwrap();
    assert!(Arc::ptr_eq(&a, &b), "shared, not rebuilt per request");
    assert_eq!(a.id, "vkey:vk_0123****cdef");
    assert_eq!(a.credential, "vk_0123****cdef");
    assert_eq!(a.owner, "vkey:vk_0123456789abcdef");
    assert!(a.require(Scope::Read).is_ok() && a.require(Scope::Write).is_err());
    assert_eq!(a.limits.as_ref().map(|l| l.policy.rpm), Some(60));
    assert!(!a.suspended);
    // The next snapshot's policy, scopes and suspension.
    let after = f.snapshot(
        2,
        Change {
            vkey_scopes: vec!["read", "write"],
            suspended: vec![pb::Suspension {
                subject: String::new(),
                prefix: "team-".into(),
            }],
            ..Change::default()
        },
    );
    let c = authenticate(&after, &bearer(&f.vkey)).unwrap();
    assert!(c.require(Scope::Write).is_ok());
    assert_eq!(c.limits.as_ref().map(|l| l.policy.rpm), Some(120));
    assert!(c.suspended);
    // A wrong key of the right shape is unknown.
    let other = warden_core::credential::generate(warden_core::credential::Kind::VirtualKey);
    assert_eq!(refusal(&after, &other), "vkey_unknown");
}
