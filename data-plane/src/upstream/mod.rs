//! Sending a request to a provider, with key rotation and failover: one pooled rustls
//! client per node, and one per provider CA bundle ([`clients`]); the upstream key is
//! injected here and nowhere else.
//!
//! [`Upstream::send`] walks the model's route and then its fallbacks; on each route it
//! picks keys ([`keys::KeyPicker`]) until one answers: a 401/403 whose error says the key is
//! invalid or revoked disables the key on every node (and is reported to the control plane)
//! and moves on; any other 401/403 is returned to the client, after a short cool-down of
//! the key when the error does not say why ([`rejection`]); a 429 cools the key down for
//! the provider's `Retry-After`, a 5xx or a transport failure moves on to the next key. A
//! 4xx that is the request's own fault is returned at once. One principal changes key
//! health at most [`rejection::MAX_REJECTIONS_PER_MINUTE`] times a minute. Each failure becomes an [`ApiError`] once, in
//! `attempt`; the loop then reads only its `retryable` (move on or stop). Nothing is
//! retried once an answer has been handed to the client.

pub mod clients;
pub mod key_health;
pub mod keys;
pub mod rejection;

use std::time::Duration;

use axum::http::{HeaderValue, header};
use bytes::Bytes;
use futures::TryStreamExt as _;
use secrecy::ExposeSecret as _;
use tokio::sync::mpsc;
use warden_proto::ErrorCode;

use crate::compiled::{Format, Provider, Route, Snapshot, UpstreamKey};
use crate::error::ApiError;
use keys::{KeyPicker, NoKey};
use rejection::{AMBIGUOUS_COOLDOWN, Verdict};

/// Largest provider error body read (the rest is dropped).
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Cool-down of a rate-limited key when the provider gives no `Retry-After`.
const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30);

/// A provider's rejection of an upstream key, for the control plane.
#[derive(Debug, Clone)]
pub struct KeyRejection {
    pub provider: String,
    pub key_id: String,
    pub fingerprint: String,
    pub status: u16,
    pub reason: String,
}

/// One request for a provider: where, what, and in which format (which decides how the
/// key is sent).
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    /// Path under the provider's base URL, e.g. `/chat/completions`.
    pub path: &'static str,
    pub body: Bytes,
    pub format: Format,
}

/// Header in which clients of a passthrough provider send their own upstream key. Never
/// logged or stored; only its fingerprint reaches logs and audit.
pub const CLIENT_KEY_HEADER: &str = "x-warden-upstream-key";

/// `anthropic-version` sent to Anthropic-format providers.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

tokio::task_local! {
    /// Time a model request has spent waiting for providers: from sending a request
    /// upstream to its response head (or failure), every attempt added up. Set by the
    /// request path ([`crate::proxy`]) around each request, for
    /// [`crate::metrics::ADDED_LATENCY_SECONDS`].
    pub static UPSTREAM_WAIT: std::cell::Cell<Duration>;
}

/// A successful upstream answer and where it came from.
#[derive(Debug)]
pub struct Served {
    pub response: reqwest::Response,
    pub route: Route,
    pub key_fingerprint: String,
    /// Whether a fallback model served the request.
    pub fallback: bool,
}

/// The node's client to providers.
#[derive(Debug)]
pub struct Upstream {
    /// The default client and those of provider CA bundles (snapshots pick theirs).
    clients: std::sync::Arc<clients::UpstreamClients>,
    /// What the client may connect to; its resolver holds a copy.
    egress: std::sync::Arc<crate::egress::EgressPolicy>,
    pub keys: KeyPicker,
    rejections: mpsc::Sender<KeyRejection>,
    /// `--upstream-trace-context`: each attempt carries the `traceparent` of the node's
    /// current span (the request's `upstream` span). Nothing of the client's headers is
    /// ever sent: the request below is built from scratch.
    pub trace_context: bool,
}

impl Upstream {
    pub fn new(
        connect_timeout: Duration,
        read_timeout: Duration,
        egress: &crate::egress::EgressSettings,
        keys: KeyPicker,
        rejections: mpsc::Sender<KeyRejection>,
    ) -> Result<Self, reqwest::Error> {
        let clients = clients::UpstreamClients::new(connect_timeout, read_timeout, egress)?;
        Ok(Self {
            clients: std::sync::Arc::new(clients),
            egress: std::sync::Arc::new(egress.policy.clone()),
            keys,
            rejections,
            trace_context: false,
        })
    }

    /// The clients snapshots compile their providers' CA bundles into.
    pub fn clients(&self) -> &std::sync::Arc<clients::UpstreamClients> {
        &self.clients
    }

