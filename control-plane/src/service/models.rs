//! Models: aliases clients call, each served by a provider's upstream model, with
//! fallbacks, an optional price, and further weighted deployments on other providers.

use warden_core::unix_now;

use super::{Actor, ControlPlane};
use crate::domain::{ApiFormat, Deployment, Model, Price, Source, validate_name};
use crate::error::ServiceError;

/// The upstream model as given (trimmed), or the alias when none is given.
fn upstream_or_alias<'a>(upstream_model: &'a str, alias: &'a str) -> &'a str {
    let upstream_model = upstream_model.trim();
    if upstream_model.is_empty() {
        alias
    } else {
        upstream_model
    }
}

impl ControlPlane {
    /// Adds or updates a model alias.
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per field of the admin request"
    )]
    pub async fn add_model(
        &self,
        actor: &Actor,
        alias: &str,
        provider: &str,
        upstream_model: &str,
        source: Source,
        fallbacks: &[String],
        price: Option<Price>,
    ) -> Result<Model, ServiceError> {
        let model = self
            .mutate(actor, "model.add", alias, async {
                let known: Vec<String> = self
                    .store
                    .list_models()
                    .await?
                    .into_iter()
                    .map(|m| m.alias)
                    .collect();
                for f in fallbacks {
                    if f == alias {
                        return Err(ServiceError::InvalidArgument(format!(
                            "model `{alias}` cannot fall back to itself"
                        )));
                    }
                    if !known.contains(f) {
                        return Err(ServiceError::NotFound(format!(
                            "fallback model `{f}` does not exist (add it first)"
                        )));
                    }
                }
                if let Some(p) = price
                    && (!p.input_per_mtok.is_finite()
                        || !p.output_per_mtok.is_finite()
                        || p.input_per_mtok < 0.0
                        || p.output_per_mtok < 0.0)
                {
                    return Err(ServiceError::InvalidArgument(
                        "prices must be finite and not negative".into(),
                    ));
                }
                validate_name(alias)
                    .map_err(|e| ServiceError::InvalidArgument(format!("alias: {e}")))?;
                let upstream_model = upstream_or_alias(upstream_model, alias);
                if upstream_model.len() > 256 {
                    return Err(ServiceError::InvalidArgument(
                        "upstream_model is too long".into(),
                    ));
                }
                if !self
                    .store
                    .list_providers()
                    .await?
                    .iter()
                    .any(|p| p.name == provider)
                {
                    return Err(ServiceError::NotFound(format!(
                        "no provider named {provider}"
                    )));
                }
                let model = Model {
                    alias: alias.to_owned(),
                    provider: provider.to_owned(),
                    upstream_model: upstream_model.to_owned(),
                    source,
                    created_at: unix_now(),
                    fallbacks: fallbacks.to_vec(),
                    weight: self
                        .store
                        .list_models()
                        .await?
                        .iter()
                        .find(|m| m.alias == alias)
                        .map_or(1, |m| m.weight),
                };
                self.store.upsert_model(&model).await?;
                if let Some(p) = price {
                    self.store.upsert_price(alias, p).await?;
                }
                Ok(model)
            })
            .await?;
        // An unpriced model under a budget: logged, and audited next to the change.
        if let Ok(unpriced) = self
            .unpriced_under_budget(Some(std::slice::from_ref(&model.alias)))
            .await
        {
            let warning = Self::unpriced_warning("model add", &unpriced);
            if !warning.is_empty() {
                self.audit("model.warning", &actor.0, alias, "warning", &warning)
                    .await;
            }
        }
        Ok(model)
    }

    pub async fn list_models(&self) -> Result<Vec<Model>, ServiceError> {
        Ok(self.store.list_models().await?)
    }

    pub async fn remove_model(&self, actor: &Actor, alias: &str) -> Result<(), ServiceError> {
        self.mutate(actor, "model.remove", alias, async {
            if !self.store.delete_model(alias).await? {
                return Err(ServiceError::NotFound(format!("no model named {alias}")));
            }
            Ok(())
        })
        .await
    }

    /// Adds (or re-weights) a deployment of a model alias. Naming the alias's own provider
    /// and upstream model re-weights its first deployment.
    pub async fn add_deployment(
        &self,
        actor: &Actor,
        alias: &str,
        provider: &str,
        upstream_model: &str,
        weight: u32,
    ) -> Result<(), ServiceError> {
        self.mutate(
            actor,
            "model.deployment.add",
            format!("{alias} -> {provider}"),
            async {
                let weight = weight.max(1);
                if weight > 1000 {
                    return Err(ServiceError::InvalidArgument(
                        "weight must be 1 to 1000".into(),
                    ));
                }
                let upstream_model = upstream_or_alias(upstream_model, alias);
                let models = self.store.list_models().await?;
                let model = models
                    .iter()
                    .find(|m| m.alias == alias)
                    .ok_or_else(|| ServiceError::NotFound(format!("no model named {alias}")))?;
                let providers = self.store.list_providers().await?;
                let p = providers
                    .iter()
                    .find(|p| p.name == provider)
                    .ok_or_else(|| {
                        ServiceError::NotFound(format!("no provider named {provider}"))
                    })?;
                if p.format == ApiFormat::Echo {
                    return Err(ServiceError::InvalidArgument(
                        "the echo provider cannot be a deployment".into(),
                    ));
                }
                if model.provider == provider && model.upstream_model == upstream_model {
                    let mut m = model.clone();
                    m.weight = weight;
                    self.store.upsert_model(&m).await?;
                } else {
                    self.store
                        .upsert_deployment(&Deployment {
                            alias: alias.to_owned(),
                            provider: provider.to_owned(),
                            upstream_model: upstream_model.to_owned(),
                            weight,
                        })
                        .await?;
                }
                Ok(())
            },
        )
        .await
    }

    pub async fn remove_deployment(
        &self,
        actor: &Actor,
        alias: &str,
        provider: &str,
        upstream_model: &str,
    ) -> Result<(), ServiceError> {
        self.mutate(
            actor,
            "model.deployment.remove",
            format!("{alias} -> {provider}"),
            async {
                let upstream_model = upstream_or_alias(upstream_model, alias);
                if !self
                    .store
                    .delete_deployment(alias, provider, upstream_model)
                    .await?
                {
                    return Err(ServiceError::NotFound(format!(
                        "model {alias} has no further deployment on {provider} ({upstream_model})"
                    )));
                }
                Ok(())
            },
        )
        .await
    }

    pub async fn list_deployments(&self) -> Result<Vec<Deployment>, ServiceError> {
        Ok(self.store.list_deployments().await?)
    }
}
