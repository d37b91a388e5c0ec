//! `warden.admin.v1.Admin`: every call authenticates its caller first (failures are
//! audited by the service), then converts the request and delegates to
//! [`ControlPlane`].
//!
//! The table at the end of this file names, for each RPC, the audit action its caller is
//! authenticated for and the function that serves it; those functions live in one file
//! per resource, named as in `service/`: `providers`, `models`, `tokens`, `vkeys`,
//! `signing_keys`, `credentials`, `nodes`, `policies`, `audit`, `incident`, `ip_blocks`,
//! `dlp`.

mod audit;
mod credentials;
mod dlp;
mod incident;
mod ip_blocks;
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

use warden_core::audit_detail::Detail;

use crate::domain::Role;
use crate::grpc::limits::client_certificate;
use crate::service::ClientKey;
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

/// Whether an RPC changes anything (the effect column of the table below), and so who
/// writes its audit row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// A change: the service audits it under the RPC's action.
    Change,
    /// A read: [`AdminService::call`] audits it as `admin.read`, the action as subject.
    Read,
    /// A read that writes its own audit row under its action (the audit log's reads,
    /// `audit.list` and `audit.verify`, and `policy.get`, which also reads usage).
    SelfAudited,
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
    /// message to `serve`; a service error becomes its gRPC status. A [`Effect::Read`] is
    /// audited here, as `admin.read` by the actor on `action`, with the RPC's name and the
    /// outcome.
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per column of the RPC table"
    )]
    async fn call<'a, M, R, F, Fut>(
        &'a self,
        request: Request<M>,
        access: Access,
        effect: Effect,
        rpc: &str,
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
        let client = ClientKey {
            spki_sha256: client_certificate(&request).map(|c| c.spki_sha256()),
            required: false,
        };
        let (actor, role) = self
            .cp
            .authenticate_role(peer, client, presented, action, access.roles())
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
        if effect != Effect::Read {
            return serve(&self.cp, actor, message).await.map(Response::new);
        }
        let reader = actor.clone();
        let result = serve(&self.cp, actor, message).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(status) => failure_label(status.code()),
        };
        self.cp
            .audit(
                "admin.read",
                &reader.0,
                action,
                outcome,
                &Detail::new().with("rpc", rpc).build(),
            )
            .await;
        result.map(Response::new)
    }
}

/// The audit result of a failed read: the label of its error class, as the service's own
/// rows have it (`not_found`), or `failure`.
fn failure_label(code: tonic::Code) -> &'static str {
    use warden_proto::ErrorCode as E;
    [
        E::InvalidArgument,
        E::Unauthenticated,
        E::PermissionDenied,
        E::NotFound,
        E::AlreadyExists,
        E::Unavailable,
        E::Internal,
    ]
    .into_iter()
    .find(|e| e.grpc() == code)
    .map_or("failure", E::metric_label)
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
            = $effect:ident $access:ident($action:literal, $serve:path $(, $guard:expr)?);
    )*) => {
        #[tonic::async_trait]
        impl Admin for AdminService {
            $(
                async fn $rpc(
                    &self,
                    request: Request<pb::$request>,
                ) -> Result<Response<pb::$response>, Status> {
                    let guard: OperatorGuard<pb::$request> = admin_rpcs!(@guard $($guard)?);
                    self.call(
                        request,
                        Access::$access,
                        Effect::$effect,
                        stringify!($rpc),
                        $action,
                        guard,
                        $serve,
                    )
                    .await
                }
            )*
        }

        /// Every RPC (snake case) with who may call it.
        #[cfg(test)]
        const RPC_ACCESS: &[(&str, Access)] = &[$((stringify!($rpc), Access::$access)),*];

        /// Every RPC (snake case) with its action and effect.
        #[cfg(test)]
        const RPC_EFFECT: &[(&str, &str, Effect)] =
            &[$((stringify!($rpc), $action, Effect::$effect)),*];
    };
}