    /// Sends `request_for(route)` to the route's provider, rotating keys and falling back
    /// to the route's fallback models (whose provider may speak the other format:
    /// `request_for` builds the request for each). A failed attempt moves on to the next
    /// key, then the next route, when its error is `retryable`; any other error is the
    /// answer. `principal` (the caller's id) is charged for the key rejections its request
    /// causes.
    pub async fn send(
        &self,
        principal: &str,
        snapshot: &Snapshot,
        primary: &Route,
        stream: bool,
        client_key: Option<&secrecy::SecretString>,
        request_for: impl Fn(&Route) -> Result<UpstreamRequest, ApiError>,
    ) -> Result<Served, ApiError> {
        // The alias's deployments (weighted order), then each fallback's.
        let mut chain: Vec<(Route, bool)> = primary
            .deployment_order()
            .into_iter()
            .map(|r| (r, false))
            .collect();
        for alias in &primary.fallbacks {
            if let Some(r) = snapshot.routes.get(alias)
                && alias != &primary.alias
                && !chain.iter().any(|(c, _)| &c.alias == alias)
            {
                chain.extend(r.deployment_order().into_iter().map(|r| (r, true)));
            }
        }
        let mut last_error: Option<ApiError> = None;
        let mut shortest_wait: Option<Duration> = None;
        for (route, is_fallback) in &chain {
            let provider = &route.provider;
            if provider.format == Format::Echo {
                continue;
            }
            // Refused by the egress policy: no key is picked, nothing is sent.
            if let Err(e) = self.egress_check(provider).await {
                last_error = Some(e);
                continue;
            }
            if provider.passthrough {
                // The client's own key, tried once: its failures are the client's to fix.
                let Some(secret) = client_key else {
                    return Err(ApiError::missing_upstream_key(
                        &route.alias,
                        CLIENT_KEY_HEADER,
                    ));
                };
                let request = request_for(route)?;
                let key = UpstreamKey {
                    id: "passthrough".to_owned(),
                    fingerprint: warden_core::fingerprint::of(
                        secrecy::ExposeSecret::expose_secret(secret).as_bytes(),
                    ),
                    secret: secret.clone(),
                    disabled: false,
                    health_epoch: 0,
                };
                let auth = auth_header(&key, request.format)?;
                let response = self
                    .attempt(provider, &key, auth, &request, stream, KeyOwner::Client)
                    .await?;
                return Ok(Served {
                    response,
                    route: route.clone(),
                    key_fingerprint: key.fingerprint,
                    fallback: *is_fallback,
                });
            }
            if provider.keys.is_empty() {
                last_error = Some(ApiError::no_upstream_key(&provider.name));
                continue;
            }
            let request = request_for(route)?;
            let mut tried = vec![false; provider.keys.len()];
            loop {
                let index = match self.keys.pick(provider, &tried) {
                    Ok(i) => i,
                    Err(NoKey::CoolingDown(wait)) => {
                        shortest_wait = Some(shortest_wait.map_or(wait, |w| w.min(wait)));
                        break;
                    }
                    Err(NoKey::Exhausted) => break,
                };
                tried[index] = true;
                let key = &provider.keys[index];
                // A key that cannot be sent is skipped; no request was made.
                let auth = match auth_header(key, request.format) {
                    Ok(auth) => auth,
                    Err(e) => {
                        last_error = Some(e);
                        continue;
                    }
                };
                match self
                    .attempt(
                        provider,
                        key,
                        auth,
                        &request,
                        stream,
                        KeyOwner::Gateway { principal },
                    )
                    .await
                {
                    Ok(response) => {
                        return Ok(Served {
                            response,
                            route: route.clone(),
                            key_fingerprint: key.fingerprint.clone(),
                            fallback: *is_fallback,
                        });
                    }
                    Err(e) if e.retryable() => last_error = Some(e),
                    Err(e) => return Err(e),
                }
            }
        }
        // Every key of every route is unusable or failed: the last failure, unless the keys
        // were only rate limited (or disabled), which the client hears as such.
        if let Some(e) = last_error
            && e.code() != ErrorCode::RateLimited
        {
            return Err(e);
        }
        Err(ApiError::upstream_keys_exhausted(
            shortest_wait.unwrap_or(DEFAULT_COOLDOWN),
        ))
    }

    /// The egress policy's checks that need no connection ([`crate::egress`]): the
    /// provider's host on the allow-list, a literal address, and with a proxy the name's
    /// addresses as resolved here.
    async fn egress_check(&self, provider: &Provider) -> Result<(), ApiError> {
        let denied = match reqwest::Url::parse(&provider.base_url) {
            Ok(url) => self.egress.preflight(&url).await.err(),
            Err(_) => Some(crate::egress::Denied::NotHttp(provider.name.clone())),
        };
        match denied {
            None => Ok(()),
            Some(denied) => Err(egress_refused(provider, &denied)),
        }
    }

