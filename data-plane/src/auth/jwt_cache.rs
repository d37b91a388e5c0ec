//! The verified-JWT cache of one snapshot: a JWT verified once is not verified again (its
//! signature check costs tens of microseconds, the rest of a request a few) while the
//! snapshot it was verified under is in force.
//!
//! **Revocation-aware by construction.** The cache is a field of the compiled snapshot
//! ([`crate::compiled::Snapshot::verified_jwts`]), so a new snapshot — a revoked `jti`, a
//! suspended subject, a changed subject policy or access list, rotated keys — starts with
//! an empty cache, and a cached principal carries exactly what its snapshot says. Every hit
//! still checks the token's expiry (plus the verifier's leeway, as a fresh verification
//! would) against the clock and its `jti` against the snapshot's revocation list. Only
//! tokens that verified, are not revoked and have not expired are inserted.
//!
//! **Never the token.** Entries are keyed by the token's SHA-256, and hold the principal
//! (obfuscated credential, subject), the `jti` and the expiry — nothing a caller could
//! present.
//!
//! **Bounded, without a global lock.** [`CAPACITY`] entries in [`SHARDS`] shards, each a
//! `RwLock<HashMap>` picked by the digest's first byte: hits (the steady state) take one
//! shard's read lock, so threads rarely meet; a miss already paid for a signature check,
//! so its write lock is cheap beside it. A full shard first drops its expired entries,
//! then, if still full, is cleared: the simplest bound that holds exactly, and a token
//! dropped is only verified again. A maintained concurrent cache (`quick_cache`, `moka`)
//! would evict more cleverly, but is not in the lock file; with the node's clients counted
//! in hundreds or thousands, [`CAPACITY`] is rarely reached.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, PoisonError, RwLock};

use crate::principal::Principal;

/// Most entries one snapshot's cache holds.
pub const CAPACITY: usize = 10_000;
/// Shards of the cache (a power of two up to 256: picked by the digest's first byte).
pub const SHARDS: usize = 16;

/// SHA-256 of a token: the cache key.
pub type Digest = [u8; 32];

/// The digest a token is cached under.
pub fn digest(token: &str) -> Digest {
    let mut out = [0u8; 32];
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    out.copy_from_slice(d.as_ref());
    out
}

/// What the cache says of a token.
#[derive(Debug)]
pub enum Lookup {
    /// Verified under this snapshot, not expired, not revoked.
    Hit(Arc<Principal>),
    /// Verified, but now past its expiry (and leeway): refuse as expired.
    Expired,
    /// Verified, but its `jti` is on the snapshot's revocation list.
    Revoked,
    /// Not seen under this snapshot: verify it.
    Miss,
}

struct Entry {
    principal: Arc<Principal>,
    /// The last second (unix) it is accepted: `exp` plus the verifier's leeway.
    accepted_until: i64,
    jti: Box<str>,
}

/// Hashes a [`Digest`] by folding its bytes: they are already uniform, and not choosable
/// by a caller (that would take a SHA-256 preimage), so no keyed hash is needed.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
}

type Shard = HashMap<Digest, Entry, BuildHasherDefault<DigestHasher>>;

/// The verified JWTs of one snapshot (see the module doc).
pub struct VerifiedJwts {
    shards: Vec<RwLock<Shard>>,
    per_shard: usize,
}

/// Counts only: no subject or `jti` in a debug print.
impl std::fmt::Debug for VerifiedJwts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedJwts")
            .field("len", &self.len())
            .field("capacity", &(self.per_shard * SHARDS))
            .finish()
    }
}

impl Default for VerifiedJwts {
    fn default() -> Self {
        Self::with_capacity(CAPACITY)
    }
}

