//! `warden.admin.v1.Admin`: every call authenticates its caller first (failures are
//! audited by the service), then converts the request and delegates to
//! [`ControlPlane`].
//!
//! The table at the end of this file names, for each RPC, the audit action its caller is
//! authenticated for and the function that serves it; those functions live in one file
//! per resource, named as in `service/`: `providers`, `models`, `tokens`, `vkeys`,
//! `signing_keys`, `credentials`, `nodes`, `policies`, `audit`.

mod audit;
mod credentials;
mod models;
mod nodes;
mod policies;
mod providers;
mod signing_keys;
mod tokens;
mod vkeys;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};
use warden_proto::admin::v1 as pb;
use warden_proto::admin::v1::admin_server::Admin;

use crate::service::{Actor, ControlPlane};

/// The Admin service.
#[derive(Debug, Clone)]
pub struct AdminService {
    cp: Arc<ControlPlane>,
}

/// Who may make a call.
enum Caller {
    /// An admin credential (`wa_…`), or a JWT with the `admin` scope.
    Admin,
    /// An admin credential, or a JWT with the `audit` scope (reading the audit log).
    AuditReader,
}

impl AdminService {
    pub fn new(cp: Arc<ControlPlane>) -> Self {
        Self { cp }
    }

    /// One RPC: authenticates the caller for `action`, then hands the actor and the request
    /// message to `serve`; a service error becomes its gRPC status.
    async fn call<'a, M, R, F, Fut>(
        &'a self,
        request: Request<M>,
        caller: Caller,
        action: &str,
        serve: F,
    ) -> Result<Response<R>, Status>
    where
        F: FnOnce(&'a ControlPlane, Actor, M) -> Fut,
        Fut: Future<Output = Result<R, Status>>,
    {
        let presented = warden_proto::bearer(&request);
        let actor = match caller {
            Caller::Admin => self.cp.authenticate_admin(presented, action).await?,
            Caller::AuditReader => self.cp.authenticate_audit_reader(presented, action).await?,
        };
        serve(&self.cp, actor, request.into_inner())
            .await
            .map(Response::new)
    }
}

/// A TTL in seconds; 0 = the default.
fn ttl(seconds: u64) -> Option<Duration> {
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

/// A time that may be unset; 0 = unset.
fn opt_time(t: Option<i64>) -> i64 {
    t.unwrap_or(0)
}

/// Implements `Admin` from a table: `rpc(Request) -> Response = caller("action", serve);`.
macro_rules! admin_rpcs {
    ($(
        $rpc:ident($request:ident) -> $response:ident
            = $caller:ident($action:literal, $serve:path);
    )*) => {
        #[tonic::async_trait]
        impl Admin for AdminService {
            $(
                async fn $rpc(
                    &self,
                    request: Request<pb::$request>,
                ) -> Result<Response<pb::$response>, Status> {
                    self.call(request, Caller::$caller, $action, $serve).await
                }
            )*
        }
    };
}

admin_rpcs! {
    add_provider(AddProviderRequest) -> ProviderInfo
        = Admin("provider.add", providers::add);
    list_providers(ListProvidersRequest) -> ListProvidersResponse
        = Admin("provider.list", providers::list);
    remove_provider(RemoveProviderRequest) -> RemoveProviderResponse
        = Admin("provider.remove", providers::remove);
    add_provider_key(AddProviderKeyRequest) -> ProviderKeyInfo
        = Admin("provider.key.add", providers::add_key);
    rotate_provider_key(RotateProviderKeyRequest) -> ProviderKeyInfo
        = Admin("provider.key.rotate", providers::rotate_key);
    remove_provider_key(RemoveProviderKeyRequest) -> RemoveProviderKeyResponse
        = Admin("provider.key.remove", providers::remove_key);
    set_provider_key_state(SetProviderKeyStateRequest) -> ProviderKeyInfo
        = Admin("provider.key.state", providers::set_key_state);

    add_model(AddModelRequest) -> ModelInfo
        = Admin("model.add", models::add);
    list_models(ListModelsRequest) -> ListModelsResponse
        = Admin("model.list", models::list);
    remove_model(RemoveModelRequest) -> RemoveModelResponse
        = Admin("model.remove", models::remove);
    add_deployment(AddDeploymentRequest) -> ModelInfo
        = Admin("model.deployment.add", models::add_deployment);
    remove_deployment(RemoveDeploymentRequest) -> ModelInfo
        = Admin("model.deployment.remove", models::remove_deployment);

    issue_token(IssueTokenRequest) -> IssueTokenResponse
        = Admin("token.issue", tokens::issue);
    revoke_token(RevokeTokenRequest) -> RevokeTokenResponse
        = Admin("token.revoke", tokens::revoke);
    list_tokens(ListTokensRequest) -> ListTokensResponse
        = Admin("token.list", tokens::list);

    create_virtual_key(CreateVirtualKeyRequest) -> CreateVirtualKeyResponse
        = Admin("vkey.create", vkeys::create);
    list_virtual_keys(ListVirtualKeysRequest) -> ListVirtualKeysResponse
        = Admin("vkey.list", vkeys::list);
    revoke_virtual_key(RevokeVirtualKeyRequest) -> RevokeVirtualKeyResponse
        = Admin("vkey.revoke", vkeys::revoke);
    rotate_virtual_key(RotateVirtualKeyRequest) -> CreateVirtualKeyResponse
        = Admin("vkey.rotate", vkeys::rotate);

    rotate_signing_key(RotateSigningKeyRequest) -> SigningKeyInfo
        = Admin("signing_key.rotate", signing_keys::rotate);
    list_signing_keys(ListSigningKeysRequest) -> ListSigningKeysResponse
        = Admin("signing_key.list", signing_keys::list);

    issue_node_credential(IssueNodeCredentialRequest) -> IssueNodeCredentialResponse
        = Admin("node_credential.create", credentials::issue_node);
    list_nodes(ListNodesRequest) -> ListNodesResponse
        = Admin("node.list", nodes::list);
    list_node_credentials(ListCredentialsRequest) -> ListCredentialsResponse
        = Admin("node_credential.list", credentials::list_node);
    revoke_node_credential(RevokeCredentialRequest) -> RevokeCredentialResponse
        = Admin("node_credential.revoke", credentials::revoke_node);
    list_admin_credentials(ListCredentialsRequest) -> ListCredentialsResponse
        = Admin("admin_credential.list", credentials::list_admin);
    revoke_admin_credential(RevokeCredentialRequest) -> RevokeCredentialResponse
        = Admin("admin_credential.revoke", credentials::revoke_admin);

    set_policy(SetPolicyRequest) -> PolicyInfo
        = Admin("policy.set", policies::set);
    get_policy(GetPolicyRequest) -> PolicyInfo
        = Admin("policy.get", policies::get);

    verify_audit(VerifyAuditRequest) -> VerifyAuditResponse
        = AuditReader("audit.verify", audit::verify);
    list_audit(ListAuditRequest) -> ListAuditResponse
        = AuditReader("audit.list", audit::list);
}
