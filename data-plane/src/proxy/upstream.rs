//! Forwarding to a provider: one pooled rustls HTTP client per node; the provider key is
//! injected here and nowhere else; answers stream back frame by frame without buffering;
//! provider errors are re-shaped into the OpenAI error shape with secrets redacted.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use futures::TryStreamExt as _;
use secrecy::ExposeSecret as _;

use super::ChatRequest;
use crate::error::ApiError;
use crate::runtime::{Provider, UpstreamKey};

/// Largest provider error body read (the rest is dropped).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The node's client to providers.
#[derive(Debug, Clone)]
pub struct Upstream {
    client: reqwest::Client,
}

impl Upstream {
    pub fn new(connect_timeout: Duration, read_timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .read_timeout(read_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("warden/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client })
    }

    fn pick_key(provider: &Provider) -> Option<&UpstreamKey> {
        if provider.keys.is_empty() {
            return None;
        }
        let i = provider.cursor.fetch_add(1, Ordering::Relaxed) % provider.keys.len();
        provider.keys.get(i)
    }

    /// Sends a chat completion to `provider` and returns its answer as a streaming
    /// response.
    pub async fn forward_chat(
        &self,
        provider: &Provider,
        request: &ChatRequest,
    ) -> Result<Response, ApiError> {
        let key = Self::pick_key(provider).ok_or_else(|| {
            let mut e = ApiError::upstream(
                StatusCode::SERVICE_UNAVAILABLE,
                Some("no_upstream_key"),
                format!(
                    "No upstream key is configured for provider `{}`.",
                    provider.name
                ),
            );
            e.retryable = false;
            e
        })?;
        let url = format!("{}/chat/completions", provider.base_url);
        let body = serde_json::to_vec(&request.body)
            .map_err(|_| ApiError::internal("could not encode the request"))?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", key.secret.expose_secret()))
            .map_err(|_| ApiError::internal("the upstream key is not a valid header value"))?;
        auth.set_sensitive(true);
        let accept = if request.stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        let result = self
            .client
            .post(&url)
            .header(header::AUTHORIZATION, auth)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, accept)
            .body(body)
            .send()
            .await;
        let upstream = match result {
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
                return Err(ApiError::upstream(
                    status,
                    Some(code),
                    format!("The request to provider `{}` {what}.", provider.name),
                ));
            }
        };
        let status = upstream.status();
        if !status.is_success() {
            return Err(self.upstream_error(provider, key, upstream).await);
        }
        let mut builder = Response::builder().status(status.as_u16());
        for name in [header::CONTENT_TYPE, header::CACHE_CONTROL] {
            if let Some(v) = upstream.headers().get(&name) {
                builder = builder.header(name, v.clone());
            }
        }
        // Useful to clients and free of secrets: the provider's own request id and limits.
        for (name, value) in upstream.headers() {
            let n = name.as_str();
            if n.starts_with("x-ratelimit-") || n == "openai-processing-ms" {
                builder = builder.header(name.clone(), value.clone());
            }
        }
        let provider_name = provider.name.clone();
        let stream = upstream.bytes_stream().map_err(move |e| {
            tracing::warn!(provider = %provider_name, error = %e, "upstream stream broke");
            std::io::Error::other("upstream stream broke")
        });
        builder
            .body(Body::from_stream(stream))
            .map_err(|_| ApiError::internal("could not build the response"))
    }

    async fn upstream_error(
        &self,
        provider: &Provider,
        key: &UpstreamKey,
        response: reqwest::Response,
    ) -> ApiError {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Ok(Some(chunk)) = stream.try_next().await {
            body.extend_from_slice(&chunk);
            if body.len() >= MAX_ERROR_BODY {
                body.truncate(MAX_ERROR_BODY);
                break;
            }
        }
        let upstream_message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.pointer("/error/message")
                    .and_then(|m| m.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        let mut safe = upstream_message.replace(key.secret.expose_secret(), "[REDACTED]");
        safe = warden_core::redact::redact(&safe).into_owned();
        safe = safe.chars().take(500).collect();
        tracing::warn!(
            provider = %provider.name,
            key = %key.fingerprint,
            status = status.as_u16(),
            message = %safe,
            "upstream answered with an error"
        );
        let mut error = match status.as_u16() {
            // The provider rejected *our* key: not the caller's fault, and not a reason to
            // tell the caller its own credential is bad.
            401 | 403 => ApiError::upstream(
                StatusCode::BAD_GATEWAY,
                Some("upstream_auth_failed"),
                format!(
                    "Provider `{}` rejected the gateway's upstream key.",
                    provider.name
                ),
            ),
            429 => ApiError::upstream(
                StatusCode::TOO_MANY_REQUESTS,
                Some("rate_limit_exceeded"),
                format!("Provider `{}` is rate limiting: {safe}", provider.name),
            ),
            400..=499 => {
                let mut e = ApiError::bad_request(if safe.is_empty() {
                    format!("Provider `{}` rejected the request.", provider.name)
                } else {
                    safe.clone()
                });
                e.status = status;
                e.origin = crate::error::Origin::Upstream;
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
        error.retry_after = retry_after;
        error
    }
}
