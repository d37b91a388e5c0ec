//! [`Principal`]: who is calling and what they may do, as the request path reads it.
//!
//! A principal depends only on the credential and the snapshot in force, so it is built
//! once per snapshot and shared (`Arc<Principal>`): a virtual key's when the snapshot is
//! compiled ([`crate::compiled`]), a JWT's on its first verification under that snapshot
//! ([`crate::auth::jwt_cache`]). A request clones the `Arc`, never the strings.

use std::sync::Arc;

use warden_core::jwt::Scope;

use crate::access::CredentialAccess;
use crate::error::ApiError;
use crate::limits::Policy;

/// Who is calling and what they may do.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `jwt:<sub>` or `vkey:<id obfuscated>` — safe to log; the audit event's actor.
    pub id: String,
    /// The credential used, obfuscated (`vk_1234****cdef`, or `tok-…` for a JWT's id).
    pub credential: String,
    pub scopes: Scopes,
    /// Allowed aliases; contains `*` for all.
    pub models: Vec<String>,
    /// The limits attached to this credential (virtual key) or subject (JWT), if any.
    pub limits: Option<crate::limits::Scope>,
    /// Suspended (`wardenctl credentials suspend`): authenticated, but refused.
    pub suspended: bool,
    /// `vkey:<id>` or `sub:<subject>`: whom credential-scoped DLP rules name.
    pub owner: String,
    /// The credential's own IP and origin lists (virtual key, or JWT subject), if any.
    pub access: Option<Arc<CredentialAccess>>,
}

impl Principal {
    /// The principal of virtual key `id` (audit actor `vkey:<id obfuscated>`, limits and
    /// DLP owner `vkey:<id>`), with the scope names it was issued with (unknown names are
    /// ignored).
    pub fn virtual_key(
        id: &str,
        scopes: &[String],
        models: Vec<String>,
        policy: Policy,
        access: Option<Arc<CredentialAccess>>,
        suspended: bool,
    ) -> Self {
        let credential = warden_core::fingerprint::obfuscate(id);
        let owner = format!("vkey:{id}");
        Self {
            id: format!("vkey:{credential}"),
            credential,
            scopes: Scopes::parse(scopes.iter().map(String::as_str)),
            models,
            limits: Some(crate::limits::Scope {
                id: owner.clone(),
                policy,
            }),
            suspended,
            owner,
            access,
        }
    }

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

/// A set of [`Scope`]s as a bitset: built once with the principal, read with one mask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    /// The scopes named in `names`; unknown names are ignored.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        names
            .into_iter()
            .filter_map(Scope::parse)
            .fold(Self::default(), Self::with)
    }

    /// This set and `scope`.
    #[must_use]
    pub fn with(self, scope: Scope) -> Self {
        Self(self.0 | Self::bit(scope))
    }

    /// Whether `scope` is in the set (by reference, like `HashSet::contains`).
    pub fn contains(&self, scope: &Scope) -> bool {
        self.0 & Self::bit(*scope) != 0
    }

    fn bit(scope: Scope) -> u8 {
        match scope {
            Scope::Read => 1,
            Scope::Write => 1 << 1,
            Scope::Admin => 1 << 2,
            Scope::Audit => 1 << 3,
            Scope::ResponsesState => 1 << 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list() {
        let p = Principal {
            id: "x".into(),
            credential: "tok-****".into(),
            scopes: Scopes::default(),
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

    #[test]
    fn scopes_hold_exactly_what_was_named() {
        let all = [
            Scope::Read,
            Scope::Write,
            Scope::Admin,
            Scope::Audit,
            Scope::ResponsesState,
        ];
        for (i, scope) in all.iter().enumerate() {
            let one = Scopes::parse([scope.as_str()]);
            for (j, other) in all.iter().enumerate() {
                assert_eq!(one.contains(other), i == j, "{scope:?} {other:?}");
            }
        }
        let some = Scopes::parse(["read", "bogus", "responses_state", ""]);
        assert!(some.contains(&Scope::Read) && some.contains(&Scope::ResponsesState));
        assert!(!some.contains(&Scope::Write) && !some.contains(&Scope::Admin));
    }

    #[test]
    fn a_virtual_key_principal_reads_as_before() {
        let p = Principal::virtual_key(
            "vk_0123456789abcdef",
            &["read".into(), "write".into()],
            vec!["*".into()],
            Policy::default(),
            None,
            false,
        );
        assert_eq!(p.id, "vkey:vk_0123****cdef");
        assert_eq!(p.credential, "vk_0123****cdef");
        assert_eq!(p.owner, "vkey:vk_0123456789abcdef");
        assert_eq!(
            p.limits.as_ref().map(|l| l.id.as_str()),
            Some("vkey:vk_0123456789abcdef")
        );
        assert!(p.require(Scope::Write).is_ok() && p.require(Scope::Admin).is_err());
    }
}
