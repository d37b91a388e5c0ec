//! Sending a request to a provider, with key rotation and failover: one pooled rustls
//! client per node; the upstream key is injected here and nowhere else.
//!
//! [`Upstream::send`] walks the model's route and then its fallbacks; on each route it
//! picks keys ([`keys::KeyPicker`]) until one answers: a 401/403 disables the key on every
//! node (and is reported to the control plane), a 429 cools it down for the provider's
//! `Retry-After`, a 5xx or a transport failure moves on to the next key. A 4xx that is the
//! request's own fault is returned at once. Nothing is retried once an answer has been
//! handed to the client.

pub mod keys;

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use bytes::Bytes;
use futures::TryStreamExt as _;
use secrecy::ExposeSecret as _;
use tokio::sync::mpsc;

use crate::compiled::{Format, Provider, Route, Snapshot, UpstreamKey};
use crate::error::ApiError;
use keys::{KeyPicker, NoKey};

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
    client: reqwest::Client,
    pub keys: KeyPicker,
    rejections: mpsc::Sender<KeyRejection>,
}

enum Outcome {
    Served(reqwest::Response),
    /// Try the next key (the failure was the key's or the provider's).
    NextKey(ApiError),
    /// Stop: the request itself is at fault.
    Final(ApiError),
}

impl Upstream {
    pub fn new(
        connect_timeout: Duration,
        read_timeout: Duration,
        keys: KeyPicker,
        rejections: mpsc::Sender<KeyRejection>,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .read_timeout(read_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("warden/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            keys,
            rejections,
        })
    }

    /// Sends `request_for(route)` to the route's provider, rotating keys and falling back
    /// to the route's fallback models (whose provider may speak the other format:
    /// `request_for` builds the request for each).
    pub async fn send(
        &self,
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
            if provider.passthrough {
                let Some(secret) = client_key else {
                    let mut e = ApiError::unauthenticated();
                    e.code = Some("missing_upstream_key");
                    e.message = format!(
                        "The provider of model `{}` needs your own provider key: send it in the `{CLIENT_KEY_HEADER}` header (your Warden credential stays in `Authorization`).",
                        route.alias
                    );
                    return Err(e);
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
                match self
                    .attempt_with(provider, &key, &request, stream, false)
                    .await
                {
                    Outcome::Served(response) => {
                        return Ok(Served {
                            response,
                            route: route.clone(),
                            key_fingerprint: key.fingerprint,
                            fallback: *is_fallback,
                        });
                    }
                    Outcome::NextKey(e) | Outcome::Final(e) => return Err(e),
                }
            }
            if provider.keys.is_empty() {
                let mut e = ApiError::upstream(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some("no_upstream_key"),
                    format!(
                        "No upstream key is configured for provider `{}`.",
                        provider.name
                    ),
                );
                e.retryable = false;
                last_error = Some(e);
                continue;
            }
            let request = request_for(route)?;
            let mut tried = vec![false; provider.keys.len()];
            loop {
                let index = match self.keys.pick(provider, &tried).await {
                    Ok(i) => i,
                    Err(NoKey::CoolingDown(wait)) => {
                        shortest_wait = Some(shortest_wait.map_or(wait, |w| w.min(wait)));
                        break;
                    }
                    Err(NoKey::Exhausted) => break,
                };
                tried[index] = true;
                let key = &provider.keys[index];
                match self.attempt(provider, key, &request, stream).await {
                    Outcome::Served(response) => {
                        return Ok(Served {
                            response,
                            route: route.clone(),
                            key_fingerprint: key.fingerprint.clone(),
                            fallback: *is_fallback,
                        });
                    }
                    Outcome::NextKey(e) => last_error = Some(e),
                    Outcome::Final(e) => return Err(e),
                }
            }
        }
        // Every key of every route is unusable or failed.
        if let Some(e) = last_error
            && e.status.is_server_error()
        {
            return Err(e);
        }
        let mut e = ApiError::upstream(
            StatusCode::TOO_MANY_REQUESTS,
            Some("upstream_keys_exhausted"),
            "All upstream keys exhausted: every key of this model and its fallbacks is rate limited or disabled.",
        );
        e.kind = "requests";
        e.retry_after = Some(
            shortest_wait
                .unwrap_or(DEFAULT_COOLDOWN)
                .as_secs()
                .max(1)
                .to_string(),
        );
        Err(e)
    }

    async fn attempt(
        &self,
        provider: &Provider,
        key: &UpstreamKey,
        request: &UpstreamRequest,
        stream: bool,
    ) -> Outcome {
        self.attempt_with(provider, key, request, stream, true)
            .await
    }

