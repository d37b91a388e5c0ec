//! Reading and verifying the audit log over the Admin API (callers need the `audit`
//! scope, or an admin credential). Both reads are audited themselves.

use tonic::Status;
use warden_core::audit_detail::Detail;
use warden_proto::admin::v1 as pb;

use crate::service::{Actor, ControlPlane};

pub(super) async fn verify(
    cp: &ControlPlane,
    actor: Actor,
    r: pb::VerifyAuditRequest,
) -> Result<pb::VerifyAuditResponse, Status> {
    let from = r.from_seq;
    let report = cp.verify_audit((from > 0).then_some(from)).await?;
    let problem = report
        .problem
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    cp.audit(
        "audit.verify",
        &actor.0,
        "",
        if report.is_valid() { "ok" } else { "tampered" },
        &Detail::new()
            .with("rows_checked", report.rows_checked)
            .with_opt("problem", (!problem.is_empty()).then_some(&problem))
            .build(),
    )
    .await;
    Ok(pb::VerifyAuditResponse {
        valid: report.is_valid(),
        rows_checked: report.rows_checked,
        checkpoints_checked: report.checkpoints_checked,
        last_seq: report.last_seq,
        problem,
    })
}

pub(super) async fn list(
    cp: &ControlPlane,
    actor: Actor,
    r: pb::ListAuditRequest,
) -> Result<pb::ListAuditResponse, Status> {
    let action = (!r.action.is_empty()).then_some(r.action.as_str());
    let page = cp
        .audit_page(r.limit, action, r.page_size, &r.page_token)
        .await?;
    let records = page
        .items
        .into_iter()
        .map(|a| pb::AuditRecord {
            id: a.id,
            timestamp_ms: a.timestamp_ms,
            action: a.action,
            actor: a.actor,
            subject: a.subject,
            result: a.result,
            detail: a.detail,
        })
        .collect();
    cp.audit("audit.list", &actor.0, "", "ok", "").await;
    Ok(pb::ListAuditResponse {
        records,
        next_page_token: page.next_token,
    })
}
