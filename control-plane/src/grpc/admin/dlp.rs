//! DLP rules over the Admin API, and the proto ↔ domain conversions of a rule.

use tonic::Status;
use warden_core::dlp::{Action, Detector, RuleSpec, Scope};
use warden_proto::admin::v1 as pb;
use warden_proto::admin::v1::dlp_scope::Target;

use crate::domain::{DlpRuleRecord, Source};
use crate::page::{PageKey, page_whole};
use crate::service::{Actor, ControlPlane};

pub(super) async fn add(
    cp: &ControlPlane,
    actor: Actor,
    r: pb::AddDlpRuleRequest,
) -> Result<pb::DlpRuleInfo, Status> {
    let detector = Detector::parse(&r.detector).ok_or_else(|| {
        Status::invalid_argument(format!(
            "rule {}: detector must be one of card, ssn, openai_key, anthropic_key, \
             aws_access_key, warden_credential, regex",
            r.name
        ))
    })?;
    let action = Action::parse(&r.action).ok_or_else(|| {
        Status::invalid_argument(format!(
            "rule {}: action must be block, redact or flag",
            r.name
        ))
    })?;
    let spec = RuleSpec {
        name: r.name,
        detector,
        pattern: r.pattern,
        action,
        scope: scope_from(r.scope.as_ref()),
    };
    let record = cp.add_dlp_rule(&actor, spec, Source::Admin).await?;
    Ok(info(&record))
}

pub(super) async fn remove(
    cp: &ControlPlane,
    actor: Actor,
    r: pb::RemoveDlpRuleRequest,
) -> Result<pb::RemoveDlpRuleResponse, Status> {
    cp.remove_dlp_rule(&actor, &r.name).await?;
    Ok(pb::RemoveDlpRuleResponse { removed: true })
}

pub(super) async fn list(
    cp: &ControlPlane,
    _actor: Actor,
    r: pb::ListDlpRulesRequest,
) -> Result<pb::ListDlpRulesResponse, Status> {
    let page = page_whole(
        "dlp_rules",
        r.page_size,
        &r.page_token,
        cp.list_dlp_rules().await?,
        |rule| PageKey::name(rule.spec.name.clone()),
    )?;
    Ok(pb::ListDlpRulesResponse {
        rules: page.items.iter().map(info).collect(),
        next_page_token: page.next_token,
    })
}

fn scope_from(s: Option<&pb::DlpScope>) -> Scope {
    match s.and_then(|s| s.target.as_ref()) {
        None => Scope::Gateway,
        Some(Target::Model(m)) => Scope::Model(m.clone()),
        Some(Target::VirtualKey(v)) => Scope::VirtualKey(v.clone()),
        Some(Target::Subject(s)) => Scope::Subject(s.clone()),
    }
}

fn scope_to(s: &Scope) -> pb::DlpScope {
    pb::DlpScope {
        target: match s {
            Scope::Gateway => None,
            Scope::Model(m) => Some(Target::Model(m.clone())),
            Scope::VirtualKey(v) => Some(Target::VirtualKey(v.clone())),
            Scope::Subject(s) => Some(Target::Subject(s.clone())),
        },
    }
}

fn info(r: &DlpRuleRecord) -> pb::DlpRuleInfo {
    pb::DlpRuleInfo {
        name: r.spec.name.clone(),
        detector: r.spec.detector.as_str().to_owned(),
        pattern: r.spec.pattern.clone(),
        action: r.spec.action.as_str().to_owned(),
        scope: Some(scope_to(&r.spec.scope)),
        source: r.source.as_str().to_owned(),
        updated_at: r.updated_at,
    }
}
