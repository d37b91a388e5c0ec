//! `warden.admin.v1.Admin`: every call authenticates its admin credential first (failures
//! are audited by the service), then converts and delegates.

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tonic::{Request, Response, Status};
use warden_proto::admin::v1 as pb;
use warden_proto::admin::v1::admin_server::Admin;

use super::format_to_proto;
use crate::domain::{ApiFormat, Source};
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
            .add_provider(&actor, &r.name, format, &r.base_url, Source::Admin)
            .await?;
        Ok(Response::new(pb::ProviderInfo {
            name: p.name,
            format: format_to_proto(p.format),
            base_url: p.base_url,
            keys: Vec::new(),
            source: p.source.as_str().to_owned(),
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
                    .map(|k| pb::ProviderKeyInfo {
                        id: k.id.clone(),
                        provider: k.provider.clone(),
                        fingerprint: k.fingerprint.clone(),
                        created_at: k.created_at,
                        ..Default::default()
                    })
                    .collect(),
                format: format_to_proto(p.format),
                source: p.source.as_str().to_owned(),
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
        let secret = SecretString::from(r.secret);
        let k = self
            .cp
            .add_provider_key(&actor, &r.provider, secret)
            .await?;
        Ok(Response::new(pb::ProviderKeyInfo {
            id: k.id,
            provider: k.provider,
            fingerprint: k.fingerprint,
            created_at: k.created_at,
            ..Default::default()
        }))
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
        let models = self
            .cp
            .list_models()
            .await?
            .into_iter()
            .map(|m| pb::ModelInfo {
                alias: m.alias,
                provider: m.provider,
                upstream_model: m.upstream_model,
                source: m.source.as_str().to_owned(),
                ..Default::default()
            })
            .collect();
        Ok(Response::new(pb::ListModelsResponse { models }))
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
            .issue_token(&actor, &r.subject, &r.scopes, &r.models, ttl(r.ttl_seconds))
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
        _request: Request<pb::SetPolicyRequest>,
    ) -> Result<Response<pb::PolicyInfo>, Status> {
        Err(Status::unimplemented("in progress"))
    }

    async fn get_policy(
        &self,
        _request: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::PolicyInfo>, Status> {
        Err(Status::unimplemented("in progress"))
    }

    async fn set_provider_key_state(
        &self,
        _request: Request<pb::SetProviderKeyStateRequest>,
    ) -> Result<Response<pb::ProviderKeyInfo>, Status> {
        Err(Status::unimplemented("in progress"))
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let actor = self.actor(&request, "audit.list").await?;
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
    }
}
