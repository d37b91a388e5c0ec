//! DLP rules ([`warden_core::dlp`]): added (or replaced, by name), removed and listed. A
//! rule is compiled here before it is stored, so a bad regular expression is refused with
//! InvalidArgument naming the rule and never reaches a node. Each change is audited
//! (`dlp.rule_add`, `dlp.rule_remove`) with the rule's detector, action and scope — a
//! custom pattern is recorded by length only, since an operator may paste a real value
//! into it.

use warden_core::audit_detail::Detail;
use warden_core::dlp::{self, RuleSpec};
use warden_core::unix_now;

use super::{Actor, ControlPlane};
use crate::domain::{DlpRuleRecord, Source};
use crate::error::ServiceError;

/// The audit detail of a rule.
fn detail(spec: &RuleSpec) -> Detail {
    Detail::new()
        .with("detector", spec.detector.as_str())
        .with("action", spec.action.as_str())
        .with("scope", spec.scope.key())
        .with_opt(
            "pattern_bytes",
            (!spec.pattern.is_empty()).then_some(spec.pattern.len()),
        )
}

impl ControlPlane {
    /// Adds `spec`, replacing a rule of the same name; refuses one that does not compile
    /// (or would make the whole set too large to compile).
    pub async fn add_dlp_rule(
        &self,
        actor: &Actor,
        spec: RuleSpec,
        source: Source,
    ) -> Result<DlpRuleRecord, ServiceError> {
        let name = spec.name.clone();
        let shown = detail(&spec);
        self.audited_with(actor, "dlp.rule_add", name, |_| shown, async {
            let record = self.store_dlp_rule(spec, source).await?;
            self.publish().await?;
            Ok(record)
        })
        .await
    }

    /// Checks and stores one rule without publishing (the declarative config stores all
    /// of its rules, then publishes once).
    pub(crate) async fn store_dlp_rule(
        &self,
        spec: RuleSpec,
        source: Source,
    ) -> Result<DlpRuleRecord, ServiceError> {
        dlp::check(&spec).map_err(|e| ServiceError::InvalidArgument(e.to_string()))?;
        let mut all: Vec<RuleSpec> = self
            .store
            .list_dlp_rules()
            .await?
            .into_iter()
            .map(|r| r.spec)
            .filter(|r| r.name != spec.name)
            .collect();
        all.push(spec.clone());
        dlp::RuleSet::compile(all).map_err(|e| ServiceError::InvalidArgument(e.to_string()))?;
        let record = DlpRuleRecord {
            spec,
            source,
            updated_at: unix_now(),
        };
        self.store.upsert_dlp_rule(&record).await?;
        Ok(record)
    }

    /// Removes the rule `name`.
    pub async fn remove_dlp_rule(&self, actor: &Actor, name: &str) -> Result<(), ServiceError> {
        self.mutate(actor, "dlp.rule_remove", name, async {
            if !self.store.delete_dlp_rule(name).await? {
                return Err(ServiceError::NotFound(format!("no DLP rule named {name}")));
            }
            Ok(())
        })
        .await
    }

    /// Every rule, by name.
    pub async fn list_dlp_rules(&self) -> Result<Vec<DlpRuleRecord>, ServiceError> {
        Ok(self.store.list_dlp_rules().await?)
    }
}