admin_rpcs! {
    add_provider(AddProviderRequest) -> ProviderInfo
        = Change Admin("provider.add", providers::add);
    list_providers(ListProvidersRequest) -> ListProvidersResponse
        = Read Admin("provider.list", providers::list);
    remove_provider(RemoveProviderRequest) -> RemoveProviderResponse
        = Change Admin("provider.remove", providers::remove);
    add_provider_key(AddProviderKeyRequest) -> ProviderKeyInfo
        = Change Admin("provider.key.add", providers::add_key);
    rotate_provider_key(RotateProviderKeyRequest) -> ProviderKeyInfo
        = Change Admin("provider.key.rotate", providers::rotate_key);
    remove_provider_key(RemoveProviderKeyRequest) -> RemoveProviderKeyResponse
        = Change Admin("provider.key.remove", providers::remove_key);
    set_provider_key_state(SetProviderKeyStateRequest) -> ProviderKeyInfo
        = Change Admin("provider.key.state", providers::set_key_state);

    add_model(AddModelRequest) -> ModelInfo
        = Change Operator("model.add", models::add);
    list_models(ListModelsRequest) -> ListModelsResponse
        = Read Operator("model.list", models::list);
    remove_model(RemoveModelRequest) -> RemoveModelResponse
        = Change Operator("model.remove", models::remove);
    add_deployment(AddDeploymentRequest) -> ModelInfo
        = Change Operator("model.deployment.add", models::add_deployment);
    remove_deployment(RemoveDeploymentRequest) -> ModelInfo
        = Change Operator("model.deployment.remove", models::remove_deployment);

    issue_token(IssueTokenRequest) -> IssueTokenResponse
        = Change Operator("token.issue", tokens::issue, |r| privileged_scope(&r.scopes));
    revoke_token(RevokeTokenRequest) -> RevokeTokenResponse
        = Change Operator("token.revoke", tokens::revoke);
    list_tokens(ListTokensRequest) -> ListTokensResponse
        = Read Operator("token.list", tokens::list);

    create_virtual_key(CreateVirtualKeyRequest) -> CreateVirtualKeyResponse
        = Change Operator("vkey.create", vkeys::create, |r| privileged_scope(&r.scopes));
    list_virtual_keys(ListVirtualKeysRequest) -> ListVirtualKeysResponse
        = Read Operator("vkey.list", vkeys::list);
    revoke_virtual_key(RevokeVirtualKeyRequest) -> RevokeVirtualKeyResponse
        = Change Operator("vkey.revoke", vkeys::revoke);
    rotate_virtual_key(RotateVirtualKeyRequest) -> CreateVirtualKeyResponse
        = Change Operator("vkey.rotate", vkeys::rotate);

    rotate_signing_key(RotateSigningKeyRequest) -> SigningKeyInfo
        = Change Admin("signing_key.rotate", signing_keys::rotate);
    list_signing_keys(ListSigningKeysRequest) -> ListSigningKeysResponse
        = Read Admin("signing_key.list", signing_keys::list);

    issue_node_credential(IssueNodeCredentialRequest) -> IssueNodeCredentialResponse
        = Change Admin("node_credential.create", credentials::issue_node);
    list_nodes(ListNodesRequest) -> ListNodesResponse
        = Read Operator("node.list", nodes::list);
    list_replicas(ListReplicasRequest) -> ListReplicasResponse
        = Read Admin("cluster.replica_list", nodes::list_replicas);
    list_node_credentials(ListCredentialsRequest) -> ListCredentialsResponse
        = Read Admin("node_credential.list", credentials::list_node);
    revoke_node_credential(RevokeCredentialRequest) -> RevokeCredentialResponse
        = Change Admin("node_credential.revoke", credentials::revoke_node);
    list_admin_credentials(ListCredentialsRequest) -> ListCredentialsResponse
        = Read Admin("admin_credential.list", credentials::list_admin);
    revoke_admin_credential(RevokeCredentialRequest) -> RevokeCredentialResponse
        = Change Admin("admin_credential.revoke", credentials::revoke_admin);
    issue_admin_credential(IssueAdminCredentialRequest) -> IssueAdminCredentialResponse
        = Change Admin("admin_credential.create", credentials::issue_admin);

    set_policy(SetPolicyRequest) -> PolicyInfo
        = Change Operator("policy.set", policies::set);
    get_policy(GetPolicyRequest) -> PolicyInfo
        = SelfAudited Operator("policy.get", policies::get);

    add_dlp_rule(AddDlpRuleRequest) -> DlpRuleInfo
        = Change Admin("dlp.rule_add", dlp::add);
    remove_dlp_rule(RemoveDlpRuleRequest) -> RemoveDlpRuleResponse
        = Change Admin("dlp.rule_remove", dlp::remove);
    list_dlp_rules(ListDlpRulesRequest) -> ListDlpRulesResponse
        = Read Operator("dlp.rule_list", dlp::list);

    verify_audit(VerifyAuditRequest) -> VerifyAuditResponse
        = SelfAudited Auditor("audit.verify", audit::verify);
    list_audit(ListAuditRequest) -> ListAuditResponse
        = SelfAudited Auditor("audit.list", audit::list);

    suspend_credentials(SuspendCredentialsRequest) -> SuspensionInfo
        = Change Admin("credentials.suspend", incident::suspend);
    resume_credentials(ResumeCredentialsRequest) -> ResumeCredentialsResponse
        = Change Admin("credentials.resume", incident::resume);
    list_suspensions(ListSuspensionsRequest) -> ListSuspensionsResponse
        = Read Admin("credentials.suspension.list", incident::list);
    lockdown(LockdownRequest) -> LockdownInfo
        = Change Admin("lockdown.on", incident::lockdown);
    lift_lockdown(LiftLockdownRequest) -> LockdownInfo
        = Change Admin("lockdown.lift", incident::lift);
    get_lockdown(GetLockdownRequest) -> LockdownInfo
        = Read Admin("lockdown.status", incident::status);
    revoke_all_client_credentials(RevokeAllClientCredentialsRequest) -> RevokeAllClientCredentialsResponse
        = Change Admin("credentials.revoke_all", incident::revoke_all);
    block_ip(BlockIpRequest) -> IpBlockInfo
        = Change Admin("ip.block", ip_blocks::block);
    unblock_ip(UnblockIpRequest) -> UnblockIpResponse
        = Change Admin("ip.unblock", ip_blocks::unblock);
    list_ip_blocks(ListIpBlocksRequest) -> ListIpBlocksResponse
        = Read Admin("ip.list", ip_blocks::list);
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

    /// Every read is audited: by `call` as `admin.read`, or by itself (the audit log's
    /// reads, `policy.get`); a change is audited by the service under its action.
    #[test]
    fn every_read_rpc_is_audited_as_a_read() {
        for (rpc, action, effect) in RPC_EFFECT {
            let reads =
                rpc.starts_with("list_") || rpc.starts_with("get_") || *rpc == "verify_audit";
            let self_audited = action.starts_with("audit.") || *action == "policy.get";
            let expected = match (reads, self_audited) {
                (true, true) => Effect::SelfAudited,
                (true, false) => Effect::Read,
                (false, _) => Effect::Change,
            };
            assert_eq!(*effect, expected, "{rpc} ({action})");
        }
    }

    #[test]
    fn an_operator_may_not_grant_admin_or_audit() {
        assert!(privileged_scope(&["write".into(), "admin".into()]).is_some());
        assert!(privileged_scope(&["audit".into()]).is_some());
        assert!(privileged_scope(&["read".into(), "write".into()]).is_none());
    }
}
