//! Incident response: suspending and resuming client credentials, the gateway-wide
//! lockdown, and revoking every client credential at once. Each travels to the nodes in
//! the snapshot (`lockdown`, `suspensions`; a revoke-all as revoked tokens and virtual keys
//! and a new signing key), so it is in force on every connected node when the call returns
//! (`publish` waits for their acknowledgements). Admin and node credentials are never
//! touched: the control plane stays administrable and nodes keep syncing.

use warden_core::audit_detail::Detail;
use warden_core::unix_now;

use super::{Actor, ControlPlane};
use crate::domain::{Lockdown, Suspension, SuspensionTarget};
use crate::error::ServiceError;
use crate::store::RevokedAll;

/// Longest suspension value (a JWT subject is at most 128 characters).
const MAX_TARGET_CHARS: usize = 128;
/// Longest reason kept with a suspension or a lockdown.
const MAX_REASON_CHARS: usize = 256;

/// What `credentials revoke-all` did.
#[derive(Debug, Clone)]
pub struct RevokeAllOutcome {
    pub revoked: RevokedAll,
    /// The signing key new tokens are signed with from now on.
    pub new_kid: String,
}

fn check_target(target: &SuspensionTarget) -> Result<(), ServiceError> {
    let v = target.value();
    if v.is_empty() || v.chars().count() > MAX_TARGET_CHARS {
        return Err(ServiceError::InvalidArgument(format!(
            "{} must be 1 to {MAX_TARGET_CHARS} characters (to refuse every credential, use `wardenctl lockdown`)",
            target.kind()
        )));
    }
    if v.chars().any(char::is_control) {
        return Err(ServiceError::InvalidArgument(format!(
            "{} must not contain control characters",
            target.kind()
        )));
    }
    Ok(())
}

fn check_reason(reason: &str) -> Result<(), ServiceError> {
    if reason.chars().count() > MAX_REASON_CHARS || reason.chars().any(char::is_control) {
        return Err(ServiceError::InvalidArgument(format!(
            "reason must be at most {MAX_REASON_CHARS} characters, without control characters"
        )));
    }
    Ok(())
}

/// A value as its audit row shows it: clipped, so a refused oversize one stays bounded.
fn clipped(v: &str) -> String {
    v.chars().take(MAX_REASON_CHARS).collect()
}

impl ControlPlane {
    /// Suspends the client credentials `target` covers on every node, until resumed.
    pub async fn suspend_credentials(
        &self,
        actor: &Actor,
        target: SuspensionTarget,
        reason: &str,
    ) -> Result<Suspension, ServiceError> {
        let detail = Detail::new()
            .with("kind", target.kind())
            .with("value", clipped(target.value()))
            .with("reason", clipped(reason));
        let subject = clipped(&target.to_string());
        self.audited_with(actor, "credentials.suspend", subject, |_| detail, async {
            check_target(&target)?;
            check_reason(reason)?;
            let suspension = Suspension {
                target,
                reason: reason.to_owned(),
                created_by: actor.0.clone(),
                created_at: unix_now(),
            };
            if !self.store.insert_suspension(&suspension).await? {
                return Err(ServiceError::AlreadyExists(format!(
                    "{} is already suspended",
                    suspension.target
                )));
            }
            self.publish().await?;
            Ok(suspension)
        })
        .await
    }

    /// Lifts the suspension of `target`.
    pub async fn resume_credentials(
        &self,
        actor: &Actor,
        target: SuspensionTarget,
    ) -> Result<(), ServiceError> {
        let detail = Detail::new()
            .with("kind", target.kind())
            .with("value", clipped(target.value()));
        let subject = clipped(&target.to_string());
        self.audited_with(actor, "credentials.resume", subject, |_| detail, async {
            check_target(&target)?;
            if !self.store.delete_suspension(&target).await? {
                return Err(ServiceError::NotFound(format!("{target} is not suspended")));
            }
            self.publish().await?;
            Ok(())
        })
        .await
    }

    pub async fn list_suspensions(&self) -> Result<Vec<Suspension>, ServiceError> {
        Ok(self.store.list_suspensions().await?)
    }

