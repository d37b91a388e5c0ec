//! Models and their deployments over the Admin API.

use tonic::Status;
use warden_proto::admin::v1 as pb;

use crate::domain::{Price, Source};
use crate::page::{PageKey, page_whole};
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
            (r.input_price_per_mtok != 0.0 || r.output_price_per_mtok != 0.0).then_some(Price {
                input_per_mtok: r.input_price_per_mtok,
                output_per_mtok: r.output_price_per_mtok,
            }),
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
    r: pb::ListModelsRequest,
) -> Result<pb::ListModelsResponse, Status> {
    let prices = cp.list_prices().await?;
    let deployments = cp.list_deployments().await?;
    let page = page_whole(
        "models",
        r.page_size,
        &r.page_token,
        cp.list_models().await?,
        |m| PageKey::name(m.alias.clone()),
    )?;
    let models = page
        .items
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
    Ok(pb::ListModelsResponse {
        models,
        next_page_token: page.next_token,
    })
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
