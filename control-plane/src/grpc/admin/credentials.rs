//! Node and admin credentials over the Admin API: issue, list, revoke.

use secrecy::ExposeSecret;
use tonic::Status;
use warden_proto::admin::v1 as pb;

use super::{opt_time, ttl};
use crate::domain::{CredentialRecord, CredentialTable};
use crate::service::{Actor, ControlPlane};

pub(super) async fn issue_node(
    cp: &ControlPlane,
    actor: Actor,
    r: pb::IssueNodeCredentialRequest,
) -> Result<pb::IssueNodeCredentialResponse, Status> {
    let cert = Some(r.client_certificate_pem.as_str()).filter(|c| !c.is_empty());
    let (credential, id) = cp.issue_node_credential(&actor, &r.name, cert).await?;
    Ok(pb::IssueNodeCredentialResponse {
        credential: credential.expose_secret().to_owned(),
        id,
    })
}

fn to_info((r, last_used): (CredentialRecord, Option<i64>)) -> pb::CredentialInfo {
    pb::CredentialInfo {
        id: r.id,
        name: r.name,
        created_at: r.created_at,
        revoked_at: opt_time(r.revoked_at),
        last_used_at: opt_time(last_used),
        role: r.role,
        expires_at: opt_time(r.expires_at),
        cert_spki_sha256: r.cert_spki_sha256.unwrap_or_default(),
    }
}

async fn list(
    cp: &ControlPlane,
    table: CredentialTable,
    r: &pb::ListCredentialsRequest,
) -> Result<pb::ListCredentialsResponse, Status> {
    let page = cp
        .credentials_page(table, r.page_size, &r.page_token)
        .await?;
    Ok(pb::ListCredentialsResponse {
        credentials: page.items.into_iter().map(to_info).collect(),
        next_page_token: page.next_token,
    })
}

async fn revoke(
    cp: &ControlPlane,
    actor: Actor,
    table: CredentialTable,
    r: pb::RevokeCredentialRequest,
) -> Result<pb::RevokeCredentialResponse, Status> {
    let revoked_ids = cp.revoke_credentials(&actor, table, &r.id, &r.name).await?;
    Ok(pb::RevokeCredentialResponse { revoked_ids })
}

pub(super) async fn list_node(
    cp: &ControlPlane,
    _actor: Actor,
    r: pb::ListCredentialsRequest,
) -> Result<pb::ListCredentialsResponse, Status> {
    list(cp, CredentialTable::Node, &r).await
}

pub(super) async fn revoke_node(
    cp: &ControlPlane,
    actor: Actor,
    r: pb::RevokeCredentialRequest,
) -> Result<pb::RevokeCredentialResponse, Status> {
    revoke(cp, actor, CredentialTable::Node, r).await
}

pub(super) async fn list_admin(
    cp: &ControlPlane,
    _actor: Actor,
    r: pb::ListCredentialsRequest,
) -> Result<pb::ListCredentialsResponse, Status> {
    list(cp, CredentialTable::Admin, &r).await
}

pub(super) async fn revoke_admin(
    cp: &ControlPlane,
    actor: Actor,
    r: pb::RevokeCredentialRequest,
) -> Result<pb::RevokeCredentialResponse, Status> {
    revoke(cp, actor, CredentialTable::Admin, r).await
}

pub(super) async fn issue_admin(
    cp: &ControlPlane,
    actor: Actor,
    r: pb::IssueAdminCredentialRequest,
) -> Result<pb::IssueAdminCredentialResponse, Status> {
    let cert = Some(r.client_certificate_pem.as_str()).filter(|c| !c.is_empty());
    let (credential, id) = cp
        .issue_admin_credential(&actor, &r.name, &r.role, ttl(r.ttl_seconds), cert)
        .await?;
    Ok(pb::IssueAdminCredentialResponse {
        credential: credential.expose_secret().to_owned(),
        id,
    })
}
