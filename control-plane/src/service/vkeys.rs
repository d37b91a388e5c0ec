//! Virtual keys: long-lived client keys stored as their HMAC, created (with an optional
//! policy), revoked, and rotated with a grace period for the replaced secret.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use warden_core::audit_detail::Detail;
use warden_core::credential::{self, Kind};
use warden_core::unix_now;

use super::grants::{parse_models, parse_scopes};
use super::{Actor, ControlPlane, new_id};
use crate::domain::{Limits, PolicyTarget, Source, VirtualKeyRecord, validate_name};
use crate::error::ServiceError;

/// The longest grace period of a rotated virtual key.
const MAX_VKEY_GRACE: Duration = Duration::from_secs(30 * 86_400);

/// Longest text of a requested value kept in the audit row of a refused create.
const ASKED_MAX_CHARS: usize = 256;

/// A virtual key's owner: empty (none), or like a name (`validate_name`) with `@` also
/// allowed (`team@example.com`), up to 128 characters — no spaces or control characters,
/// which would forge lines in logs and tables.
fn validate_owner(owner: &str) -> Result<(), String> {
    if owner.len() > 128 {
        return Err("must be at most 128 characters".into());
    }
    if !owner
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/' | '@'))
    {
        return Err("may contain only letters, digits and . _ - : / @".into());
    }
    Ok(())
}

/// The `vkey.create` row of a created key: what it grants, whose it is, until when.
fn created_detail(k: &VirtualKeyRecord, ttl: Option<Duration>) -> Detail {
    Detail::new()
        .with("name", &k.name)
        .with("owner", &k.owner)
        .with("scopes", k.scopes.join(","))
        .with("models", k.models.join(","))
        .with_opt("ttl_s", ttl.filter(|t| !t.is_zero()).map(|t| t.as_secs()))
        .with("expires_at", k.expires_at)
}

/// The `vkey.create` row of a refused create: what was asked for (clipped).
fn asked_detail(
    name: &str,
    owner: &str,
    scopes: &[String],
    models: &[String],
    ttl: Option<Duration>,
) -> Detail {
    let clip = |s: String| s.chars().take(ASKED_MAX_CHARS).collect::<String>();
    Detail::new()
        .with("name", clip(name.to_owned()))
        .with("owner", clip(owner.to_owned()))
        .with("scopes", clip(scopes.join(",")))
        .with("models", clip(models.join(",")))
        .with_opt("ttl_s", ttl.filter(|t| !t.is_zero()).map(|t| t.as_secs()))
}

