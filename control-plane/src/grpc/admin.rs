//! `warden.admin.v1.Admin`: every call authenticates its caller first (failures are
//! audited by the service), then converts the request and delegates to
//! [`ControlPlane`].
//!
//! The table below names, for each RPC, the audit action its caller is
//! authenticated for and the function that serves it; those functions live in one module
//! per resource, named as in `service/`: `providers`, `models`, `tokens`, `vkeys`,
//! `signing_keys`, `credentials`, `nodes`, `policies`, `audit`.

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

    set_policy(SetPolicyRequest) -> PolicyInfo
        = Admin("policy.set", policies::set);
    get_policy(GetPolicyRequest) -> PolicyInfo
        = Admin("policy.get", policies::get);

    verify_audit(VerifyAuditRequest) -> VerifyAuditResponse
        = AuditReader("audit.verify", audit::verify);
    list_audit(ListAuditRequest) -> ListAuditResponse
        = AuditReader("audit.list", audit::list);
}

mod providers {
    //! Providers and their upstream keys over the Admin API.

    use secrecy::SecretString;
    use tonic::Status;
    use warden_proto::admin::v1 as pb;

    use crate::domain::{ApiFormat, ProviderKey, Source};
    use crate::service::{Actor, ControlPlane, KeySource, ProviderOptions};

    pub(super) async fn add(
        cp: &ControlPlane,
        actor: Actor,
        r: pb::AddProviderRequest,
    ) -> Result<pb::ProviderInfo, Status> {
        let format = match pb::ApiFormat::try_from(r.format) {
            Ok(pb::ApiFormat::Openai) => ApiFormat::OpenAi,
            Ok(pb::ApiFormat::Anthropic) => ApiFormat::Anthropic,
            _ => {
                return Err(Status::invalid_argument(
                    "format must be openai or anthropic",
                ));
            }
        };
        let p = cp
            .add_provider(
                &actor,
                &r.name,
                format,
                &r.base_url,
                Source::Admin,
                ProviderOptions {
                    passthrough: r.passthrough,
                    drop_params: r.drop_params,
                },
            )
            .await?;
        Ok(pb::ProviderInfo {
            name: p.name,
            format: format_to_proto(p.format),
            base_url: p.base_url,
            keys: Vec::new(),
            source: p.source.as_str().to_owned(),
            passthrough: p.passthrough,
            drop_params: p.drop_params,
        })
    }

    pub(super) async fn list(
        cp: &ControlPlane,
        _: Actor,
        _: pb::ListProvidersRequest,
    ) -> Result<pb::ListProvidersResponse, Status> {
        let (providers, keys) = cp.list_providers().await?;
        let providers = providers
            .into_iter()
            .map(|p| pb::ProviderInfo {
                keys: keys
                    .iter()
                    .filter(|k| k.provider == p.name)
                    .map(key_info)
                    .collect(),
                format: format_to_proto(p.format),
                source: p.source.as_str().to_owned(),
                passthrough: p.passthrough,
                drop_params: p.drop_params,
                name: p.name,
                base_url: p.base_url,
            })
            .collect();
        Ok(pb::ListProvidersResponse { providers })
    }

    pub(super) async fn remove(
        cp: &ControlPlane,
        actor: Actor,
        r: pb::RemoveProviderRequest,
    ) -> Result<pb::RemoveProviderResponse, Status> {
        cp.remove_provider(&actor, &r.name).await?;
        Ok(pb::RemoveProviderResponse {})
    }

    pub(super) async fn add_key(
        cp: &ControlPlane,
        actor: Actor,
        r: pb::AddProviderKeyRequest,
    ) -> Result<pb::ProviderKeyInfo, Status> {
        let source = match (r.secret.is_empty(), r.reference.trim().is_empty()) {
            (false, true) => KeySource::Value(SecretString::from(r.secret)),
            (true, false) => KeySource::Reference(r.reference),
            _ => {
                return Err(Status::invalid_argument(
                    "set exactly one of `secret` (a value) and `reference` (vault://…, aws-sm://…, azure-kv://…, file://…, env://…)",
                ));
            }
        };
        let k = cp.add_provider_key(&actor, &r.provider, source).await?;
        Ok(key_info(&k))
    }

    pub(super) async fn rotate_key(
        cp: &ControlPlane,
        actor: Actor,
        r: pb::RotateProviderKeyRequest,
    ) -> Result<pb::ProviderKeyInfo, Status> {
        let k = cp
            .rotate_provider_key(&actor, &r.provider, &r.key_id, SecretString::from(r.secret))
            .await?;
        Ok(key_info(&k))
    }

