//! JWT signing keys over the Admin API.

use tonic::Status;
use warden_proto::admin::v1 as pb;

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
    _: pb::ListSigningKeysRequest,
) -> Result<pb::ListSigningKeysResponse, Status> {
    let keys = cp
        .signing_keys()
        .await?
        .into_iter()
        .map(signing_key_info)
        .collect();
    Ok(pb::ListSigningKeysResponse { keys })
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