    /// Locks the gateway down: every node refuses every client request and holds no
    /// provider key until [`Self::lift_lockdown`].
    pub async fn lockdown(&self, actor: &Actor, reason: &str) -> Result<Lockdown, ServiceError> {
        let detail = Detail::new().with("reason", clipped(reason));
        self.audited_with(actor, "lockdown.on", "gateway", |_| detail, async {
            check_reason(reason)?;
            let lockdown = Lockdown {
                reason: reason.to_owned(),
                created_by: actor.0.clone(),
                created_at: unix_now(),
            };
            if !self.store.insert_lockdown(&lockdown).await? {
                return Err(ServiceError::AlreadyExists(
                    "the gateway is already locked down".into(),
                ));
            }
            self.publish().await?;
            Ok(lockdown)
        })
        .await
    }

    /// Lifts the lockdown; returns the one lifted.
    pub async fn lift_lockdown(&self, actor: &Actor) -> Result<Lockdown, ServiceError> {
        let detail = |r: &Result<Lockdown, ServiceError>| match r {
            Ok(l) => Detail::new()
                .with("since", l.created_at)
                .with("by", &l.created_by)
                .with("duration_s", unix_now().saturating_sub(l.created_at)),
            Err(_) => Detail::new(),
        };
        self.audited_with(actor, "lockdown.lift", "gateway", detail, async {
            let lockdown =
                self.store.get_lockdown().await?.ok_or_else(|| {
                    ServiceError::NotFound("the gateway is not locked down".into())
                })?;
            if !self.store.delete_lockdown().await? {
                return Err(ServiceError::NotFound(
                    "the gateway is not locked down".into(),
                ));
            }
            self.publish().await?;
            Ok(lockdown)
        })
        .await
    }

    /// The lockdown in force, if any.
    pub async fn lockdown_status(&self) -> Result<Option<Lockdown>, ServiceError> {
        Ok(self.store.get_lockdown().await?)
    }

    /// Revokes every client credential for good: a new signing key becomes the signer and
    /// every other one is retired (nodes drop its verification key, so no token it signed
    /// verifies — including tokens the store never saw, signed with a leaked key); every
    /// token is marked revoked and every virtual key revoked. Admin (`wa_…`) and node
    /// (`wn_…`) credentials are untouched; JWTs with the `admin` scope are JWTs, and go.
    pub async fn revoke_all_client_credentials(
        &self,
        actor: &Actor,
    ) -> Result<RevokeAllOutcome, ServiceError> {
        let detail = |r: &Result<RevokeAllOutcome, ServiceError>| match r {
            Ok(o) => Detail::new()
                .with("tokens", o.revoked.tokens)
                .with("virtual_keys", o.revoked.virtual_keys)
                .with("signing_keys_retired", o.revoked.signing_keys)
                .with("new_kid", &o.new_kid),
            Err(_) => Detail::new(),
        };
        self.audited_with(actor, "credentials.revoke_all", "all", detail, async {
            let material = Self::create_signing_key(
                self.store.as_ref(),
                self.secrets.as_ref(),
                self.auth.algorithm,
            )
            .await?;
            let new_kid = material.kid.clone();
            // The new signer first: a token issued from here on is signed with the key
            // that stays; then everything older goes in one transaction.
            *self.signer.write().unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::new(material);
            let revoked = self
                .store
                .revoke_all_client_credentials(&new_kid, unix_now())
                .await?;
            self.publish().await?;
            Ok(RevokeAllOutcome { revoked, new_kid })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_reasons_are_bounded_and_printable() {
        assert!(check_target(&SuspensionTarget::Subject("alice".into())).is_ok());
        assert!(check_target(&SuspensionTarget::Prefix("vk_".into())).is_ok());
        assert!(check_target(&SuspensionTarget::Prefix(String::new())).is_err());
        assert!(check_target(&SuspensionTarget::Subject("a\nb".into())).is_err());
        assert!(check_target(&SuspensionTarget::Subject("x".repeat(129))).is_err());
        assert!(check_reason("").is_ok());
        assert!(check_reason("key leaked in a public repo").is_ok());
        assert!(check_reason("a\u{1b}[2J").is_err());
        assert!(check_reason(&"r".repeat(257)).is_err());
    }
}