    pub(super) async fn remove_key(
        cp: &ControlPlane,
        actor: Actor,
        r: pb::RemoveProviderKeyRequest,
    ) -> Result<pb::RemoveProviderKeyResponse, Status> {
        cp.remove_provider_key(&actor, &r.provider, &r.key_id)
            .await?;
        Ok(pb::RemoveProviderKeyResponse {})
    }

    pub(super) async fn set_key_state(
        cp: &ControlPlane,
        actor: Actor,
        r: pb::SetProviderKeyStateRequest,
    ) -> Result<pb::ProviderKeyInfo, Status> {
        use pb::set_provider_key_state_request::Action;
        let quarantine = match Action::try_from(r.action) {
            Ok(Action::Quarantine) => true,
            Ok(Action::Enable) => false,
            _ => {
                return Err(Status::invalid_argument(
                    "action must be QUARANTINE or ENABLE",
                ));
            }
        };
        let k = cp
            .set_provider_key_state(&actor, &r.provider, &r.key_id, quarantine, &r.reason)
            .await?;
        Ok(key_info(&k))
    }

    fn format_to_proto(f: ApiFormat) -> i32 {
        match f {
            ApiFormat::OpenAi => pb::ApiFormat::Openai as i32,
            ApiFormat::Anthropic => pb::ApiFormat::Anthropic as i32,
            ApiFormat::Echo => pb::ApiFormat::Echo as i32,
        }
    }

    fn key_info(k: &ProviderKey) -> pb::ProviderKeyInfo {
        pb::ProviderKeyInfo {
            id: k.id.clone(),
            provider: k.provider.clone(),
            fingerprint: k.fingerprint.clone(),
            created_at: k.created_at,
            disabled_reason: k.disabled_reason.clone().unwrap_or_default(),
            disabled_at: k.disabled_at.unwrap_or(0),
            reference: crate::secrets::manager::canonical(&k.secret_name),
        }
    }
}

mod models {
    //! Models and their deployments over the Admin API.

    use tonic::Status;
    use warden_proto::admin::v1 as pb;

    use crate::domain::{Price, Source};
    use crate::service::{Actor, ControlPlane};

    pub(super) async fn add(
        cp: &ControlPlane,
        actor: Actor,
        r: pb::AddModelRequest,
    ) -> Result<pb::ModelInfo, Status> {
        let m = cp
            .add_model(
                &actor,
                &r.alias,
                &r.provider,
                &r.upstream_model,
                Source::Admin,
                &r.fallbacks,
                (r.input_price_per_mtok != 0.0 || r.output_price_per_mtok != 0.0).then_some(
                    Price {
                        input_per_mtok: r.input_price_per_mtok,
                        output_per_mtok: r.output_price_per_mtok,
                    },
                ),
            )
            .await?;
        Ok(pb::ModelInfo {
            alias: m.alias,
            provider: m.provider,
            upstream_model: m.upstream_model,
            source: m.source.as_str().to_owned(),
            ..Default::default()
        })
    }

    pub(super) async fn list(
        cp: &ControlPlane,
        _: Actor,
        _: pb::ListModelsRequest,
    ) -> Result<pb::ListModelsResponse, Status> {
        let prices = cp.list_prices().await?;
        let deployments = cp.list_deployments().await?;
        let models = cp
            .list_models()
            .await?
            .into_iter()
            .map(|m| {
                let price = prices
                    .iter()
                    .find(|(alias, _)| alias == &m.alias)
                    .map(|(_, p)| *p)
                    .unwrap_or_default();
                pb::ModelInfo {
                    alias: m.alias.clone(),
                    provider: m.provider,
                    upstream_model: m.upstream_model,
                    source: m.source.as_str().to_owned(),
                    weight: m.weight,
                    deployments: deployments
                        .iter()
                        .filter(|d| d.alias == m.alias)
                        .map(|d| pb::DeploymentInfo {
                            provider: d.provider.clone(),
                            upstream_model: d.upstream_model.clone(),
                            weight: d.weight,
                        })
                        .collect(),
                    fallbacks: m.fallbacks,
                    input_price_per_mtok: price.input_per_mtok,
                    output_price_per_mtok: price.output_per_mtok,
                }
            })
            .collect();
        Ok(pb::ListModelsResponse { models })
    }

