//! Authentication and authorization of client requests. A credential comes from
//! `Authorization: Bearer …` or `x-api-key` ([`credential`]: one of each at most, and the
//! same credential when both are sent); JWTs are verified against the snapshot's keys
//! and revocation list, virtual keys are format-checked (checksum) and then looked up by
//! their HMAC. Every failure looks the same to the caller (401, one message); the reason
//! goes to the log.
//!
//! Nothing a snapshot can settle is worked out per request: a virtual key's [`Principal`]
//! is built when the snapshot is compiled, so a request does the HMAC (its key prepared
//! once too), one lookup, the constant-time compare and the expiry check, and clones an
//! `Arc`; a JWT is verified once per snapshot ([`jwt_cache`]), a hit costing a SHA-256 of
//! the token, one lookup and the expiry and revocation checks.

pub mod jwt_cache;

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, header};
use warden_core::credential::{self, Kind};

use crate::compiled::Snapshot;
pub use crate::principal::{Principal, Scopes};
use jwt_cache::Lookup;

/// The request's credential, or why there is none: `missing_credential`, or
/// `ambiguous_credential` for two `Authorization` headers, two `x-api-key` headers, or one
/// of each carrying different credentials. Which of two credentials a server reads is a
/// choice that a client, or a proxy in between that reads the other one, could turn to its
/// advantage; so it is refused like any other failed authentication (the same 401, and a
/// failed login of the address).
pub fn credential(headers: &HeaderMap) -> Result<&str, &'static str> {
    let single = |name: header::HeaderName| {
        let mut all = headers.get_all(name).iter();
        match (all.next(), all.next()) {
            (_, Some(_)) => Err("ambiguous_credential"),
            (first, None) => Ok(first),
        }
    };
    let authorization = single(header::AUTHORIZATION)?;
    let api_key = single(header::HeaderName::from_static("x-api-key"))?;
    if let (Some(a), Some(k)) = (authorization, api_key)
        && bearer(a) != k.to_str().ok().map(str::trim)
    {
        return Err("ambiguous_credential");
    }
    presented(headers).ok_or("missing_credential")
}

/// The credential of a bearer `Authorization` value.
fn bearer(value: &HeaderValue) -> Option<&str> {
    let (scheme, rest) = value.to_str().ok()?.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// The presented credential, if any (the first of each header: see [`credential`]).
pub fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        return bearer(v);
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// A failed authentication, for logs and audit: the reason code and a fingerprint of what
/// was presented (never the credential itself).
#[derive(Debug, Clone)]
pub struct AuthFailure {
    pub reason: &'static str,
    pub presented: String,
}

/// Authenticates the request's credential against `snapshot`. On failure the caller answers
/// [`crate::error::ApiError::unauthenticated`], the same for every reason.
pub fn authenticate(
    snapshot: &Snapshot,
    headers: &HeaderMap,
) -> Result<Arc<Principal>, AuthFailure> {
    match check(snapshot, headers) {
        Ok(p) => Ok(p),
        Err(reason) => {
            let presented = presented(headers).map_or_else(
                || "-".to_owned(),
                |p| format!("fp:{}", warden_core::fingerprint::of(p.as_bytes())),
            );
            tracing::warn!(reason, credential = %presented, "client authentication failed");
            Err(AuthFailure { reason, presented })
        }
    }
}

fn check(snapshot: &Snapshot, headers: &HeaderMap) -> Result<Arc<Principal>, &'static str> {
    let token = credential(headers)?;
    if token.is_empty() || token.len() > warden_core::jwt::MAX_TOKEN_BYTES {
        return Err("malformed_credential");
    }
    match credential::kind_of(token) {
        Some(Kind::VirtualKey) => virtual_key(snapshot, token),
        // An admin or node credential is never a client credential.
        Some(_) => Err("wrong_credential_kind"),
        None => jwt(snapshot, token),
    }
}

