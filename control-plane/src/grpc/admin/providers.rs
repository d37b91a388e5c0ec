//! Providers and their upstream keys over the Admin API.

use secrecy::SecretString;
use tonic::Status;
use warden_proto::admin::v1 as pb;

use crate::domain::{ApiFormat, ProviderKey, Source};
use crate::page::{PageKey, page_whole};
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
                ca_pem: (!r.ca_pem.trim().is_empty()).then_some(r.ca_pem),
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
        ca_certificates: ca_info(p.ca_pem.as_deref()),
    })
}

/// What identifies each certificate of a provider's CA bundle (never the PEM itself).
fn ca_info(ca_pem: Option<&str>) -> Vec<pb::CaCertificateInfo> {
    ca_pem
        .and_then(|pem| warden_core::ca_bundle::parse(pem.as_bytes()).ok())
        .map(|bundle| {
            bundle
                .certificates
                .into_iter()
                .map(|c| pb::CaCertificateInfo {
                    subject: c.subject,
                    sha256: c.sha256,
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(super) async fn list(
    cp: &ControlPlane,
    _: Actor,
    r: pb::ListProvidersRequest,
) -> Result<pb::ListProvidersResponse, Status> {
    let (providers, keys) = cp.list_providers().await?;
    let page = page_whole("providers", r.page_size, &r.page_token, providers, |p| {
        PageKey::name(p.name.clone())
    })?;
    let providers = page
        .items
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
            ca_certificates: ca_info(p.ca_pem.as_deref()),
            name: p.name,
            base_url: p.base_url,
        })
        .collect();
    Ok(pb::ListProvidersResponse {
        providers,
        next_page_token: page.next_token,
    })
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