    pub(super) async fn remove(
        cp: &ControlPlane,
        actor: Actor,
        r: pb::RemoveModelRequest,
    ) -> Result<pb::RemoveModelResponse, Status> {
        cp.remove_model(&actor, &r.alias).await?;
        Ok(pb::RemoveModelResponse {})
    }

    pub(super) async fn add_deployment(
        cp: &ControlPlane,
        actor: Actor,
        r: pb::AddDeploymentRequest,
    ) -> Result<pb::ModelInfo, Status> {
        cp.add_deployment(&actor, &r.alias, &r.provider, &r.upstream_model, r.weight)
            .await?;
        Ok(pb::ModelInfo {
            alias: r.alias,
            ..Default::default()
        })
    }

    pub(super) async fn remove_deployment(
        cp: &ControlPlane,
        actor: Actor,
        r: pb::RemoveDeploymentRequest,
    ) -> Result<pb::ModelInfo, Status> {
        cp.remove_deployment(&actor, &r.alias, &r.provider, &r.upstream_model)
            .await?;
        Ok(pb::ModelInfo {
            alias: r.alias,
            ..Default::default()
        })
    }
}

mod tokens {
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
        _: pb::ListTokensRequest,
    ) -> Result<pb::ListTokensResponse, Status> {
        let tokens = cp
            .list_tokens()
            .await?
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
        Ok(pb::ListTokensResponse { tokens })
    }
}

mod vkeys {
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
        _: pb::ListVirtualKeysRequest,
    ) -> Result<pb::ListVirtualKeysResponse, Status> {
        let keys = cp
            .list_virtual_keys()
            .await?
            .into_iter()
            .map(vkey_info)
            .collect();
        Ok(pb::ListVirtualKeysResponse { keys })
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
}

mod signing_keys {
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
}

mod credentials {
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
}

mod nodes {
    //! Data-plane nodes over the Admin API.

    use tonic::Status;
    use warden_proto::admin::v1 as pb;

    use crate::service::{Actor, ControlPlane};

    pub(super) async fn list(
        cp: &ControlPlane,
        _: Actor,
        _: pb::ListNodesRequest,
    ) -> Result<pb::ListNodesResponse, Status> {
        let nodes = cp
            .list_nodes()
            .await?
            .into_iter()
            .map(|n| pb::NodeInfo {
                node_id: n.record.node_id,
                credential_id: n.record.credential_id,
                acked_version: n.record.acked_version,
                last_seen: n.record.last_seen,
                connected: n.connected,
                software_version: n.record.software_version,
            })
            .collect();
        Ok(pb::ListNodesResponse {
            nodes,
            current_version: cp.current_version(),
        })
    }
}

mod policies {
    //! Policies and usage over the Admin API, and the proto ↔ domain conversions of limits and
    //! policy targets.

    use tonic::Status;
    use warden_proto::admin::v1 as pb;

    use crate::domain::{Limits, PolicyRecord, PolicyTarget, Source};
    use crate::service::{Actor, ControlPlane};

    pub(super) async fn set(
        cp: &ControlPlane,
        actor: Actor,
        r: pb::SetPolicyRequest,
    ) -> Result<pb::PolicyInfo, Status> {
        let target = target_from(r.target.as_ref())?;
        let limits = limits_from(&r.policy.unwrap_or_default())?;
        let record = cp
            .set_policy(&actor, &target, limits, Source::Admin)
            .await?;
        Ok(policy_info(cp, record).await)
    }

    pub(super) async fn get(
        cp: &ControlPlane,
        actor: Actor,
        r: pb::GetPolicyRequest,
    ) -> Result<pb::PolicyInfo, Status> {
        let target = target_from(r.target.as_ref())?;
        let record = cp.get_policy(&target).await?;
        cp.audit("policy.get", &actor.0, &target.to_string(), "ok", "")
            .await;
        Ok(policy_info(cp, record).await)
    }

    /// A policy with the target's current usage (or why usage is unavailable).
    async fn policy_info(cp: &ControlPlane, record: PolicyRecord) -> pb::PolicyInfo {
        let usage = match cp.usage(&record.target, &record.limits).await {
            Ok(u) => pb::Usage {
                available: true,
                unavailable_reason: String::new(),
                requests_remaining: u.requests_remaining.unwrap_or(0),
                tokens_remaining: u.tokens_remaining.unwrap_or(0),
                in_flight: u.in_flight,
                spent_usd: u.spent_micros as f64 / 1e6,
                period_ends_at: u.period_ends_at,
            },
            Err(reason) => pb::Usage {
                available: false,
                unavailable_reason: reason,
                ..Default::default()
            },
        };
        pb::PolicyInfo {
            target: Some(target_to(&record.target)),
            policy: Some(limits_to(&record.limits)),
            usage: Some(usage),
        }
    }