    /// One attempt with `key` (sent as `auth`). A gateway key's failures change its shared
    /// health: a 401/403 that says the key is invalid disables it on every node (and is
    /// reported to the control plane), one that does not say why rests it for
    /// [`AMBIGUOUS_COOLDOWN`], a 429 cools it down — within the principal's rejection
    /// budget. A client's key is not the gateway's to judge.
    async fn attempt(
        &self,
        provider: &Provider,
        key: &UpstreamKey,
        auth: (header::HeaderName, HeaderValue),
        request: &UpstreamRequest,
        stream: bool,
        owner: KeyOwner<'_>,
    ) -> Result<reqwest::Response, ApiError> {
        let url = format!("{}{}", provider.base_url, request.path);
        let accept = if stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        // A provider with its own CA bundle has its own client; the rest share the default.
        let client = provider
            .client
            .as_ref()
            .unwrap_or_else(|| self.clients.default_client());
        let mut builder = client
            .post(&url)
            .header(auth.0, auth.1)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, accept);
        if request.format == Format::Anthropic {
            builder = builder.header("anthropic-version", ANTHROPIC_VERSION);
        }
        if self.trace_context
            && let Some(parent) = warden_core::otlp::traceparent(&tracing::Span::current())
        {
            builder = builder.header("traceparent", parent);
        }
        let sent_at = std::time::Instant::now();
        let result = builder.body(request.body.clone()).send().await;
        let _ = UPSTREAM_WAIT.try_with(|w| w.set(w.get() + sent_at.elapsed()));
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                if let Some(denied) = crate::egress::denial_of(&e) {
                    return Err(egress_refused(provider, denied));
                }
                if let Some(reason) = clients::tls_failure(&e) {
                    tracing::warn!(provider = %provider.name, key = %key.fingerprint, custom_ca = provider.client.is_some(), reason = %reason, "upstream TLS failed (certificate not verified?); nothing sent");
                    return Err(ApiError::upstream_tls_failed(&provider.name));
                }
                tracing::warn!(provider = %provider.name, key = %key.fingerprint, error = %e, "upstream request failed");
                return Err(if e.is_timeout() {
                    ApiError::upstream_timeout(&provider.name)
                } else if e.is_connect() {
                    ApiError::upstream_unreachable(&provider.name)
                } else {
                    ApiError::upstream_request_failed(&provider.name)
                });
            }
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (message, verdict) = error_message(key, response).await;
        tracing::warn!(
            provider = %provider.name,
            key = %key.fingerprint,
            status = status.as_u16(),
            message = %message,
            "upstream answered with an error"
        );
        Err(match owner {
            KeyOwner::Client => match status.as_u16() {
                401 | 403 => ApiError::client_key_rejected(&provider.name, status, retry_after),
                429 => ApiError::client_key_rate_limited(&provider.name, &message, retry_after),
                400..=499 => ApiError::rejected_by_provider(status, message, retry_after),
                _ => ApiError::upstream_status_failed(&provider.name, status, retry_after),
            },
            KeyOwner::Gateway { principal } => match status.as_u16() {
                401 | 403 => {
                    self.key_rejected(
                        provider,
                        key,
                        principal,
                        status,
                        verdict,
                        message,
                        retry_after,
                    )
                    .await
                }
                429 => {
                    let wait = retry_after
                        .as_deref()
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .filter(|s| s.is_finite() && *s > 0.0)
                        .map_or(DEFAULT_COOLDOWN, |s| Duration::from_secs_f64(s.min(3600.0)));
                    self.keys.cool_down(provider, key, wait).await;
                    ApiError::upstream_rate_limited(&provider.name, &message, retry_after)
                }
                400..=499 => relayed(provider, status, message, retry_after),
                _ => ApiError::upstream_status_failed(&provider.name, status, None),
            },
        })
    }

    /// A provider's 401/403 to one of the gateway's keys, judged by `verdict`: a key the
    /// provider says is invalid is disabled on every node and reported (and the next key
    /// is tried); a refusal for the request's own reasons leaves the key alone; an
    /// ambiguous one rests the key for [`AMBIGUOUS_COOLDOWN`]. Both of those go back to the
    /// client, as a 403. Once `principal`'s rejection budget is spent, the key is left alone.
    #[expect(clippy::too_many_arguments, reason = "one upstream answer's parts")]
    async fn key_rejected(
        &self,
        provider: &Provider,
        key: &UpstreamKey,
        principal: &str,
        status: reqwest::StatusCode,
        verdict: Verdict,
        message: String,
        retry_after: Option<String>,
    ) -> ApiError {
        // The client's own credential was fine: a 401 it cannot fix is relayed as a 403, not
        // as a 401 that would tell it to authenticate to the gateway again.
        let relayed_status = reqwest::StatusCode::FORBIDDEN;
        if let Verdict::RequestSpecific(marker) = verdict {
            tracing::info!(provider = %provider.name, key_id = %key.id, key = %key.fingerprint, status = status.as_u16(), marker, "provider refused the request, not the key");
            return relayed(provider, relayed_status, message, retry_after);
        }
        if !self.keys.take_rejection(principal).await {
            tracing::warn!(provider = %provider.name, key_id = %key.id, key = %key.fingerprint, status = status.as_u16(), marker = verdict.marker(), principal, "principal's key rejection budget spent; key health left alone");
            return relayed(provider, relayed_status, message, retry_after);
        }
        match verdict {
            Verdict::KeyInvalid(marker) => {
                tracing::warn!(provider = %provider.name, key_id = %key.id, key = %key.fingerprint, status = status.as_u16(), marker, principal, "provider says the key is invalid; disabling it");
                self.keys.disable(provider, key).await;
                let reason = format!("{marker}: {message}");
                let _ = self.rejections.try_send(KeyRejection {
                    provider: provider.name.clone(),
                    key_id: key.id.clone(),
                    fingerprint: key.fingerprint.clone(),
                    status: status.as_u16(),
                    reason: reason.chars().take(200).collect(),
                });
                ApiError::upstream_auth_failed(&provider.name)
            }
            _ => {
                tracing::warn!(provider = %provider.name, key_id = %key.id, key = %key.fingerprint, status = status.as_u16(), marker = verdict.marker(), principal, cooldown_secs = AMBIGUOUS_COOLDOWN.as_secs(), "provider rejected the key without saying why; resting it");
                self.keys.cool_down(provider, key, AMBIGUOUS_COOLDOWN).await;
                relayed(provider, relayed_status, message, retry_after)
            }
        }
    }
}

