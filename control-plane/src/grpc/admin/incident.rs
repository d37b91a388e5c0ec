//! Incident response over the Admin API: suspensions, the lockdown, revoke-all.

use tonic::Status;
use warden_proto::admin::v1 as pb;

use crate::domain::{Lockdown, Suspension, SuspensionTarget};
use crate::page::{PageKey, page_whole};
use crate::service::{Actor, ControlPlane};

/// Exactly one of `subject` and `prefix`.
fn target(subject: String, prefix: String) -> Result<SuspensionTarget, Status> {
    match (subject.is_empty(), prefix.is_empty()) {
        (false, true) => Ok(SuspensionTarget::Subject(subject)),
        (true, false) => Ok(SuspensionTarget::Prefix(prefix)),
        _ => Err(Status::invalid_argument(
            "give exactly one of subject and prefix",
        )),
    }
}

fn suspension_info(s: Suspension) -> pb::SuspensionInfo {
    pb::SuspensionInfo {
        kind: s.target.kind().to_owned(),
        value: s.target.value().to_owned(),
        reason: s.reason,
        created_by: s.created_by,
        created_at: s.created_at,
    }
}

fn lockdown_info(l: Option<Lockdown>, active: bool) -> pb::LockdownInfo {
    l.map_or_else(pb::LockdownInfo::default, |l| pb::LockdownInfo {
        active,
        reason: l.reason,
        created_by: l.created_by,
        created_at: l.created_at,
    })
}

pub(super) async fn suspend(
    cp: &ControlPlane,
    actor: Actor,
    r: pb::SuspendCredentialsRequest,
) -> Result<pb::SuspensionInfo, Status> {
    let target = target(r.subject, r.prefix)?;
    Ok(suspension_info(
        cp.suspend_credentials(&actor, target, &r.reason).await?,
    ))
}

pub(super) async fn resume(
    cp: &ControlPlane,
    actor: Actor,
    r: pb::ResumeCredentialsRequest,
) -> Result<pb::ResumeCredentialsResponse, Status> {
    cp.resume_credentials(&actor, target(r.subject, r.prefix)?)
        .await?;
    Ok(pb::ResumeCredentialsResponse {})
}

pub(super) async fn list(
    cp: &ControlPlane,
    _: Actor,
    r: pb::ListSuspensionsRequest,
) -> Result<pb::ListSuspensionsResponse, Status> {
    // Ordered like the store: by creation, then kind and value (`\0` sorts first).
    let page = page_whole(
        "suspensions",
        r.page_size,
        &r.page_token,
        cp.list_suspensions().await?,
        |s| {
            PageKey::new(
                s.created_at,
                format!("{}\0{}", s.target.kind(), s.target.value()),
            )
        },
    )?;
    Ok(pb::ListSuspensionsResponse {
        suspensions: page.items.into_iter().map(suspension_info).collect(),
        next_page_token: page.next_token,
    })
}

pub(super) async fn lockdown(
    cp: &ControlPlane,
    actor: Actor,
    r: pb::LockdownRequest,
) -> Result<pb::LockdownInfo, Status> {
    Ok(lockdown_info(
        Some(cp.lockdown(&actor, &r.reason).await?),
        true,
    ))
}

pub(super) async fn lift(
    cp: &ControlPlane,
    actor: Actor,
    _: pb::LiftLockdownRequest,
) -> Result<pb::LockdownInfo, Status> {
    Ok(lockdown_info(Some(cp.lift_lockdown(&actor).await?), false))
}

pub(super) async fn status(
    cp: &ControlPlane,
    _: Actor,
    _: pb::GetLockdownRequest,
) -> Result<pb::LockdownInfo, Status> {
    Ok(lockdown_info(cp.lockdown_status().await?, true))
}

pub(super) async fn revoke_all(
    cp: &ControlPlane,
    actor: Actor,
    r: pb::RevokeAllClientCredentialsRequest,
) -> Result<pb::RevokeAllClientCredentialsResponse, Status> {
    if !r.confirm {
        return Err(Status::invalid_argument(
            "revoking every client credential cannot be undone: set confirm",
        ));
    }
    let o = cp.revoke_all_client_credentials(&actor).await?;
    Ok(pb::RevokeAllClientCredentialsResponse {
        tokens_revoked: o.revoked.tokens,
        virtual_keys_revoked: o.revoked.virtual_keys,
        signing_keys_retired: o.revoked.signing_keys,
        new_kid: o.new_kid,
    })
}
