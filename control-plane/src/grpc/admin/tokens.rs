//! JWTs over the Admin API.

use secrecy::ExposeSecret;
use tonic::Status;
use warden_proto::admin::v1 as pb;

use super::policies::limits_from;
use super::{opt_time, ttl};
use crate::service::{Actor, ControlPlane};

pub(super) async fn issue(
    cp: &ControlPlane,
    actor: Actor,
    r: pb::IssueTokenRequest,
) -> Result<pb::IssueTokenResponse, Status> {
    let (token, record) = cp
        .issue_token(
            &actor,
            &r.subject,
            &r.scopes,
            &r.models,
            ttl(r.ttl_seconds),
            r.policy.as_ref().map(limits_from).transpose()?,
        )
        .await?;
    Ok(pb::IssueTokenResponse {
        token: token.expose_secret().to_owned(),
        jti: record.jti,
        expires_at: record.expires_at,
    })
}

pub(super) async fn revoke(
    cp: &ControlPlane,
    actor: Actor,
    r: pb::RevokeTokenRequest,
) -> Result<pb::RevokeTokenResponse, Status> {
    cp.revoke_token(&actor, &r.jti).await?;
    Ok(pb::RevokeTokenResponse {})
}

pub(super) async fn list(
    cp: &ControlPlane,
    _: Actor,
    r: pb::ListTokensRequest,
) -> Result<pb::ListTokensResponse, Status> {
    let page = cp.tokens_page(r.page_size, &r.page_token).await?;
    let tokens = page
        .items
        .into_iter()
        .map(|t| pb::TokenInfo {
            jti: t.jti,
            subject: t.subject,
            scopes: t.scopes,
            models: t.models,
            issued_at: t.issued_at,
            expires_at: t.expires_at,
            revoked_at: opt_time(t.revoked_at),
            kid: t.kid,
        })
        .collect();
    Ok(pb::ListTokensResponse {
        tokens,
        next_page_token: page.next_token,
    })
}