    /// One attempt. `managed` keys are the gateway's: their failures change their shared
    /// health. A client's own (passthrough) key is not: a 401/403 is the client's to fix.
    async fn attempt_with(
        &self,
        provider: &Provider,
        key: &UpstreamKey,
        request: &UpstreamRequest,
        stream: bool,
        managed: bool,
    ) -> Outcome {
        let url = format!("{}{}", provider.base_url, request.path);
        let (name, value) = match request.format {
            Format::Anthropic => (
                header::HeaderName::from_static("x-api-key"),
                key.secret.expose_secret().to_owned(),
            ),
            _ => (
                header::AUTHORIZATION,
                format!("Bearer {}", key.secret.expose_secret()),
            ),
        };
        let mut auth = match HeaderValue::from_str(&value) {
            Ok(v) => v,
            Err(_) => {
                return Outcome::NextKey(ApiError::internal(
                    "an upstream key is not a valid header value",
                ));
            }
        };
        drop(value);
        auth.set_sensitive(true);
        let accept = if stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        let mut builder = self
            .client
            .post(&url)
            .header(name, auth)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, accept);
        if request.format == Format::Anthropic {
            builder = builder.header("anthropic-version", ANTHROPIC_VERSION);
        }
        let result = builder.body(request.body.clone()).send().await;
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                let (status, code, what) = if e.is_timeout() {
                    (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", "timed out")
                } else if e.is_connect() {
                    (
                        StatusCode::BAD_GATEWAY,
                        "upstream_unreachable",
                        "could not be reached",
                    )
                } else {
                    (StatusCode::BAD_GATEWAY, "upstream_error", "failed")
                };
                tracing::warn!(provider = %provider.name, key = %key.fingerprint, error = %e, "upstream request failed");
                return Outcome::NextKey(ApiError::upstream(
                    status,
                    Some(code),
                    format!("The request to provider `{}` {what}.", provider.name),
                ));
            }
        };
        let status = response.status();
        if status.is_success() {
            return Outcome::Served(response);
        }
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let message = error_message(key, response).await;
        tracing::warn!(
            provider = %provider.name,
            key = %key.fingerprint,
            status = status.as_u16(),
            message = %message,
            "upstream answered with an error"
        );
        if !managed {
            let mut e = match status.as_u16() {
                401 | 403 => {
                    let mut e = ApiError::unauthenticated();
                    e.status = status;
                    e.code = Some("upstream_key_rejected");
                    e.message = format!(
                        "Provider `{}` rejected the upstream key you sent.",
                        provider.name
                    );
                    e
                }
                429 => ApiError::upstream(
                    StatusCode::TOO_MANY_REQUESTS,
                    Some("rate_limit_exceeded"),
                    format!(
                        "Provider `{}` is rate limiting your key: {message}",
                        provider.name
                    ),
                ),
                400..=499 => {
                    let mut e = ApiError::bad_request(message);
                    e.status = status;
                    e
                }
                _ => ApiError::upstream(
                    StatusCode::BAD_GATEWAY,
                    Some("upstream_error"),
                    format!(
                        "Provider `{}` failed with status {}.",
                        provider.name,
                        status.as_u16()
                    ),
                ),
            };
            e.origin = crate::error::Origin::Upstream;
            e.retry_after = retry_after;
            return Outcome::Final(e);
        }
        match status.as_u16() {
            401 | 403 => {
                self.keys.disable(provider, key).await;
                let _ = self.rejections.try_send(KeyRejection {
                    provider: provider.name.clone(),
                    key_id: key.id.clone(),
                    fingerprint: key.fingerprint.clone(),
                    status: status.as_u16(),
                    reason: message.chars().take(200).collect(),
                });
                Outcome::NextKey(ApiError::upstream(
                    StatusCode::BAD_GATEWAY,
                    Some("upstream_auth_failed"),
                    format!(
                        "Provider `{}` rejected the gateway's upstream key.",
                        provider.name
                    ),
                ))
            }
            429 => {
                let wait = retry_after
                    .as_deref()
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .map_or(DEFAULT_COOLDOWN, |s| Duration::from_secs_f64(s.min(3600.0)));
                self.keys.cool_down(provider, key, wait).await;
                let mut e = ApiError::upstream(
                    StatusCode::TOO_MANY_REQUESTS,
                    Some("rate_limit_exceeded"),
                    format!("Provider `{}` is rate limiting: {message}", provider.name),
                );
                e.retry_after = retry_after;
                Outcome::NextKey(e)
            }
            400..=499 => {
                let mut e = ApiError::bad_request(if message.is_empty() {
                    format!("Provider `{}` rejected the request.", provider.name)
                } else {
                    message
                });
                e.status = status;
                e.origin = crate::error::Origin::Upstream;
                e.retry_after = retry_after;
                Outcome::Final(e)
            }
            _ => Outcome::NextKey(ApiError::upstream(
                StatusCode::BAD_GATEWAY,
                Some("upstream_error"),
                format!(
                    "Provider `{}` failed with status {}.",
                    provider.name,
                    status.as_u16()
                ),
            )),
        }
    }
}

/// The provider's error message, with the key and every secret pattern redacted.
async fn error_message(key: &UpstreamKey, response: reqwest::Response) -> String {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Ok(Some(chunk)) = stream.try_next().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_ERROR_BODY {
            body.truncate(MAX_ERROR_BODY);
            break;
        }
    }
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let safe = message.replace(key.secret.expose_secret(), "[REDACTED]");
    let safe = warden_core::redact::redact(&safe).into_owned();
    safe.chars().take(500).collect()
}
