//! Policies and usage over the Admin API, and the proto ↔ domain conversions of limits and
//! policy targets.

use tonic::Status;
use warden_proto::admin::v1 as pb;

use crate::domain::{AccessPolicy, Limits, PolicyRecord, PolicyTarget, Source};
use crate::service::{Actor, ControlPlane};

pub(super) async fn set(
    cp: &ControlPlane,
    actor: Actor,
    r: pb::SetPolicyRequest,
) -> Result<pb::PolicyInfo, Status> {
    let target = target_from(r.target.as_ref())?;
    let access = r.access.map(access_from);
    if let Some(a) = &access {
        // Refused before anything changes.
        a.clone()
            .validated(&target)
            .map_err(Status::invalid_argument)?;
    }
    let record = match (&r.policy, &access) {
        // Only the access lists: the limits stay as they are.
        (None, Some(_)) => cp.get_policy(&target).await?,
        (policy, _) => {
            let limits = limits_from(&policy.unwrap_or_default())?;
            cp.set_policy(&actor, &target, limits, Source::Admin)
                .await?
        }
    };
    if let Some(a) = access {
        cp.set_access_policy(&actor, &target, a, Source::Admin)
            .await?;
    }
    Ok(policy_info(cp, record).await)
}

pub(super) async fn get(
    cp: &ControlPlane,
    actor: Actor,
    r: pb::GetPolicyRequest,
) -> Result<pb::PolicyInfo, Status> {
    let target = target_from(r.target.as_ref())?;
    let record = cp.get_policy(&target).await?;
    cp.audit("policy.get", &actor.0, &target.to_string(), "ok", "")
        .await;
    Ok(policy_info(cp, record).await)
}

/// A policy with the target's current usage (or why usage is unavailable).
async fn policy_info(cp: &ControlPlane, record: PolicyRecord) -> pb::PolicyInfo {
    let usage = match cp.usage(&record.target, &record.limits).await {
        Ok(u) => pb::Usage {
            available: true,
            unavailable_reason: String::new(),
            requests_remaining: u.requests_remaining.unwrap_or(0),
            tokens_remaining: u.tokens_remaining.unwrap_or(0),
            in_flight: u.in_flight,
            spent_usd: u.spent_micros as f64 / 1e6,
            period_ends_at: u.period_ends_at,
        },
        Err(reason) => pb::Usage {
            available: false,
            unavailable_reason: reason,
            ..Default::default()
        },
    };
    let access = cp
        .get_access_policy(&record.target)
        .await
        .unwrap_or_default();
    pb::PolicyInfo {
        target: Some(target_to(&record.target)),
        policy: Some(limits_to(&record.limits)),
        usage: Some(usage),
        access: Some(access_to(access)),
    }
}

fn access_from(a: pb::AccessPolicy) -> AccessPolicy {
    AccessPolicy {
        allowed_ips: a.allowed_ips,
        allowed_origins: a.allowed_origins,
        cors_methods: a.cors_methods,
        cors_headers: a.cors_headers,
        cors_expose_headers: a.cors_expose_headers,
        cors_max_age_seconds: a.cors_max_age_seconds,
        cors_allow_credentials: a.cors_allow_credentials,
    }
}

fn access_to(a: AccessPolicy) -> pb::AccessPolicy {
    pb::AccessPolicy {
        allowed_ips: a.allowed_ips,
        allowed_origins: a.allowed_origins,
        cors_methods: a.cors_methods,
        cors_headers: a.cors_headers,
        cors_expose_headers: a.cors_expose_headers,
        cors_max_age_seconds: a.cors_max_age_seconds,
        cors_allow_credentials: a.cors_allow_credentials,
    }
}

fn target_from(t: Option<&pb::PolicyTarget>) -> Result<PolicyTarget, Status> {
    use pb::policy_target::Target;
    match t.and_then(|t| t.target.as_ref()) {
        Some(Target::VirtualKey(id)) if !id.is_empty() => Ok(PolicyTarget::VirtualKey(id.clone())),
        Some(Target::Subject(s)) if !s.is_empty() => Ok(PolicyTarget::Subject(s.clone())),
        Some(Target::Model(m)) if !m.is_empty() => Ok(PolicyTarget::Model(m.clone())),
        Some(Target::Global(true)) => Ok(PolicyTarget::Global),
        _ => Err(Status::invalid_argument(
            "target must name a virtual key, a subject, a model, or global",
        )),
    }
}

fn target_to(t: &PolicyTarget) -> pb::PolicyTarget {
    use pb::policy_target::Target;
    pb::PolicyTarget {
        target: Some(match t {
            PolicyTarget::VirtualKey(id) => Target::VirtualKey(id.clone()),
            PolicyTarget::Subject(s) => Target::Subject(s.clone()),
            PolicyTarget::Model(m) => Target::Model(m.clone()),
            PolicyTarget::Global => Target::Global(true),
        }),
    }
}

/// Limits as given in a request (also by token and virtual-key requests).
pub(super) fn limits_from(p: &pb::Policy) -> Result<Limits, Status> {
    if !p.max_budget_usd.is_finite() || p.max_budget_usd < 0.0 {
        return Err(Status::invalid_argument(
            "max_budget_usd must be a non-negative number",
        ));
    }
    Ok(Limits {
        rpm: p.rpm,
        tpm: p.tpm,
        max_parallel: p.max_parallel,
        max_budget_micros: (p.max_budget_usd * 1e6).round() as u64,
        budget_period_secs: p.budget_period_seconds,
        max_tokens: p.max_tokens,
    })
}

fn limits_to(l: &Limits) -> pb::Policy {
    pb::Policy {
        rpm: l.rpm,
        tpm: l.tpm,
        max_parallel: l.max_parallel,
        max_budget_usd: l.max_budget_micros as f64 / 1e6,
        budget_period_seconds: l.budget_period_secs,
        max_tokens: l.max_tokens,
    }
}