impl VerifiedJwts {
    /// A cache of at most `capacity` entries (rounded down to a multiple of [`SHARDS`],
    /// at least one per shard).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            per_shard: (capacity / SHARDS).max(1),
        }
    }

    fn shard(&self, digest: &Digest) -> &RwLock<Shard> {
        &self.shards[usize::from(digest[0]) % SHARDS]
    }

    /// The cached verification of the token of `digest`, judged at `now` against
    /// `revoked` (the snapshot's revoked `jti`s).
    pub fn get(&self, digest: &Digest, now: i64, revoked: &HashSet<String>) -> Lookup {
        // A poisoned shard holds whole entries (inserts do not panic midway): read on.
        let shard = self
            .shard(digest)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        match shard.get(digest) {
            None => Lookup::Miss,
            Some(e) if e.accepted_until < now => Lookup::Expired,
            Some(e) if !revoked.is_empty() && revoked.contains(&*e.jti) => Lookup::Revoked,
            Some(e) => Lookup::Hit(Arc::clone(&e.principal)),
        }
    }

    /// Caches a token that verified under this snapshot and is not revoked; one already
    /// expired at `now` is not kept.
    pub fn insert(
        &self,
        digest: Digest,
        principal: Arc<Principal>,
        accepted_until: i64,
        jti: &str,
        now: i64,
    ) {
        if accepted_until < now {
            return;
        }
        let mut shard = self
            .shard(&digest)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if shard.len() >= self.per_shard && !shard.contains_key(&digest) {
            shard.retain(|_, e| e.accepted_until >= now);
            if shard.len() >= self.per_shard {
                shard.clear();
            }
        }
        shard.insert(
            digest,
            Entry {
                principal,
                accepted_until,
                jti: jti.into(),
            },
        );
    }

    /// Entries held, expired ones included.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::Scopes;

    fn principal(sub: &str) -> Arc<Principal> {
        Arc::new(Principal {
            id: format!("jwt:{sub}"),
            credential: "tok-****".into(),
            scopes: Scopes::default(),
            models: Vec::new(),
            limits: None,
            suspended: false,
            owner: format!("sub:{sub}"),
            access: None,
        })
    }

    #[test]
    fn a_hit_is_judged_again_at_every_lookup() {
        let cache = VerifiedJwts::default();
        let d = digest("a.b.c");
        let none = HashSet::new();
        assert!(matches!(cache.get(&d, 100, &none), Lookup::Miss));
        cache.insert(d, principal("alice"), 200, "j1", 100);
        assert!(matches!(cache.get(&d, 200, &none), Lookup::Hit(p) if p.id == "jwt:alice"));
        assert!(matches!(cache.get(&d, 201, &none), Lookup::Expired));
        let revoked: HashSet<String> = ["j1".to_owned()].into();
        assert!(matches!(cache.get(&d, 150, &revoked), Lookup::Revoked));
        assert!(matches!(
            cache.get(&digest("a.b.d"), 150, &none),
            Lookup::Miss
        ));
    }

    #[test]
    fn an_expired_token_is_not_kept() {
        let cache = VerifiedJwts::default();
        cache.insert(digest("t"), principal("a"), 99, "j", 100);
        assert!(cache.is_empty());
    }

    #[test]
    fn the_cache_never_grows_past_its_bound() {
        let cache = VerifiedJwts::with_capacity(64);
        let none = HashSet::new();
        for i in 0..5_000 {
            let d = digest(&format!("token-{i}"));
            cache.insert(d, principal("a"), 1_000, "j", 0);
            assert!(cache.len() <= 64, "{} entries after {i}", cache.len());
            assert!(matches!(cache.get(&d, 0, &none), Lookup::Hit(_)));
        }
        // A full shard drops its expired entries before anything still valid.
        let cache = VerifiedJwts::with_capacity(SHARDS);
        let a = (0..)
            .map(|i| digest(&format!("x{i}")))
            .find(|d| usize::from(d[0]) % SHARDS == 0)
            .unwrap_or_default();
        let b = (0..)
            .map(|i| digest(&format!("y{i}")))
            .find(|d| usize::from(d[0]) % SHARDS == 0)
            .unwrap_or_default();
        cache.insert(a, principal("a"), 10, "ja", 0);
        cache.insert(b, principal("b"), 100, "jb", 50);
        assert!(matches!(cache.get(&a, 0, &none), Lookup::Miss));
        assert!(matches!(cache.get(&b, 50, &none), Lookup::Hit(_)));
    }

    #[test]
    fn the_key_is_a_digest_not_the_token() {
        let token = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhIn0.c2ln";
        let d = digest(token);
        assert_ne!(&d[..], &token.as_bytes()[..32]);
        assert_eq!(d, digest(token));
        let cache = VerifiedJwts::default();
        cache.insert(d, principal("a"), 10, "j", 0);
        let shown = format!("{cache:?}");
        assert!(
            !shown.contains(token) && !shown.contains("jwt:a"),
            "{shown}"
        );
    }
}
