//! The limits step of a request: the caller's, the model's and the global limits in one
//! decision, reserving the tokens the request may use ([`admit`]); and the
//! `x-ratelimit-*` headers of an admitted request's answer ([`with_rate_headers`]).

use axum::http::HeaderValue;
use axum::response::Response;
use warden_core::shared_keys::scope;

use crate::auth::Principal;
use crate::compiled::{Route, Snapshot};
use crate::error::ApiError;
use crate::limits::{Admission, Denied, RateHeaders, Scope};
use crate::state::AppState;

/// Admits a request to `route` that may use `reserve` tokens, or says which limit refuses
/// it. A route without a price is refused when any budget applies: its spend could not
/// grow.
pub async fn admit(
    state: &AppState,
    snapshot: &Snapshot,
    principal: &Principal,
    route: &Route,
    reserve: u64,
) -> Result<Admission, ApiError> {
    let mut scopes = Vec::with_capacity(3);
    if let Some(scope) = principal.limits.clone() {
        scopes.push(scope);
    }
    scopes.push(Scope {
        id: scope::model(&route.limits_alias),
        policy: route.policy,
    });
    scopes.push(Scope {
        id: scope::GLOBAL.to_owned(),
        policy: snapshot.global_policy,
    });
    if !route.priced && scopes.iter().any(|s| s.policy.max_budget_micros > 0) {
        crate::metrics::limiter_refused("unpriced", "refused");
        return Err(unpriced_under_budget(&route.alias));
    }
    match state.limiter.admit(scopes, reserve).await {
        Ok(admission) => {
            state.request_metrics.limiter_allowed();
            Ok(admission)
        }
        Err(d) => {
            match &d {
                Denied::Limit { kind, .. } => {
                    metrics::counter!(crate::metrics::LIMITED, "limit" => kind.label())
                        .increment(1);
                    crate::metrics::limiter_refused(kind.label(), "refused");
                }
                Denied::Unavailable => crate::metrics::limiter_refused("unavailable", "refused"),
            }
            Err(ApiError::from(&d))
        }
    }
}

/// The refusal of a request to an unpriced model when a budget applies to it.
fn unpriced_under_budget(model: &str) -> ApiError {
    let model: String = model.chars().take(256).collect();
    ApiError::bad_request(format!(
        "The model `{model}` has no price, and a budget applies to this request: it cannot \
         be metered. Ask your administrator to set the model's price \
         (`wardenctl model add ... --input-price --output-price`) or to use a priced alias."
    ))
}

/// `response` with the `x-ratelimit-*` headers of the limits that apply.
pub fn with_rate_headers(mut response: Response, h: &RateHeaders) -> Response {
    for (which, limit) in [("requests", h.requests), ("tokens", h.tokens)] {
        let Some(l) = limit else { continue };
        for (name, value) in [
            (format!("x-ratelimit-limit-{which}"), l.limit.to_string()),
            (
                format!("x-ratelimit-remaining-{which}"),
                l.remaining.to_string(),
            ),
            (
                format!("x-ratelimit-reset-{which}"),
                crate::limits::format_reset(l.reset),
            ),
        ] {
            if let (Ok(n), Ok(v)) = (
                axum::http::HeaderName::try_from(name),
                HeaderValue::from_str(&value),
            ) {
                response.headers_mut().insert(n, v);
            }
        }
    }
    response
}
