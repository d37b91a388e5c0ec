//! Policies: the limits of a virtual key, a JWT subject, a model or everything (global),
//! and current usage under them.

use warden_core::unix_now;

use super::{Actor, ControlPlane};
use crate::domain::{
    AccessPolicy, AccessRecord, DEFAULT_BUDGET_PERIOD_SECS, Limits, PolicyRecord, PolicyTarget,
    Source,
};
use crate::error::ServiceError;

impl ControlPlane {
    /// Sets (or, with all-zero limits, clears) the policy of a target. Audited by hand
    /// rather than through `mutate`: its row carries the limits set, or the error's text.
    pub async fn set_policy(
        &self,
        actor: &Actor,
        target: &PolicyTarget,
        limits: Limits,
        source: Source,
    ) -> Result<PolicyRecord, ServiceError> {
        let result = async {
            self.check_policy_target(target).await?;
            let mut limits = limits;
            if limits.max_budget_micros > 0 && limits.budget_period_secs == 0 {
                limits.budget_period_secs = DEFAULT_BUDGET_PERIOD_SECS;
            }
            if limits.budget_period_secs != 0 && limits.budget_period_secs < 60 {
                return Err(ServiceError::InvalidArgument(
                    "budget_period must be at least one minute".into(),
                ));
            }
            let record = PolicyRecord {
                target: target.clone(),
                limits,
                source,
                updated_at: unix_now(),
            };
            if limits.is_unlimited() {
                self.store.delete_policy(target).await?;
            } else {
                self.store.upsert_policy(&record).await?;
            }
            self.publish().await?;
            Ok(record)
        }
        .await;
        let mut detail = match &result {
            Ok(r) => format!(
                "rpm={} tpm={} max_parallel={} max_budget_micros={} period={}s",
                r.limits.rpm,
                r.limits.tpm,
                r.limits.max_parallel,
                r.limits.max_budget_micros,
                r.limits.budget_period_secs
            ),
            Err(e) => e.to_string(),
        };
        // A budget over models without a price: logged, and in the audit record.
        if let Ok(r) = &result
            && r.limits.max_budget_micros > 0
        {
            let scope = match target {
                PolicyTarget::Model(alias) => Some(std::slice::from_ref(alias)),
                _ => None,
            };
            if let Ok(unpriced) = self.unpriced_under_budget(scope).await {
                let warning = Self::unpriced_warning("policy set", &unpriced);
                if !warning.is_empty() {
                    detail = format!("{detail}; {warning}");
                }
            }
        }
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.code().metric_label(),
        };
        self.audit(
            "policy.set",
            &actor.0,
            &target.to_string(),
            outcome,
            &detail,
        )
        .await;
        result
    }

    /// Sets (or, all empty, clears) the access lists of a target — for the global target
    /// also CORS — and publishes. Audited as `policy.set` with the lists; a wildcard CORS
    /// origin is a dangerous setting and gets its own `policy.cors_wildcard` record.
    pub async fn set_access_policy(
        &self,
        actor: &Actor,
        target: &PolicyTarget,
        access: AccessPolicy,
        source: Source,
    ) -> Result<AccessRecord, ServiceError> {
        let result: Result<AccessRecord, ServiceError> = async {
            self.check_policy_target(target).await?;
            let access = access
                .validated(target)
                .map_err(ServiceError::InvalidArgument)?;
            let record = AccessRecord {
                target: target.clone(),
                access,
                source,
                updated_at: unix_now(),
            };
            if record.access.is_empty() {
                self.store.delete_access_policy(target).await?;
            } else {
                self.store.upsert_access_policy(&record).await?;
            }
            self.publish().await?;
            Ok(record)
        }
        .await;
        let (outcome, detail) = match &result {
            Ok(r) => ("ok", access_detail(&r.access)),
            Err(e) => (e.code().metric_label(), e.to_string()),
        };
        self.audit(
            "policy.set",
            &actor.0,
            &target.to_string(),
            outcome,
            &detail,
        )
        .await;
        if let Ok(r) = &result
            && r.target == PolicyTarget::Global
            && r.access.any_origin()
        {
            tracing::warn!(actor = %actor.0, "CORS set to allow every origin (`*`)");
            self.audit(
                "policy.cors_wildcard",
                &actor.0,
                "global",
                "ok",
                "CORS allows every origin: any web page may call the gateway with a credential it holds",
            )
            .await;
        }
        result
    }

    /// The access lists of a target (empty when none are set).
    pub async fn get_access_policy(
        &self,
        target: &PolicyTarget,
    ) -> Result<AccessPolicy, ServiceError> {
        Ok(self
            .store
            .list_access_policies()
            .await?
            .into_iter()
            .find(|p| &p.target == target)
            .map(|p| p.access)
            .unwrap_or_default())
    }

    /// A policy target that exists (virtual key, model) or is well-formed (subject).
    async fn check_policy_target(&self, target: &PolicyTarget) -> Result<(), ServiceError> {
        match target {
            PolicyTarget::VirtualKey(id) => {
                if !self
                    .store
                    .list_virtual_keys()
                    .await?
                    .iter()
                    .any(|k| &k.id == id)
                {
                    return Err(ServiceError::NotFound(format!(
                        "no virtual key with id {id}"
                    )));
                }
            }
            PolicyTarget::Model(alias) => {
                if !self
                    .store
                    .list_models()
                    .await?
                    .iter()
                    .any(|m| &m.alias == alias)
                {
                    return Err(ServiceError::NotFound(format!("no model named {alias}")));
                }
            }
            PolicyTarget::Subject(sub) => {
                if sub.trim().is_empty() || sub.len() > 128 {
                    return Err(ServiceError::InvalidArgument(
                        "subject must be 1 to 128 characters".into(),
                    ));
                }
            }
            PolicyTarget::Global => {}
        }
        Ok(())
    }

    /// The policy of a target (unlimited when none is set).
    pub async fn get_policy(&self, target: &PolicyTarget) -> Result<PolicyRecord, ServiceError> {
        Ok(self
            .store
            .list_policies()
            .await?
            .into_iter()
            .find(|p| &p.target == target)
            .unwrap_or(PolicyRecord {
                target: target.clone(),
                limits: Limits::default(),
                source: Source::Admin,
                updated_at: 0,
            }))
    }

    /// Current usage of a target under its limits, from the shared state.
    pub async fn usage(
        &self,
        target: &PolicyTarget,
        limits: &Limits,
    ) -> Result<crate::usage::Usage, String> {
        self.usage.usage(target, limits).await
    }
}

/// The audit detail of access lists as set.
pub(super) fn access_detail(a: &AccessPolicy) -> String {
    format!(
        "allowed_ips=[{}] allowed_origins=[{}] cors_methods=[{}] cors_headers=[{}] cors_expose_headers=[{}] cors_max_age={}s cors_credentials={}",
        a.allowed_ips.join(","),
        a.allowed_origins.join(","),
        a.cors_methods.join(","),
        a.cors_headers.join(","),
        a.cors_expose_headers.join(","),
        a.cors_max_age_seconds,
        a.cors_allow_credentials,
    )
}