impl ControlPlane {
    /// Creates a virtual key (shown once; stored as its HMAC).
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per field of the admin request"
    )]
    pub async fn create_virtual_key(
        &self,
        actor: &Actor,
        name: &str,
        owner: &str,
        models: &[String],
        scopes: &[String],
        ttl: Option<Duration>,
        policy: Option<Limits>,
        access: crate::domain::AccessPolicy,
    ) -> Result<(SecretString, VirtualKeyRecord), ServiceError> {
        let id_of = |r: &Result<(SecretString, VirtualKeyRecord), ServiceError>| {
            r.as_ref().map(|(_, r)| r.id.clone()).unwrap_or_default()
        };
        let detail = |r: &Result<(SecretString, VirtualKeyRecord), ServiceError>| match r {
            Ok((_, k)) => created_detail(k, ttl),
            Err(_) => asked_detail(name, owner, scopes, models, ttl),
        };
        self.audited_with(actor, "vkey.create", id_of, detail, async {
            validate_name(name).map_err(|e| ServiceError::InvalidArgument(format!("name: {e}")))?;
            validate_owner(owner)
                .map_err(|e| ServiceError::InvalidArgument(format!("owner: {e}")))?;
            let scopes = parse_scopes(scopes)?;
            let models = parse_models(models)?;
            // Checked before the key exists, and stored before it is published: the key is
            // never live without its lists.
            let access = access
                .validated(&PolicyTarget::VirtualKey(String::new()))
                .map_err(ServiceError::InvalidArgument)?;
            let now = unix_now();
            let expires_at = match ttl {
                Some(t) if !t.is_zero() => {
                    now.saturating_add(i64::try_from(t.as_secs()).unwrap_or(i64::MAX))
                }
                _ => 0,
            };
            let secret = credential::generate(Kind::VirtualKey);
            let record = VirtualKeyRecord {
                id: new_id("vk_"),
                hash: credential::hash(self.pepper.expose_secret(), &secret),
                name: name.to_owned(),
                owner: owner.to_owned(),
                scopes,
                models,
                created_at: now,
                expires_at,
                revoked_at: None,
                previous_hash: None,
                previous_expires_at: 0,
            };
            self.store.insert_virtual_key(&record).await?;
            if !access.is_empty() {
                let target = PolicyTarget::VirtualKey(record.id.clone());
                self.store
                    .upsert_access_policy(&crate::domain::AccessRecord {
                        target: target.clone(),
                        access: access.clone(),
                        source: Source::Admin,
                        updated_at: now,
                    })
                    .await?;
                let detail = super::policies::access_detail(&access);
                self.audit("policy.set", &actor.0, &target.to_string(), "ok", &detail)
                    .await;
            }
            match policy {
                Some(limits) => {
                    self.set_policy(
                        actor,
                        &PolicyTarget::VirtualKey(record.id.clone()),
                        limits,
                        Source::Admin,
                    )
                    .await?;
                }
                None => {
                    self.publish().await?;
                }
            }
            Ok((secret, record))
        })
        .await
    }

    pub async fn list_virtual_keys(&self) -> Result<Vec<VirtualKeyRecord>, ServiceError> {
        Ok(self.store.list_virtual_keys().await?)
    }

    /// Revokes a virtual key on every node.
    pub async fn revoke_virtual_key(&self, actor: &Actor, id: &str) -> Result<(), ServiceError> {
        self.mutate(actor, "vkey.revoke", id, async {
            if !self.store.revoke_virtual_key(id, unix_now()).await? {
                return Err(ServiceError::NotFound(format!(
                    "no live virtual key with id {id}"
                )));
            }
            Ok(())
        })
        .await
    }

    /// Gives a virtual key a new secret (same id, so the same limits, usage and audit
    /// trail); the replaced secret keeps working for `grace`, then every node refuses it
    /// (nodes check the deadline themselves, and the next snapshot drops it).
    pub async fn rotate_virtual_key(
        &self,
        actor: &Actor,
        id: &str,
        grace: Duration,
    ) -> Result<(SecretString, VirtualKeyRecord), ServiceError> {
        let subject = |r: &Result<(SecretString, VirtualKeyRecord), ServiceError>| match r {
            Ok((_, r)) => format!("{id} old secret valid until {}", r.previous_expires_at),
            Err(_) => id.to_owned(),
        };
        self.audited(actor, "vkey.rotate", subject, async {
            if grace > MAX_VKEY_GRACE {
                return Err(ServiceError::InvalidArgument(format!(
                    "grace must be at most {}",
                    humantime::format_duration(MAX_VKEY_GRACE)
                )));
            }
            let now = unix_now();
            let grace_end = now.saturating_add(i64::try_from(grace.as_secs()).unwrap_or(0));
            let secret = credential::generate(Kind::VirtualKey);
            let hash = credential::hash(self.pepper.expose_secret(), &secret);
            let live = self
                .store
                .list_virtual_keys()
                .await?
                .into_iter()
                .find(|k| {
                    k.id == id
                        && k.revoked_at.is_none()
                        && (k.expires_at == 0 || k.expires_at > now)
                })
                .ok_or_else(|| {
                    ServiceError::NotFound(format!("no live virtual key with id {id}"))
                })?;
            // A grace period never outlives the key itself.
            let previous_expires_at = if live.expires_at == 0 {
                grace_end
            } else {
                grace_end.min(live.expires_at)
            };
            if !self
                .store
                .rotate_virtual_key(id, &hash, previous_expires_at)
                .await?
            {
                return Err(ServiceError::NotFound(format!(
                    "no live virtual key with id {id}"
                )));
            }
            self.publish().await?;
            let record = self
                .store
                .list_virtual_keys()
                .await?
                .into_iter()
                .find(|k| k.id == id)
                .ok_or_else(|| ServiceError::NotFound(format!("no virtual key with id {id}")))?;
            Ok((secret, record))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_checked_like_names() {
        for ok in ["", "team-a", "search@example.com", "org/team:svc_1"] {
            assert!(validate_owner(ok).is_ok(), "{ok:?}");
        }
        for bad in ["a\nb", "a\u{1b}[2J", "a b", "x\u{85}", &"o".repeat(129)] {
            assert!(validate_owner(bad).is_err(), "{bad:?}");
        }
    }
}
