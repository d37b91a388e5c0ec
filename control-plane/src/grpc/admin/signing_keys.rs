//! JWT signing keys over the Admin API.

use tonic::Status;
use warden_proto::admin::v1 as pb;

use crate::page::{PageKey, page_whole};
use crate::service::{Actor, ControlPlane, SigningKeyStatus};

pub(super) async fn rotate(
    cp: &ControlPlane,
    actor: Actor,
    _: pb::RotateSigningKeyRequest,
) -> Result<pb::SigningKeyInfo, Status> {
    Ok(signing_key_info(cp.rotate_signing_key(&actor).await?))
}

pub(super) async fn list(
    cp: &ControlPlane,
    _: Actor,
    r: pb::ListSigningKeysRequest,
) -> Result<pb::ListSigningKeysResponse, Status> {
    let page = page_whole(
        "signing_keys",
        r.page_size,
        &r.page_token,
        cp.signing_keys().await?,
        |k| PageKey::new(k.record.created_at, k.record.kid.clone()),
    )?;
    Ok(pb::ListSigningKeysResponse {
        keys: page.items.into_iter().map(signing_key_info).collect(),
        next_page_token: page.next_token,
    })
}

fn signing_key_info(k: SigningKeyStatus) -> pb::SigningKeyInfo {
    pb::SigningKeyInfo {
        kid: k.record.kid,
        algorithm: k.record.algorithm,
        created_at: k.record.created_at,
        active: k.active,
        needed_until: k.needed_until,
    }
}
