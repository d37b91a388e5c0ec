//! Where a requested model goes for this caller: a configured alias, or `provider:model`
//! addressed directly ([`resolve_route`]).

use crate::auth::Principal;
use crate::compiled::{Price, Route, Snapshot};
use crate::error::ApiError;
use crate::limits::Policy;

/// Finds where `model` goes for this caller: an alias, or `provider:model` when the caller
/// may use it (`*`, the exact `provider:model`, or `provider:*`). Authorization is checked
/// before existence, so a limited caller cannot probe which models exist.
pub fn resolve_route(
    snapshot: &Snapshot,
    principal: &Principal,
    model: &str,
) -> Result<Route, ApiError> {
    if let Some(route) = snapshot.routes.get(model) {
        if !principal.may_use(model) {
            return Err(ApiError::model_not_allowed(model));
        }
        return Ok(route.clone());
    }
    if let Some((provider_name, upstream_model)) = model.split_once(':') {
        let wildcard = format!("{provider_name}:*");
        if !(principal.may_use(model) || principal.may_use(&wildcard)) {
            return Err(ApiError::model_not_allowed(model));
        }
        let provider = snapshot
            .routes
            .values()
            .map(|r| &r.provider)
            .chain(snapshot.providers.values())
            .find(|p| p.name == provider_name)
            .cloned();
        if let Some(provider) = provider
            && !upstream_model.is_empty()
        {
            return Ok(Route {
                alias: model.to_owned(),
                provider,
                upstream_model: upstream_model.to_owned(),
                fallbacks: Vec::new(),
                policy: Policy::default(),
                price: Price::default(),
                deployments: Vec::new(),
            });
        }
        return Err(ApiError::model_not_found(model));
    }
    if !principal.may_use(model) {
        return Err(ApiError::model_not_allowed(model));
    }
    Err(ApiError::model_not_found(model))
}
