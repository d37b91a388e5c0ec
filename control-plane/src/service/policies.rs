//! Policies: the limits of a virtual key, a JWT subject, a model or everything (global),
//! and current usage under them.

use warden_core::unix_now;

use super::{Actor, ControlPlane};
use crate::domain::{DEFAULT_BUDGET_PERIOD_SECS, Limits, PolicyRecord, PolicyTarget, Source};
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
