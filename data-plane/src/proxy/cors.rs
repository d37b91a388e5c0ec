//! CORS, from the gateway's client policy in the snapshot (off while it names no origin):
//!
//! - a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) on an API
//!   route is answered here from that policy alone — it carries no credential: 204 with
//!   the allow headers when the origin, the method and every requested header are allowed,
//!   else 403 (`origin_not_allowed`, in the route's error shape) *without* CORS headers.
//!   The Fetch standard fails a preflight whose answer is not 2xx or lacks the allow
//!   headers; answering 403 rather than a bare 204 tells a person reading the network log
//!   (or a `curl`) why, and a browser refuses the actual request either way;
//! - an actual request with an allowed `Origin` gets `Access-Control-Allow-Origin` (the
//!   origin echoed, or `*` for an explicit wildcard without credentials) on every answer,
//!   errors included, so that a page can read a 4xx body ([`decorate`]).
//!
//! Every answer of a node with CORS on carries `Vary: Origin`, so caches keep answers to
//! different origins apart. A credential's own origin list is enforced on the actual request,
//! after authentication ([`super::intake::admit_principal`]).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::access::Cors;
use crate::error::ApiError;
use crate::state::AppState;
use crate::translate::Wire;

/// `OPTIONS` on an API route: a CORS preflight, or (CORS off, or not a preflight) the
/// 405 that any other method gets.
pub async fn preflight(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let api = if request.uri().path().starts_with("/v1/messages") {
        Wire::Anthropic
    } else {
        Wire::OpenAi
    };
    let (headers, client, _) = super::intake::split(&state, request);
    let Some(snapshot) = state.snapshot() else {
        return ApiError::not_ready().render(api);
    };
    let (Some(cors), Some(origin), Some(method)) = (
        snapshot.client_policy.cors.as_ref(),
        text(&headers, header::ORIGIN),
        text(&headers, header::ACCESS_CONTROL_REQUEST_METHOD),
    ) else {
        return ApiError::method_not_allowed().render(api);
    };
    let mut response = if let Err(e) = super::intake::admit_address(&snapshot, client) {
        e.render(api)
    } else {
        let requested = text(&headers, header::ACCESS_CONTROL_REQUEST_HEADERS).unwrap_or("");
        if cors.allows_origin(origin)
            && cors.allows_method(method)
            && cors.allows_headers(requested)
        {
            allowed(cors, origin, requested)
        } else {
            tracing::debug!(origin = %origin.escape_debug(), method = %method.escape_debug(), "CORS preflight refused");
            ApiError::origin_not_allowed().render(api)
        }
    };
    vary(response.headers_mut(), true);
    response
}

/// The 204 answer to an allowed preflight.
fn allowed(cors: &Cors, origin: &str, requested: &str) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    allow_origin(h, cors, origin);
    insert(h, header::ACCESS_CONTROL_ALLOW_METHODS, &cors.methods_value);
    // Echo what was asked (all allowed), or the allowed list when nothing was.
    let headers_value = if requested.trim().is_empty() {
        cors.headers_value.as_str()
    } else {
        requested
    };
    insert(h, header::ACCESS_CONTROL_ALLOW_HEADERS, headers_value);
    if cors.max_age_seconds > 0 {
        insert(
            h,
            header::ACCESS_CONTROL_MAX_AGE,
            &cors.max_age_seconds.to_string(),
        );
    }
    response
}

/// Middleware of the API router: with CORS on, `Vary: Origin` on every answer, and the
/// allow headers on answers to an allowed `Origin`. With CORS off, one `Option` check.
pub async fn decorate(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(snapshot) = state.snapshot().filter(|s| s.client_policy.cors.is_some()) else {
        return next.run(request).await;
    };
    let Some(cors) = snapshot.client_policy.cors.as_ref() else {
        return next.run(request).await;
    };
    let is_preflight = request.method() == Method::OPTIONS;
    let origin = text(request.headers(), header::ORIGIN).map(str::to_owned);
    let mut response = next.run(request).await;
    if is_preflight {
        return response;
    }
    let h = response.headers_mut();
    vary(h, false);
    if let Some(origin) = origin.filter(|o| cors.allows_origin(o)) {
        allow_origin(h, cors, &origin);
        if !cors.expose_headers_value.is_empty() {
            insert(
                h,
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                &cors.expose_headers_value,
            );
        }
    }
    response
}

fn allow_origin(h: &mut HeaderMap, cors: &Cors, origin: &str) {
    insert(
        h,
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        cors.allow_origin_value(origin),
    );
    if cors.allow_credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

fn vary(h: &mut HeaderMap, preflight: bool) {
    let value = if preflight {
        "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
    } else {
        "Origin"
    };
    h.append(header::VARY, HeaderValue::from_static(value));
}

fn insert(h: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

fn text(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}
