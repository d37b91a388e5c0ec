//! Authentication and authorization of client requests. A credential comes from
//! `Authorization: Bearer …` or `x-api-key` ([`credential`]: one of each at most, and the
//! same credential when both are sent); JWTs are verified against the snapshot's keys
//! and revocation list, virtual keys are format-checked (checksum) and then looked up by
//! their HMAC. Every failure looks the same to the caller (401, one message); the reason
//! goes to the log.

use std::collections::HashSet;

use axum::http::{HeaderMap, HeaderValue, header};
use secrecy::ExposeSecret as _;
use warden_core::credential::{self, Kind};
use warden_core::jwt::Scope;

use crate::compiled::Snapshot;
use crate::error::ApiError;

/// Who is calling and what they may do.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `jwt:<sub>` or `vkey:<id obfuscated>` — safe to log; the audit event's actor.
    pub id: String,
    /// The credential used, obfuscated (`vk_1234****cdef`, or `tok-…` for a JWT's id).
    pub credential: String,
    pub scopes: HashSet<Scope>,
    /// Allowed aliases; contains `*` for all.
    pub models: Vec<String>,
    /// The limits attached to this credential (virtual key) or subject (JWT), if any.
    pub limits: Option<crate::limits::Scope>,
    /// Suspended (`wardenctl credentials suspend`): authenticated, but refused.
    pub suspended: bool,
    /// `vkey:<id>` or `sub:<subject>`: whom credential-scoped DLP rules name.
    pub owner: String,
    /// The credential's own IP and origin lists (virtual key, or JWT subject), if any.
    pub access: Option<std::sync::Arc<crate::access::CredentialAccess>>,
}

impl Principal {
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(ApiError::missing_scope(scope.as_str()))
        }
    }

    pub fn may_use(&self, alias: &str) -> bool {
        self.models.iter().any(|m| m == "*" || m == alias)
    }
}

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
/// [`ApiError::unauthenticated`], the same for every reason.
pub fn authenticate(snapshot: &Snapshot, headers: &HeaderMap) -> Result<Principal, AuthFailure> {
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

fn check(snapshot: &Snapshot, headers: &HeaderMap) -> Result<Principal, &'static str> {
    let token = credential(headers)?;
    if token.is_empty() || token.len() > warden_core::jwt::MAX_TOKEN_BYTES {
        return Err("malformed_credential");
    }
    if credential::kind_of(token) == Some(Kind::VirtualKey) {
        credential::check_format(Kind::VirtualKey, token).map_err(|_| "vkey_bad_format")?;
        let hash = credential::hash_str(snapshot.pepper.expose_secret(), token);
        let key = snapshot.virtual_keys.get(&hash).ok_or("vkey_unknown")?;
        if !credential::hashes_equal(&key.hash, &hash) {
            return Err("vkey_unknown");
        }
        if key.expires_at != 0 && key.expires_at <= warden_core::unix_now() {
            return Err("vkey_expired");
        }
        let credential = warden_core::fingerprint::obfuscate(&key.id);
        return Ok(Principal {
            owner: format!("vkey:{}", key.id),
            id: format!("vkey:{credential}"),
            credential,
            scopes: key.scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
            models: key.models.clone(),
            limits: Some(crate::limits::Scope {
                id: format!("vkey:{}", key.id),
                policy: key.policy,
            }),
            suspended: snapshot.incident.virtual_key_suspended(&key.id),
            access: key.access.clone(),
        });
    }
    if credential::kind_of(token).is_some() {
        // An admin or node credential is never a client credential.
        return Err("wrong_credential_kind");
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
    Ok(Principal {
        owner: format!("sub:{}", claims.sub),
        id: format!("jwt:{}", claims.sub),
        credential: warden_core::fingerprint::obfuscate(&format!("tok-{}", claims.jti)),
        scopes: claims.scopes(),
        suspended: snapshot.incident.subject_suspended(&claims.sub),
        access: snapshot.subject_access.get(&claims.sub).cloned(),
        models: claims.models,
        limits,
    })
}

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

    #[test]
    fn allow_list() {
        let p = Principal {
            id: "x".into(),
            credential: "tok-****".into(),
            scopes: HashSet::new(),
            models: vec!["a".into()],
            limits: None,
            suspended: false,
            owner: String::new(),
            access: None,
        };
        assert!(p.may_use("a"));
        assert!(!p.may_use("b"));
        assert!(p.require(Scope::Write).is_err());
    }
}
