//! `warden.admin.v1.Admin`: every call authenticates its admin credential first (failures
//! are audited by the service), then converts and delegates.

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tonic::{Request, Response, Status};
use warden_proto::admin::v1 as pb;
use warden_proto::admin::v1::admin_server::Admin;

use super::format_to_proto;
use crate::domain::{ApiFormat, Limits, PolicyTarget, Price, Source};
use crate::service::{Actor, ControlPlane};

/// The Admin service.
#[derive(Debug, Clone)]
pub struct AdminService {
    cp: Arc<ControlPlane>,
}

impl AdminService {
    pub fn new(cp: Arc<ControlPlane>) -> Self {
        Self { cp }
    }

    async fn actor<T>(&self, request: &Request<T>, action: &str) -> Result<Actor, Status> {
        Ok(self
            .cp
            .authenticate_admin(warden_proto::bearer(request), action)
            .await?)
    }

    /// Reading the audit log needs the `audit` scope.
    async fn audit_reader<T>(&self, request: &Request<T>, action: &str) -> Result<Actor, Status> {
        Ok(self
            .cp
            .authenticate_audit_reader(warden_proto::bearer(request), action)
            .await?)
    }
}

fn ttl(seconds: u64) -> Option<Duration> {
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

fn opt_time(t: Option<i64>) -> i64 {
    t.unwrap_or(0)
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn add_provider(
        &self,
        request: Request<pb::AddProviderRequest>,
    ) -> Result<Response<pb::ProviderInfo>, Status> {
        let actor = self.actor(&request, "provider.add").await?;
        let r = request.into_inner();
        let format = match pb::ApiFormat::try_from(r.format) {
            Ok(pb::ApiFormat::Openai) => ApiFormat::OpenAi,
            Ok(pb::ApiFormat::Anthropic) => ApiFormat::Anthropic,
            _ => {
                return Err(Status::invalid_argument(
                    "format must be openai or anthropic",
                ));
            }
        };
        let p = self
            .cp
            .add_provider(
                &actor,
                &r.name,
                format,
                &r.base_url,
                Source::Admin,
                crate::service::ProviderOptions {
                    passthrough: r.passthrough,
                    drop_params: r.drop_params,
                },
            )
            .await?;
        Ok(Response::new(pb::ProviderInfo {
            name: p.name,
            format: format_to_proto(p.format),
            base_url: p.base_url,
            keys: Vec::new(),
            source: p.source.as_str().to_owned(),
            passthrough: p.passthrough,
            drop_params: p.drop_params,
        }))
    }

    async fn list_providers(
        &self,
        request: Request<pb::ListProvidersRequest>,
    ) -> Result<Response<pb::ListProvidersResponse>, Status> {
        self.actor(&request, "provider.list").await?;
        let (providers, keys) = self.cp.list_providers().await?;
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
        Ok(Response::new(pb::ListProvidersResponse { providers }))
    }

    async fn remove_provider(
        &self,
        request: Request<pb::RemoveProviderRequest>,
    ) -> Result<Response<pb::RemoveProviderResponse>, Status> {
        let actor = self.actor(&request, "provider.remove").await?;
        self.cp
            .remove_provider(&actor, &request.into_inner().name)
            .await?;
        Ok(Response::new(pb::RemoveProviderResponse {}))
    }

    async fn add_provider_key(
        &self,
        request: Request<pb::AddProviderKeyRequest>,
    ) -> Result<Response<pb::ProviderKeyInfo>, Status> {
        let actor = self.actor(&request, "provider.key.add").await?;
        let r = request.into_inner();
        let source = match (r.secret.is_empty(), r.reference.trim().is_empty()) {
            (false, true) => crate::service::KeySource::Value(SecretString::from(r.secret)),
            (true, false) => crate::service::KeySource::Reference(r.reference),
            _ => {
                return Err(Status::invalid_argument(
                    "set exactly one of `secret` (a value) and `reference` (vault://…, aws-sm://…, azure-kv://…, file://…, env://…)",
                ));
            }
        };
        let k = self
            .cp
            .add_provider_key(&actor, &r.provider, source)
            .await?;
        Ok(Response::new(key_info(&k)))
    }

    async fn rotate_provider_key(
        &self,
        request: Request<pb::RotateProviderKeyRequest>,
    ) -> Result<Response<pb::ProviderKeyInfo>, Status> {
        let actor = self.actor(&request, "provider.key.rotate").await?;
        let r = request.into_inner();
        let k = self
            .cp
            .rotate_provider_key(&actor, &r.provider, &r.key_id, SecretString::from(r.secret))
            .await?;
        Ok(Response::new(key_info(&k)))
    }

    async fn remove_provider_key(
        &self,
        request: Request<pb::RemoveProviderKeyRequest>,
    ) -> Result<Response<pb::RemoveProviderKeyResponse>, Status> {
        let actor = self.actor(&request, "provider.key.remove").await?;
        let r = request.into_inner();
        self.cp
            .remove_provider_key(&actor, &r.provider, &r.key_id)
            .await?;
        Ok(Response::new(pb::RemoveProviderKeyResponse {}))
    }

    async fn add_model(
        &self,
        request: Request<pb::AddModelRequest>,
    ) -> Result<Response<pb::ModelInfo>, Status> {
        let actor = self.actor(&request, "model.add").await?;
        let r = request.into_inner();
        let m = self
            .cp
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
        Ok(Response::new(pb::ModelInfo {
            alias: m.alias,
            provider: m.provider,
            upstream_model: m.upstream_model,
            source: m.source.as_str().to_owned(),
            ..Default::default()
        }))
    }

    async fn list_models(
        &self,
        request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        self.actor(&request, "model.list").await?;
        let prices = self.cp.list_prices().await?;
        let deployments = self.cp.list_deployments().await?;
        let models = self
            .cp
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
        Ok(Response::new(pb::ListModelsResponse { models }))
    }

    async fn add_deployment(
        &self,
        request: Request<pb::AddDeploymentRequest>,
    ) -> Result<Response<pb::ModelInfo>, Status> {
        let actor = self.actor(&request, "model.deployment.add").await?;
        let r = request.into_inner();
        self.cp
            .add_deployment(&actor, &r.alias, &r.provider, &r.upstream_model, r.weight)
            .await?;
        Ok(Response::new(pb::ModelInfo {
            alias: r.alias,
            ..Default::default()
        }))
    }

    async fn remove_deployment(
        &self,
        request: Request<pb::RemoveDeploymentRequest>,
    ) -> Result<Response<pb::ModelInfo>, Status> {
        let actor = self.actor(&request, "model.deployment.remove").await?;
        let r = request.into_inner();
        self.cp
            .remove_deployment(&actor, &r.alias, &r.provider, &r.upstream_model)
            .await?;
        Ok(Response::new(pb::ModelInfo {
            alias: r.alias,
            ..Default::default()
        }))
    }

    async fn remove_model(
        &self,
        request: Request<pb::RemoveModelRequest>,
    ) -> Result<Response<pb::RemoveModelResponse>, Status> {
        let actor = self.actor(&request, "model.remove").await?;
        self.cp
            .remove_model(&actor, &request.into_inner().alias)
            .await?;
        Ok(Response::new(pb::RemoveModelResponse {}))
    }

    async fn issue_token(
        &self,
        request: Request<pb::IssueTokenRequest>,
    ) -> Result<Response<pb::IssueTokenResponse>, Status> {
        let actor = self.actor(&request, "token.issue").await?;
        let r = request.into_inner();
        let (token, record) = self
            .cp
            .issue_token(
                &actor,
                &r.subject,
                &r.scopes,
                &r.models,
                ttl(r.ttl_seconds),
                r.policy.as_ref().map(limits_from).transpose()?,
            )
            .await?;
        Ok(Response::new(pb::IssueTokenResponse {
            token: token.expose_secret().to_owned(),
            jti: record.jti,
            expires_at: record.expires_at,
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let actor = self.actor(&request, "token.revoke").await?;
        self.cp
            .revoke_token(&actor, &request.into_inner().jti)
            .await?;
        Ok(Response::new(pb::RevokeTokenResponse {}))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        self.actor(&request, "token.list").await?;
        let tokens = self
            .cp
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
        Ok(Response::new(pb::ListTokensResponse { tokens }))
    }

    async fn create_virtual_key(
        &self,
        request: Request<pb::CreateVirtualKeyRequest>,
    ) -> Result<Response<pb::CreateVirtualKeyResponse>, Status> {
        let actor = self.actor(&request, "vkey.create").await?;
        let r = request.into_inner();
        let (key, k) = self
            .cp
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
        Ok(Response::new(pb::CreateVirtualKeyResponse {
            key: key.expose_secret().to_owned(),
            info: Some(vkey_info(k)),
        }))
    }

    async fn list_virtual_keys(
        &self,
        request: Request<pb::ListVirtualKeysRequest>,
    ) -> Result<Response<pb::ListVirtualKeysResponse>, Status> {
        self.actor(&request, "vkey.list").await?;
        let keys = self
            .cp
            .list_virtual_keys()
            .await?
            .into_iter()
            .map(vkey_info)
            .collect();
        Ok(Response::new(pb::ListVirtualKeysResponse { keys }))
    }

    async fn revoke_virtual_key(
        &self,
        request: Request<pb::RevokeVirtualKeyRequest>,
    ) -> Result<Response<pb::RevokeVirtualKeyResponse>, Status> {
        let actor = self.actor(&request, "vkey.revoke").await?;
        self.cp
            .revoke_virtual_key(&actor, &request.into_inner().id)
            .await?;
        Ok(Response::new(pb::RevokeVirtualKeyResponse {}))
    }

    async fn rotate_virtual_key(
        &self,
        request: Request<pb::RotateVirtualKeyRequest>,
    ) -> Result<Response<pb::CreateVirtualKeyResponse>, Status> {
        let actor = self.actor(&request, "vkey.rotate").await?;
        let r = request.into_inner();
        let (key, k) = self
            .cp
            .rotate_virtual_key(&actor, &r.id, Duration::from_secs(r.grace_seconds))
            .await?;
        Ok(Response::new(pb::CreateVirtualKeyResponse {
            key: key.expose_secret().to_owned(),
            info: Some(vkey_info(k)),
        }))
    }

    async fn rotate_signing_key(
        &self,
        request: Request<pb::RotateSigningKeyRequest>,
    ) -> Result<Response<pb::SigningKeyInfo>, Status> {
        let actor = self.actor(&request, "signing_key.rotate").await?;
        let k = self.cp.rotate_signing_key(&actor).await?;
        Ok(Response::new(signing_key_info(k)))
    }

    async fn list_signing_keys(
        &self,
        request: Request<pb::ListSigningKeysRequest>,
    ) -> Result<Response<pb::ListSigningKeysResponse>, Status> {
        self.actor(&request, "signing_key.list").await?;
        let keys = self
            .cp
            .signing_keys()
            .await?
            .into_iter()
            .map(signing_key_info)
            .collect();
        Ok(Response::new(pb::ListSigningKeysResponse { keys }))
    }

    async fn issue_node_credential(
        &self,
        request: Request<pb::IssueNodeCredentialRequest>,
    ) -> Result<Response<pb::IssueNodeCredentialResponse>, Status> {
        let actor = self.actor(&request, "node_credential.create").await?;
        let (credential, id) = self
            .cp
            .issue_node_credential(&actor, &request.into_inner().name)
            .await?;
        Ok(Response::new(pb::IssueNodeCredentialResponse {
            credential: credential.expose_secret().to_owned(),
            id,
        }))
    }

    async fn list_nodes(
        &self,
        request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        self.actor(&request, "node.list").await?;
        let nodes = self
            .cp
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
        Ok(Response::new(pb::ListNodesResponse {
            nodes,
            current_version: self.cp.current_version(),
        }))
    }

    async fn set_policy(
        &self,
        request: Request<pb::SetPolicyRequest>,
    ) -> Result<Response<pb::PolicyInfo>, Status> {
        let actor = self.actor(&request, "policy.set").await?;
        let r = request.into_inner();
        let target = target_from(r.target.as_ref())?;
        let limits = limits_from(&r.policy.unwrap_or_default())?;
        let record = self
            .cp
            .set_policy(&actor, &target, limits, Source::Admin)
            .await?;
        Ok(Response::new(self.policy_info(record).await))
    }

    async fn get_policy(
        &self,
        request: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::PolicyInfo>, Status> {
        let actor = self.actor(&request, "policy.get").await?;
        let target = target_from(request.get_ref().target.as_ref())?;
        let record = self.cp.get_policy(&target).await?;
        self.cp
            .audit("policy.get", &actor.0, &target.to_string(), "ok", "")
            .await;
        Ok(Response::new(self.policy_info(record).await))
    }

    async fn set_provider_key_state(
        &self,
        request: Request<pb::SetProviderKeyStateRequest>,
    ) -> Result<Response<pb::ProviderKeyInfo>, Status> {
        let actor = self.actor(&request, "provider.key.state").await?;
        let r = request.into_inner();
        let quarantine = match pb::set_provider_key_state_request::Action::try_from(r.action) {
            Ok(pb::set_provider_key_state_request::Action::Quarantine) => true,
            Ok(pb::set_provider_key_state_request::Action::Enable) => false,
            _ => {
                return Err(Status::invalid_argument(
                    "action must be QUARANTINE or ENABLE",
                ));
            }
        };
        let k = self
            .cp
            .set_provider_key_state(&actor, &r.provider, &r.key_id, quarantine, &r.reason)
            .await?;
        Ok(Response::new(key_info(&k)))
    }

    async fn verify_audit(
        &self,
        request: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditResponse>, Status> {
        let actor = self.audit_reader(&request, "audit.verify").await?;
        let from = request.into_inner().from_seq;
        let report = self.cp.verify_audit((from > 0).then_some(from)).await?;
        let problem = report
            .problem
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        self.cp
            .audit(
                "audit.verify",
                &actor.0,
                "",
                if report.is_valid() { "ok" } else { "tampered" },
                &warden_core::audit_detail::Detail::new()
                    .with("rows_checked", report.rows_checked)
                    .with_opt("problem", (!problem.is_empty()).then_some(&problem))
                    .build(),
            )
            .await;
        Ok(Response::new(pb::VerifyAuditResponse {
            valid: report.is_valid(),
            rows_checked: report.rows_checked,
            checkpoints_checked: report.checkpoints_checked,
            last_seq: report.last_seq,
            problem,
        }))
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let actor = self.audit_reader(&request, "audit.list").await?;
        let r = request.into_inner();
        let limit = if r.limit == 0 { 100 } else { r.limit };
        let action = (!r.action.is_empty()).then_some(r.action.as_str());
        let records = self
            .cp
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
        self.cp.audit("audit.list", &actor.0, "", "ok", "").await;
        Ok(Response::new(pb::ListAuditResponse { records }))
    }
}

fn key_info(k: &crate::domain::ProviderKey) -> pb::ProviderKeyInfo {
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

fn signing_key_info(k: crate::service::SigningKeyStatus) -> pb::SigningKeyInfo {
    pb::SigningKeyInfo {
        kid: k.record.kid,
        algorithm: k.record.algorithm,
        created_at: k.record.created_at,
        active: k.active,
        needed_until: k.needed_until,
    }
}

fn target_from(t: Option<&pb::PolicyTarget>) -> Result<PolicyTarget, Status> {
    use pb::policy_target::Target;
    match t.and_then(|t| t.target.as_ref()) {
        Some(Target::VirtualKey(id)) if !id.is_empty() => Ok(PolicyTarget::VirtualKey(id.clone())),
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

fn limits_from(p: &pb::Policy) -> Result<Limits, Status> {
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

impl AdminService {
    async fn policy_info(&self, record: crate::domain::PolicyRecord) -> pb::PolicyInfo {
        let usage = match self.cp.usage(&record.target, &record.limits).await {
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
}

fn vkey_info(k: crate::domain::VirtualKeyRecord) -> pb::VirtualKeyInfo {
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