/// A virtual key's principal, built with the snapshot.
fn virtual_key(snapshot: &Snapshot, token: &str) -> Result<Arc<Principal>, &'static str> {
    credential::check_format(Kind::VirtualKey, token).map_err(|_| "vkey_bad_format")?;
    let mut buf = [0u8; 64];
    let hash = credential::hash_hex_into(&snapshot.vkey_hmac, token, &mut buf);
    let key = snapshot.virtual_keys.get(hash).ok_or("vkey_unknown")?;
    if !credential::hashes_equal(&key.hash, hash) {
        return Err("vkey_unknown");
    }
    if key.expires_at != 0 && key.expires_at <= warden_core::unix_now() {
        return Err("vkey_expired");
    }
    Ok(Arc::clone(&key.principal))
}

/// A JWT's principal: from the snapshot's cache of verified tokens, or verified now (and
/// then cached, unless revoked).
fn jwt(snapshot: &Snapshot, token: &str) -> Result<Arc<Principal>, &'static str> {
    let digest = jwt_cache::digest(token);
    let now = warden_core::unix_now();
    match snapshot
        .verified_jwts
        .get(&digest, now, &snapshot.revoked_jtis)
    {
        Lookup::Hit(principal) => return Ok(principal),
        Lookup::Expired => return Err("jwt_expired"),
        Lookup::Revoked => return Err("jwt_revoked"),
        Lookup::Miss => {}
    }
    let claims = snapshot.verifier.verify(token).map_err(|e| e.reason())?;
    if snapshot.revoked_jtis.contains(&claims.jti) {
        return Err("jwt_revoked");
    }
    let limits = snapshot
        .subject_policies
        .get(&claims.sub)
        .map(|policy| crate::limits::Scope {
            id: format!("sub:{}", claims.sub),
            policy: *policy,
        });
    let principal = Arc::new(Principal {
        owner: format!("sub:{}", claims.sub),
        id: format!("jwt:{}", claims.sub),
        credential: warden_core::fingerprint::obfuscate(&format!("tok-{}", claims.jti)),
        scopes: Scopes::parse(claims.scope.split_whitespace()),
        suspended: snapshot.incident.subject_suspended(&claims.sub),
        access: snapshot.subject_access.get(&claims.sub).cloned(),
        models: claims.models,
        limits,
    });
    let accepted_until = snapshot.verifier.accepted_until(claims.exp);
    snapshot.verified_jwts.insert(
        digest,
        Arc::clone(&principal),
        accepted_until,
        &claims.jti,
        now,
    );
    Ok(principal)
}

#[cfg(test)]
mod snapshot_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn reads_bearer_and_x_api_key() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer abc"));
        assert_eq!(presented(&h), Some("abc"));
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("bearer  abc "));
        assert_eq!(presented(&h), Some("abc"));
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("wk_x"));
        assert_eq!(presented(&h), Some("wk_x"));
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Basic abc"));
        assert_eq!(presented(&h), None);
    }

    #[test]
    fn two_credentials_are_refused_unless_they_agree() {
        let mut h = HeaderMap::new();
        h.append("authorization", HeaderValue::from_static("Bearer a"));
        h.append("authorization", HeaderValue::from_static("Bearer a"));
        assert_eq!(credential(&h), Err("ambiguous_credential"));
        let mut h = HeaderMap::new();
        h.append("x-api-key", HeaderValue::from_static("a"));
        h.append("x-api-key", HeaderValue::from_static("b"));
        assert_eq!(credential(&h), Err("ambiguous_credential"));
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer a"));
        h.insert("x-api-key", HeaderValue::from_static("b"));
        assert_eq!(credential(&h), Err("ambiguous_credential"));
        h.insert("x-api-key", HeaderValue::from_static(" a"));
        assert_eq!(credential(&h), Ok("a"));
        h.insert("authorization", HeaderValue::from_static("Basic a"));
        assert_eq!(credential(&h), Err("ambiguous_credential"));
        assert_eq!(credential(&HeaderMap::new()), Err("missing_credential"));
    }
}
