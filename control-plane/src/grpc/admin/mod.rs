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

use crate::domain::Role;
use crate::service::{Actor, ControlPlane};

/// The Admin service.
#[derive(Debug, Clone)]
pub struct AdminService {
    cp: Arc<ControlPlane>,
}

/// Who may make a call (the role column of the table below).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// The `admin` role only (a `wa_…` credential of that role, or a JWT with `admin`).
    Admin,
    /// `admin` and `operator`.
    Operator,
    /// `admin` and `auditor` (a JWT with the `audit` scope is `auditor`).
    Auditor,
}

impl Access {
    fn roles(self) -> &'static [Role] {
        match self {
            Self::Admin => &[Role::Admin],
            Self::Operator => &[Role::Admin, Role::Operator],
            Self::Auditor => &[Role::Admin, Role::Auditor],
        }
    }

    /// As in README.md's table of roles.
    #[cfg(test)]
    fn shown(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "admin, operator",
            Self::Auditor => "admin, auditor",
        }
    }
}

/// What an `operator` may not ask for in a call it may otherwise make (the `admin` or
/// `audit` scope for a client credential); `None` when nothing.
type OperatorGuard<M> = fn(&M) -> Option<&'static str>;

/// A client credential asking for a scope an operator may not grant.
fn privileged_scope(scopes: &[String]) -> Option<&'static str> {
    scopes
        .iter()
        .any(|s| s == "admin" || s == "audit")
        .then_some("operator_privileged_scope")
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
        access: Access,
        action: &str,
        guard: OperatorGuard<M>,
        serve: F,
    ) -> Result<Response<R>, Status>
    where
        F: FnOnce(&'a ControlPlane, Actor, M) -> Fut,
        Fut: Future<Output = Result<R, Status>>,
    {
        let presented = warden_proto::bearer(&request);
        let peer = request.remote_addr().map(|a| a.ip());
        let (actor, role) = self
            .cp
            .authenticate_role(peer, presented, action, access.roles())
            .await?;
        let message = request.into_inner();
        if role == Role::Operator
            && let Some(reason) = guard(&message)
        {
            return Err(self
                .cp
                .refuse_role(&actor, role, action, reason)
                .await
                .into());
        }
        serve(&self.cp, actor, message).await.map(Response::new)
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

/// Implements `Admin` from a table: `rpc(Request) -> Response = access("action", serve
/// [, operator guard]);`, and lists every RPC with its access ([`RPC_ACCESS`]).
macro_rules! admin_rpcs {
    (@guard) => { |_| None };
    (@guard $guard:expr) => { $guard };
    ($(
        $rpc:ident($request:ident) -> $response:ident
            = $access:ident($action:literal, $serve:path $(, $guard:expr)?);
    )*) => {
        #[tonic::async_trait]
        impl Admin for AdminService {
            $(
                async fn $rpc(
                    &self,
                    request: Request<pb::$request>,
                ) -> Result<Response<pb::$response>, Status> {
                    let guard: OperatorGuard<pb::$request> = admin_rpcs!(@guard $($guard)?);
                    self.call(request, Access::$access, $action, guard, $serve).await
                }
            )*
        }

        /// Every RPC (snake case) with who may call it.
        #[cfg(test)]
        const RPC_ACCESS: &[(&str, Access)] = &[$((stringify!($rpc), Access::$access)),*];
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
        = Operator("model.add", models::add);
    list_models(ListModelsRequest) -> ListModelsResponse
        = Operator("model.list", models::list);
    remove_model(RemoveModelRequest) -> RemoveModelResponse
        = Operator("model.remove", models::remove);
    add_deployment(AddDeploymentRequest) -> ModelInfo
        = Operator("model.deployment.add", models::add_deployment);
    remove_deployment(RemoveDeploymentRequest) -> ModelInfo
        = Operator("model.deployment.remove", models::remove_deployment);

    issue_token(IssueTokenRequest) -> IssueTokenResponse
        = Operator("token.issue", tokens::issue, |r| privileged_scope(&r.scopes));
    revoke_token(RevokeTokenRequest) -> RevokeTokenResponse
        = Operator("token.revoke", tokens::revoke);
    list_tokens(ListTokensRequest) -> ListTokensResponse
        = Operator("token.list", tokens::list);

    create_virtual_key(CreateVirtualKeyRequest) -> CreateVirtualKeyResponse
        = Operator("vkey.create", vkeys::create, |r| privileged_scope(&r.scopes));
    list_virtual_keys(ListVirtualKeysRequest) -> ListVirtualKeysResponse
        = Operator("vkey.list", vkeys::list);
    revoke_virtual_key(RevokeVirtualKeyRequest) -> RevokeVirtualKeyResponse
        = Operator("vkey.revoke", vkeys::revoke);
    rotate_virtual_key(RotateVirtualKeyRequest) -> CreateVirtualKeyResponse
        = Operator("vkey.rotate", vkeys::rotate);

    rotate_signing_key(RotateSigningKeyRequest) -> SigningKeyInfo
        = Admin("signing_key.rotate", signing_keys::rotate);
    list_signing_keys(ListSigningKeysRequest) -> ListSigningKeysResponse
        = Admin("signing_key.list", signing_keys::list);

    issue_node_credential(IssueNodeCredentialRequest) -> IssueNodeCredentialResponse
        = Admin("node_credential.create", credentials::issue_node);
    list_nodes(ListNodesRequest) -> ListNodesResponse
        = Operator("node.list", nodes::list);
    list_node_credentials(ListCredentialsRequest) -> ListCredentialsResponse
        = Admin("node_credential.list", credentials::list_node);
    revoke_node_credential(RevokeCredentialRequest) -> RevokeCredentialResponse
        = Admin("node_credential.revoke", credentials::revoke_node);
    list_admin_credentials(ListCredentialsRequest) -> ListCredentialsResponse
        = Admin("admin_credential.list", credentials::list_admin);
    revoke_admin_credential(RevokeCredentialRequest) -> RevokeCredentialResponse
        = Admin("admin_credential.revoke", credentials::revoke_admin);
    issue_admin_credential(IssueAdminCredentialRequest) -> IssueAdminCredentialResponse
        = Admin("admin_credential.create", credentials::issue_admin);

    set_policy(SetPolicyRequest) -> PolicyInfo
        = Operator("policy.set", policies::set);
    get_policy(GetPolicyRequest) -> PolicyInfo
        = Operator("policy.get", policies::get);

    verify_audit(VerifyAuditRequest) -> VerifyAuditResponse
        = Auditor("audit.verify", audit::verify);
    list_audit(ListAuditRequest) -> ListAuditResponse
        = Auditor("audit.list", audit::list);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's table of roles has a row for every Admin RPC, with its access, and
    /// names no RPC that does not exist.
    #[test]
    fn readme_roles_table_has_a_row_for_every_rpc() {
        let readme = include_str!("../../../../README.md");
        let (_, section) = readme
            .split_once("### Admin roles")
            .expect("README.md has a `### Admin roles` section");
        let section = section.split("\n#").next().unwrap_or_default();
        let rows: Vec<(String, String)> = section
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let rpc = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                let roles = cells.get(2)?;
                rpc.chars()
                    .all(|c| c.is_ascii_alphanumeric())
                    .then(|| (rpc.to_owned(), (*roles).to_owned()))
            })
            .collect();
        let camel = |snake: &str| -> String {
            snake
                .split('_')
                .map(|w| {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                        .unwrap_or_default()
                })
                .collect()
        };
        for (rpc, access) in RPC_ACCESS {
            let name = camel(rpc);
            let row = rows.iter().find(|(r, _)| *r == name);
            assert_eq!(
                row.map(|(_, roles)| roles.as_str()),
                Some(access.shown()),
                "README.md's roles table: `{name}` needs a row `| `{name}` | {} |`",
                access.shown()
            );
        }
        for (rpc, _) in &rows {
            assert!(
                RPC_ACCESS.iter().any(|(r, _)| camel(r) == *rpc),
                "README.md's roles table names `{rpc}`, which is no Admin RPC"
            );
        }
    }

    #[test]
    fn an_operator_may_not_grant_admin_or_audit() {
        assert!(privileged_scope(&["write".into(), "admin".into()]).is_some());
        assert!(privileged_scope(&["audit".into()]).is_some());
        assert!(privileged_scope(&["read".into(), "write".into()]).is_none());
    }
}