    fn target_from(t: Option<&pb::PolicyTarget>) -> Result<PolicyTarget, Status> {
        use pb::policy_target::Target;
        match t.and_then(|t| t.target.as_ref()) {
            Some(Target::VirtualKey(id)) if !id.is_empty() => {
                Ok(PolicyTarget::VirtualKey(id.clone()))
            }
            Some(Target::Subject(s)) if !s.is_empty() => Ok(PolicyTarget::Subject(s.clone())),
            Some(Target::Model(m)) if !m.is_empty() => Ok(PolicyTarget::Model(m.clone())),
            Some(Target::Global(true)) => Ok(PolicyTarget::Global),
            _ => Err(Status::invalid_argument(
                "target must name a virtual key, a subject, a model, or global",
            )),
        }
    }

    fn target_to(t: &PolicyTarget) -> pb::PolicyTarget {
        use pb::policy_target::Target;
        pb::PolicyTarget {
            target: Some(match t {
                PolicyTarget::VirtualKey(id) => Target::VirtualKey(id.clone()),
                PolicyTarget::Subject(s) => Target::Subject(s.clone()),
                PolicyTarget::Model(m) => Target::Model(m.clone()),
                PolicyTarget::Global => Target::Global(true),
            }),
        }
    }

    /// Limits as given in a request (also by token and virtual-key requests).
    pub(super) fn limits_from(p: &pb::Policy) -> Result<Limits, Status> {
        if !p.max_budget_usd.is_finite() || p.max_budget_usd < 0.0 {
            return Err(Status::invalid_argument(
                "max_budget_usd must be a non-negative number",
            ));
        }
        Ok(Limits {
            rpm: p.rpm,
            tpm: p.tpm,
            max_parallel: p.max_parallel,
            max_budget_micros: (p.max_budget_usd * 1e6).round() as u64,
            budget_period_secs: p.budget_period_seconds,
            max_tokens: p.max_tokens,
        })
    }

    fn limits_to(l: &Limits) -> pb::Policy {
        pb::Policy {
            rpm: l.rpm,
            tpm: l.tpm,
            max_parallel: l.max_parallel,
            max_budget_usd: l.max_budget_micros as f64 / 1e6,
            budget_period_seconds: l.budget_period_secs,
            max_tokens: l.max_tokens,
        }
    }
}

mod audit {
    //! Reading and verifying the audit log over the Admin API (callers need the `audit`
    //! scope, or an admin credential). Both reads are audited themselves.

    use tonic::Status;
    use warden_core::audit_detail::Detail;
    use warden_proto::admin::v1 as pb;

    use crate::service::{Actor, ControlPlane};

    pub(super) async fn verify(
        cp: &ControlPlane,
        actor: Actor,
        r: pb::VerifyAuditRequest,
    ) -> Result<pb::VerifyAuditResponse, Status> {
        let from = r.from_seq;
        let report = cp.verify_audit((from > 0).then_some(from)).await?;
        let problem = report
            .problem
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        cp.audit(
            "audit.verify",
            &actor.0,
            "",
            if report.is_valid() { "ok" } else { "tampered" },
            &Detail::new()
                .with("rows_checked", report.rows_checked)
                .with_opt("problem", (!problem.is_empty()).then_some(&problem))
                .build(),
        )
        .await;
        Ok(pb::VerifyAuditResponse {
            valid: report.is_valid(),
            rows_checked: report.rows_checked,
            checkpoints_checked: report.checkpoints_checked,
            last_seq: report.last_seq,
            problem,
        })
    }

    pub(super) async fn list(
        cp: &ControlPlane,
        actor: Actor,
        r: pb::ListAuditRequest,
    ) -> Result<pb::ListAuditResponse, Status> {
        let limit = if r.limit == 0 { 100 } else { r.limit };
        let action = (!r.action.is_empty()).then_some(r.action.as_str());
        let records = cp
            .list_audit(limit, action)
            .await?
            .into_iter()
            .map(|a| pb::AuditRecord {
                id: a.id,
                timestamp_ms: a.timestamp_ms,
                action: a.action,
                actor: a.actor,
                subject: a.subject,
                result: a.result,
                detail: a.detail,
            })
            .collect();
        cp.audit("audit.list", &actor.0, "", "ok", "").await;
        Ok(pb::ListAuditResponse { records })
    }
}
