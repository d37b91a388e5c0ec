//! Virtual keys over the Admin API.

use std::time::Duration;

use secrecy::ExposeSecret;
use tonic::Status;
use warden_proto::admin::v1 as pb;

use super::policies::limits_from;
use super::{opt_time, ttl};
use crate::domain::VirtualKeyRecord;
use crate::service::{Actor, ControlPlane};

pub(super) async fn create(
    cp: &ControlPlane,
    actor: Actor,
    r: pb::CreateVirtualKeyRequest,
) -> Result<pb::CreateVirtualKeyResponse, Status> {
    let (key, k) = cp
        .create_virtual_key(
            &actor,
            &r.name,
            &r.owner,
            &r.models,
            &r.scopes,
            ttl(r.ttl_seconds),
            r.policy.as_ref().map(limits_from).transpose()?,
            crate::domain::AccessPolicy {
                allowed_ips: r.allowed_ips,
                allowed_origins: r.allowed_origins,
                ..Default::default()
            },
        )
        .await?;
    Ok(pb::CreateVirtualKeyResponse {
        key: key.expose_secret().to_owned(),
        info: Some(vkey_info(k)),
    })
}

pub(super) async fn list(
    cp: &ControlPlane,
    _: Actor,
    r: pb::ListVirtualKeysRequest,
) -> Result<pb::ListVirtualKeysResponse, Status> {
    let page = cp.virtual_keys_page(r.page_size, &r.page_token).await?;
    Ok(pb::ListVirtualKeysResponse {
        keys: page.items.into_iter().map(vkey_info).collect(),
        next_page_token: page.next_token,
    })
}

pub(super) async fn revoke(
    cp: &ControlPlane,
    actor: Actor,
    r: pb::RevokeVirtualKeyRequest,
) -> Result<pb::RevokeVirtualKeyResponse, Status> {
    cp.revoke_virtual_key(&actor, &r.id).await?;
    Ok(pb::RevokeVirtualKeyResponse {})
}

pub(super) async fn rotate(
    cp: &ControlPlane,
    actor: Actor,
    r: pb::RotateVirtualKeyRequest,
) -> Result<pb::CreateVirtualKeyResponse, Status> {
    let (key, k) = cp
        .rotate_virtual_key(&actor, &r.id, Duration::from_secs(r.grace_seconds))
        .await?;
    Ok(pb::CreateVirtualKeyResponse {
        key: key.expose_secret().to_owned(),
        info: Some(vkey_info(k)),
    })
}

fn vkey_info(k: VirtualKeyRecord) -> pb::VirtualKeyInfo {
    pb::VirtualKeyInfo {
        id: k.id,
        name: k.name,
        owner: k.owner,
        models: k.models,
        scopes: k.scopes,
        created_at: k.created_at,
        expires_at: k.expires_at,
        revoked_at: opt_time(k.revoked_at),
        previous_expires_at: if k.previous_hash.is_some()
            && k.previous_expires_at > warden_core::unix_now()
        {
            k.previous_expires_at
        } else {
            0
        },
    }
}
