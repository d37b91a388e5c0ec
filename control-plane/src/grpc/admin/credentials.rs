//! Node credentials over the Admin API.

use secrecy::ExposeSecret;
use tonic::Status;
use warden_proto::admin::v1 as pb;

use crate::service::{Actor, ControlPlane};

pub(super) async fn issue_node(
    cp: &ControlPlane,
    actor: Actor,
    r: pb::IssueNodeCredentialRequest,
) -> Result<pb::IssueNodeCredentialResponse, Status> {
    let (credential, id) = cp.issue_node_credential(&actor, &r.name).await?;
    Ok(pb::IssueNodeCredentialResponse {
        credential: credential.expose_secret().to_owned(),
        id,
    })
}
