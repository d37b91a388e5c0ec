//! Where a requested model goes for this caller: a configured alias, or `provider:model`
//! addressed directly ([`resolve_route`]).

use crate::auth::Principal;
use crate::compiled::{Price, Route, Snapshot};
use crate::error::ApiError;
use crate::limits::Policy;

/// Finds where `model` goes for this caller: an alias, or `provider:model` when the caller
/// may use it (the exact `provider:model`, `provider:*` or `*:*` — a bare `*` covers
/// aliases only). Authorization is checked before existence, so a limited caller cannot
/// probe which models exist.
///
/// A `provider:model` route carries the policy, price and per-model limit counters of the
/// alias serving the same provider and upstream model, as its primary or one of its
/// deployments (the first priced one by name, else the first by name);
/// without one it has no model policy and no price, and is refused when a budget applies
/// ([`super::admission::admit`]).
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
        if !may_address_directly(principal, model, provider_name) {
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
            let terms = snapshot
                .direct_terms
                .get(provider_name)
                .and_then(|by_model| by_model.get(upstream_model));
            let (policy, price, priced, limits_alias) = match terms {
                Some(t) => (t.policy, t.price, t.priced, t.limits_alias.clone()),
                None => (Policy::default(), Price::default(), false, model.to_owned()),
            };
            return Ok(Route {
                alias: model.to_owned(),
                provider,
                upstream_model: upstream_model.to_owned(),
                fallbacks: Vec::new(),
                policy,
                price,
                priced,
                limits_alias,
                deployments: Vec::new(),
                alias_header: axum::http::HeaderValue::from_str(model).ok(),
            });
        }
        return Err(ApiError::model_not_found(model));
    }
    if !principal.may_use(model) {
        return Err(ApiError::model_not_allowed(model));
    }
    Err(ApiError::model_not_found(model))
}

/// Whether the caller's model allow-list names `provider:model` itself, `provider:*` or
/// `*:*`.
fn may_address_directly(principal: &Principal, model: &str, provider_name: &str) -> bool {
    principal.models.iter().any(|m| {
        m == model || m == "*:*" || m.strip_suffix(":*").is_some_and(|p| p == provider_name)
    })
}