/// The egress policy's refusal of `provider`: logged with the address at fault (the client
/// hears only that the policy refused), counted, and answered 502 `egress_denied`.
fn egress_refused(provider: &Provider, denied: &crate::egress::Denied) -> ApiError {
    tracing::warn!(provider = %provider.name, reason = denied.label(), error = %denied, "upstream refused by the egress policy; nothing sent");
    metrics::counter!(crate::metrics::EGRESS_DENIED, "reason" => denied.label()).increment(1);
    ApiError::egress_denied(&provider.name)
}

/// A provider's 4xx relayed to the client: its (redacted) message, or a plain one.
fn relayed(
    provider: &Provider,
    status: reqwest::StatusCode,
    message: String,
    retry_after: Option<String>,
) -> ApiError {
    let message = if message.is_empty() {
        format!("Provider `{}` rejected the request.", provider.name)
    } else {
        message
    };
    ApiError::rejected_by_provider(status, message, retry_after)
}

/// Whose upstream key an attempt uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyOwner<'a> {
    /// One of the provider's keys in the snapshot, used for `principal`.
    Gateway { principal: &'a str },
    /// The client's own, for a passthrough provider.
    Client,
}

/// The header `key` is sent in for `format`: `x-api-key` for Anthropic, a bearer
/// `Authorization` otherwise. Marked sensitive, so it is never logged.
fn auth_header(
    key: &UpstreamKey,
    format: Format,
) -> Result<(header::HeaderName, HeaderValue), ApiError> {
    let (name, value) = match format {
        Format::Anthropic => (
            header::HeaderName::from_static("x-api-key"),
            key.secret.expose_secret().to_owned(),
        ),
        _ => (
            header::AUTHORIZATION,
            format!("Bearer {}", key.secret.expose_secret()),
        ),
    };
    let mut auth = HeaderValue::from_str(&value).map_err(|_| ApiError::unusable_upstream_key())?;
    drop(value);
    auth.set_sensitive(true);
    Ok((name, auth))
}

/// The provider's error message, with the key and every secret pattern redacted, and what
/// the error says about the key.
async fn error_message(key: &UpstreamKey, response: reqwest::Response) -> (String, Verdict) {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Ok(Some(chunk)) = stream.try_next().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_ERROR_BODY {
            body.truncate(MAX_ERROR_BODY);
            break;
        }
    }
    let parsed = serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default();
    let verdict = rejection::classify(&parsed);
    let message = parsed
        .pointer("/error/message")
        .and_then(|m| m.as_str())
        .unwrap_or_default();
    let safe = message.replace(key.secret.expose_secret(), "[REDACTED]");
    let safe = warden_core::redact::redact(&safe).into_owned();
    (safe.chars().take(500).collect(), verdict)
}
