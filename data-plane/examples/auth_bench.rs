//! What authenticating one request costs on the node: `auth::authenticate` against a
//! compiled snapshot of 1,000 virtual keys, for a virtual key and for a JWT (EdDSA, the
//! default), 100,000 calls each, in rounds interleaved so that the machine's load falls on
//! both alike; prints ns per call, the median and spread of the rounds.
//!
//! `cargo run --release -p warden-data-plane --example auth_bench [-- ROUNDS]`
//!
//! It uses only what the node exposes (`Snapshot::compile_with`, `auth::authenticate`), so
//! the same file measures a build before and after a change to the auth path.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a measurement tool"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};
use secrecy::{ExposeSecret as _, SecretBox, SecretString};
use warden_core::credential::{self, Kind};
use warden_core::jwt::{Claims, KeyMaterial, SigningAlgorithm};
use warden_core::seal::Field;
use warden_data_plane::compiled::{SecretSource, Snapshot, SnapshotError};
use warden_data_plane::upstream::clients::UpstreamClients;
use warden_proto::sync::v1 as pb;

const PEPPER: [u8; 32] = [7; 32];
const CALLS: u32 = 100_000;

/// The snapshot's secrets in the clear: only the pepper is asked for.
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

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h
}

/// ns per call of `authenticate` with `headers`, over [`CALLS`] calls.
fn time(snapshot: &Snapshot, headers: &HeaderMap) -> f64 {
    let started = Instant::now();
    for _ in 0..CALLS {
        black_box(warden_data_plane::auth::authenticate(snapshot, black_box(headers)).unwrap());
    }
    started.elapsed().as_nanos() as f64 / f64::from(CALLS)
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(5, |r| r.parse().expect("ROUNDS"));
    warden_core::install_crypto_providers();
    let signing = KeyMaterial::generate("k1".into(), SigningAlgorithm::EdDSA).unwrap();
    let keys: Vec<SecretString> = (0..1_000)
        .map(|_| credential::generate(Kind::VirtualKey))
        .collect();
    let snapshot = pb::Snapshot {
        version: 1,
        jwt: Some(pb::JwtSettings {
            issuer: "warden".into(),
            audience: "warden".into(),
            keys: vec![pb::JwtVerificationKey {
                kid: "k1".into(),
                algorithm: "EdDSA".into(),
                key: signing.verification.expose_secret().clone(),
                sealed_key: None,
            }],
            leeway_seconds: 30,
        }),
        virtual_keys: keys
            .iter()
            .enumerate()
            .map(|(i, k)| pb::VirtualKey {
                id: format!("vk_{i:016}"),
                hash: credential::hash(&PEPPER, k),
                owner: "bench".into(),
                models: vec!["*".into()],
                scopes: vec!["read".into(), "write".into()],
                policy: Some(pb::Policy {
                    rpm: 1_000_000,
                    max_parallel: 64,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        subject_policies: vec![pb::SubjectPolicy {
            subject: "svc-bench".into(),
            policy: Some(pb::Policy {
                rpm: 1_000_000,
                ..Default::default()
            }),
            ..Default::default()
        }],
        sealed_vkey_pepper: Some(pb::SealedSecret::default()),
        ..Default::default()
    };
    let clients = UpstreamClients::new(
        Duration::from_secs(1),
        Duration::from_secs(1),
        &warden_data_plane::egress::EgressSettings::default(),
    )
    .unwrap();
    let snapshot = Snapshot::compile_with(snapshot, &Clear, &clients).unwrap();
    let now = warden_core::unix_now();
    let jwt = signing
        .sign(&Claims {
            iss: "warden".into(),
            sub: "svc-bench".into(),
            aud: "warden".into(),
            exp: now + 3600,
            nbf: Some(now),
            iat: now,
            jti: "jti-0123456789abcdef".into(),
            scope: "read write".into(),
            models: vec!["*".into()],
        })
        .unwrap();
    let vkey = bearer(keys[500].expose_secret());
    let jwt = bearer(jwt.expose_secret());
    let (mut v, mut j) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        v.push(time(&snapshot, &vkey));
        j.push(time(&snapshot, &jwt));
    }
    for (name, mut ns) in [("virtual key", v), ("jwt (EdDSA)", j)] {
        ns.sort_by(f64::total_cmp);
        println!(
            "authenticate {name:<12} {:>9.0} ns/call median, {:.0}–{:.0} over {rounds} rounds of {CALLS}",
            ns[ns.len() / 2],
            ns[0],
            ns[ns.len() - 1],
        );
    }
}
