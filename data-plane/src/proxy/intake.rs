//! A request before its body is read: the caller's address — the TCP peer, or the client
//! a trusted proxy names ([`crate::client_addr`]) — is checked against the gateway's IP
//! allow-list ([`admit_address`]), the address blocks and the failed-login limit before any
//! credential is looked up, the caller is authenticated from
//! the headers alone ([`authenticate`]) and held to its own IP and origin lists
//! ([`admit_principal`]), and only then is the body read, within the size cap
//! (`--max-body-bytes`, 413) and the body-read timeout (408: [`read_body`]). So an
//! unauthenticated client cannot make the node buffer a body, nor hold a connection open by
//! trickling one: its 401 (or 429) goes out at once, and the connection is closed instead of
//! read to the end of the body ([`close_if`]).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::body::{Bytes, HttpBody as _};
use axum::extract::{ConnectInfo, FromRequest as _, Request};
use axum::http::{HeaderMap, HeaderValue, Version, header};
use axum::response::Response;

use super::request_audit;
use crate::auth::Principal;
use crate::compiled::Snapshot;
use crate::error::ApiError;
use crate::state::AppState;

/// The request's headers and client address (see [`crate::client_addr`]), and the rest of
/// it (its body, with the body size cap of the router).
pub fn split(state: &AppState, mut request: Request) -> (HeaderMap, Option<IpAddr>, Request) {
    let headers = std::mem::take(request.headers_mut());
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| {
            crate::client_addr::resolve(&state.trusted_proxies, addr.ip(), &headers)
        });
    (headers, client, request)
}

/// 403 `ip_not_allowed` when the gateway has an IP allow-list and `client` is not on it;
/// checked before any credential work.
pub fn admit_address(snapshot: &Snapshot, client: Option<IpAddr>) -> Result<(), ApiError> {
    if snapshot.client_policy.allows_ip(client) {
        Ok(())
    } else {
        Err(ApiError::ip_not_allowed())
    }
}

/// The authenticated caller held to its credential's own lists: 403 `ip_not_allowed` from
/// an address off its IP list, 403 `origin_not_allowed` from a browser origin off its
/// origin list.
pub fn admit_principal(
    principal: &Principal,
    client: Option<IpAddr>,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let Some(access) = &principal.access else {
        return Ok(());
    };
    if !access.allows_ip(client) {
        return Err(ApiError::ip_not_allowed());
    }
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("\u{fffd}"));
    if !access.allows_origin(origin) {
        return Err(ApiError::origin_not_allowed());
    }
    Ok(())
}

/// Whether `request` is an HTTP/1 request with a body to read: answered before that body is
/// read to its end, its connection is closed.
pub fn unread_body(request: &Request) -> bool {
    request.version() < Version::HTTP_2 && !request.body().is_end_stream()
}

/// Marks `response` as the connection's last when `close` (HTTP/1 only: see [`unread_body`]).
pub fn close_if(response: &mut Response, close: bool) {
    if close {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

/// The caller of request `request_id` at `endpoint`, from the headers alone. A blocked
/// address ([`crate::ip_block`]) gets 403 `ip_blocked`, and an address past the failed-login
/// limit 429, before any credential is looked up (a 429 counts towards a block); a failed
/// authentication gets 401 and is a failed login of the address. Both are audited by the
/// failed-login accounting ([`request_audit::auth_failed`]), not as requests.
pub fn authenticate(
    state: &AppState,
    snapshot: &Snapshot,
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    endpoint: &str,
    request_id: &str,
) -> Result<std::sync::Arc<Principal>, ApiError> {
    if let Some(peer) = peer {
        if state.ip_blocks.is_blocked(peer, &snapshot.ip_blocks) {
            metrics::counter!(crate::metrics::IP_BLOCKED_REFUSED).increment(1);
            return Err(ApiError::ip_blocked());
        }
        if let Err(wait) = state.failed_logins.admit(peer, Instant::now()) {
            metrics::counter!(crate::metrics::FAILED_LOGINS_THROTTLED).increment(1);
            request_audit::ip_failure(state, peer);
            return Err(ApiError::too_many_failed_logins(wait));
        }
    }
    crate::auth::authenticate(snapshot, headers).map_err(|failure| {
        request_audit::auth_failed(state, failure, endpoint, request_id, peer);
        ApiError::unauthenticated()
    })
}

/// 503 `gateway_locked_down` while the snapshot says the gateway is locked down: checked
/// before the credential, so every caller gets the same answer and nothing is looked up.
pub fn refuse_if_locked_down(snapshot: &Snapshot) -> Result<(), ApiError> {
    if snapshot.incident.locked_down {
        return Err(ApiError::locked_down());
    }
    Ok(())
}

/// 403 `credential_suspended` for an authenticated caller whose credential is suspended.
pub fn refuse_if_suspended(principal: &Principal) -> Result<(), ApiError> {
    if principal.suspended {
        return Err(ApiError::credential_suspended());
    }
    Ok(())
}

/// 503 `control_plane_unreachable` while the node is past `--max-snapshot-age` without the
/// control plane: every client credential is revocable, and none can be confirmed now.
pub fn refuse_if_stale(state: &AppState) -> Result<(), ApiError> {
    if state.freshness.refuse() {
        return Err(ApiError::control_plane_unreachable());
    }
    Ok(())
}

/// The body of `request`, read within the router's size cap (413 past it) and the node's
/// body-read timeout (408).
pub async fn read_body(state: &AppState, request: Request) -> Result<Bytes, ApiError> {
    let timeout = state.body_read_timeout;
    match tokio::time::timeout(timeout, Bytes::from_request(request, &())).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(rejection)) => Err(ApiError::unreadable_body(rejection.status())),
        Err(_) => Err(ApiError::body_timeout(timeout)),
    }
}
