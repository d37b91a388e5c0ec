//! Errors answered to clients. An [`ApiError`] is made by one of its constructors — one per
//! way a request can fail — and carries its class ([`ErrorCode`], from which its HTTP status
//! derives, but for a provider's 4xx relayed as is), where it came from ([`Origin`]) and
//! whether another try can help (`retryable`: the failover loop reads it, pingora's
//! `Error { etype, esource, retry }`). It is rendered in one place per API shape
//! ([`ApiError::body`]): the OpenAI error
//! (`{"error":{"message","type","param","code"}}`), or on the Anthropic endpoints the
//! Anthropic one (`{"type":"error","error":{"type","message"}}`, its type chosen by
//! [`crate::translate::error`]). Messages are fixed or redacted: they never carry a key, a
//! token or a raw upstream body.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use warden_proto::ErrorCode;

use crate::limits::{Denied, LimitKind};
use crate::translate::{TranslateError, Wire};

/// Where a failure came from (pingora's `esource`), for logs and the audit reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The client's request or credential.
    Downstream,
    /// The provider.
    Upstream,
    /// Warden itself.
    Internal,
}

/// An error for the client: its class and HTTP status, the OpenAI `type`/`code` and
/// message, where it came from and whether trying again may help.
#[derive(Debug, Clone)]
pub struct ApiError {
    code: ErrorCode,
    /// `code.http()`, but for a provider's status relayed as is.
    status: StatusCode,
    openai_type: &'static str,
    openai_code: Option<&'static str>,
    message: String,
    origin: Origin,
    /// Whether trying again (another key, later) may succeed.
    retryable: bool,
    retry_after: Option<String>,
    /// Headers to add to the error response (e.g. `x-ratelimit-*`).
    extra_headers: Vec<(String, String)>,
}

/// The settings every constructor chooses; the rest default to none.
struct Parts {
    code: ErrorCode,
    openai_type: &'static str,
    openai_code: Option<&'static str>,
    origin: Origin,
    retryable: bool,
}

const INVALID_REQUEST: &str = "invalid_request_error";
const API_ERROR: &str = "api_error";

impl ApiError {
    fn new(parts: Parts, message: impl Into<String>) -> Self {
        let Parts {
            code,
            openai_type,
            openai_code,
            origin,
            retryable,
        } = parts;
        Self {
            code,
            status: code.http(),
            openai_type,
            openai_code,
            message: message.into(),
            origin,
            retryable,
            retry_after: None,
            extra_headers: Vec::new(),
        }
    }

    /// A client's mistake: not worth retrying as is.
    fn downstream(
        code: ErrorCode,
        openai_type: &'static str,
        openai_code: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(
            Parts {
                code,
                openai_type,
                openai_code,
                origin: Origin::Downstream,
                retryable: false,
            },
            message,
        )
    }

    /// A provider's failure.
    fn upstream(
        code: ErrorCode,
        openai_code: &'static str,
        retryable: bool,
        message: impl Into<String>,
    ) -> Self {
        Self::new(
            Parts {
                code,
                openai_type: API_ERROR,
                openai_code: Some(openai_code),
                origin: Origin::Upstream,
                retryable,
            },
            message,
        )
    }

    /// Warden cannot serve right now (503), retry shortly.
    fn unavailable(openai_code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            Parts {
                code: ErrorCode::Unavailable,
                openai_type: API_ERROR,
                openai_code: Some(openai_code),
                origin: Origin::Internal,
                retryable: true,
            },
            message,
        )
    }

    fn with_retry_after(mut self, retry_after: Option<String>) -> Self {
        self.retry_after = retry_after;
        self
    }

    fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    fn with_extra_headers(mut self, extra_headers: Vec<(String, String)>) -> Self {
        self.extra_headers = extra_headers;
        self
    }

    // ---- the client's request or credential ----------------------------------------

    pub fn unauthenticated() -> Self {
        Self::downstream(
            ErrorCode::Unauthenticated,
            INVALID_REQUEST,
            Some("invalid_api_key"),
            "Invalid or missing credential. Pass a Warden token or virtual key as `Authorization: Bearer …`.",
        )
    }

    pub fn missing_scope(scope: &str) -> Self {
        Self::downstream(
            ErrorCode::PermissionDenied,
            "permission_error",
            Some("insufficient_scope"),
            format!("This credential lacks the `{scope}` scope."),
        )
    }

    /// The credential is suspended (`wardenctl credentials suspend`): authenticated, so
    /// 403 (not 401, which would tell the holder to authenticate again); it tells only its
    /// own holder that it is suspended, nothing about why or about other credentials.
    pub fn credential_suspended() -> Self {
        Self::downstream(
            ErrorCode::PermissionDenied,
            "permission_error",
            Some("credential_suspended"),
            "This credential is suspended.",
        )
    }
    /// The client's address is outside the gateway's or the credential's IP allow-list.
    pub fn ip_not_allowed() -> Self {
        Self::downstream(
            ErrorCode::PermissionDenied,
            "permission_error",
            Some("ip_not_allowed"),
            "Requests from your network address are not allowed.",
        )
    }

    /// The request's `Origin` is not allowed: by the gateway's CORS (a preflight) or by
    /// the credential's own origin list.
    pub fn origin_not_allowed() -> Self {
        Self::downstream(
            ErrorCode::PermissionDenied,
            "permission_error",
            Some("origin_not_allowed"),
            "Requests from this web origin are not allowed.",
        )
    }

    pub fn model_not_allowed(model: &str) -> Self {
        Self::downstream(
            ErrorCode::PermissionDenied,
            "permission_error",
            Some("model_not_allowed"),
            format!(
                "This credential is not allowed to use the model `{}`.",
                clip(model)
            ),
        )
    }

    pub fn model_not_found(model: &str) -> Self {
        Self::downstream(
            ErrorCode::NotFound,
            INVALID_REQUEST,
            Some("model_not_found"),
            format!("The model `{}` does not exist.", clip(model)),
        )
    }

    /// A request refused by the DLP rule `rule` (400 `dlp_blocked`); names the rule, never
    /// what it matched.
    pub fn dlp_blocked(rule: &str) -> Self {
        Self::downstream(
            ErrorCode::InvalidArgument,
            INVALID_REQUEST,
            Some("dlp_blocked"),
            format!(
                "This request was blocked by the data loss prevention rule `{rule}`: remove \
                 the sensitive data and try again."
            ),
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::downstream(ErrorCode::InvalidArgument, INVALID_REQUEST, None, message)
    }

    /// A request body that could not be read (too large, broken connection), with the
    /// status the body extractor chose.
    pub fn unreadable_body(status: StatusCode) -> Self {
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Self::downstream(
                ErrorCode::PayloadTooLarge,
                INVALID_REQUEST,
                None,
                "The request body is larger than this gateway accepts.",
            )
        } else {
            Self::bad_request("The request body could not be read.").with_status(status)
        }
    }

    /// A request body that did not arrive within the body-read timeout (408).
    pub fn body_timeout(timeout: Duration) -> Self {
        Self::downstream(
            ErrorCode::InvalidArgument,
            INVALID_REQUEST,
            Some("request_timeout"),
            format!(
                "The request body did not arrive within {} seconds.",
                timeout.as_secs_f64()
            ),
        )
        .with_status(StatusCode::REQUEST_TIMEOUT)
    }

    /// The caller's address is past the failed-login limit (429), checked before any
    /// credential; its window closes in `retry_after`.
    pub fn too_many_failed_logins(retry_after: Duration) -> Self {
        Self::downstream(
            ErrorCode::RateLimited,
            "requests",
            Some("too_many_failed_logins"),
            format!(
                "Too many failed authentications from your address. Please try again in {}.",
                crate::limits::format_reset(retry_after)
            ),
        )
        .with_retry_after(Some(retry_after.as_secs_f64().ceil().max(1.0).to_string()))
    }

    /// The caller's address is blocked (403), checked before any credential: automatically
    /// after failed logins, or by an operator.
    pub fn ip_blocked() -> Self {
        Self::downstream(
            ErrorCode::PermissionDenied,
            "permission_error",
            Some("ip_blocked"),
            "Requests from your address are blocked (ip_blocked): too many failed authentications, or an operator's block.",
        )
    }

    /// A path the gateway does not serve.
    pub fn unknown_endpoint() -> Self {
        Self::downstream(
            ErrorCode::NotFound,
            INVALID_REQUEST,
            None,
            "Unknown endpoint. Warden serves /v1/chat/completions, /v1/messages, /v1/messages/count_tokens, /v1/embeddings, /v1/responses and /v1/models.",
        )
    }

    /// A served path called with another HTTP method.
    pub fn method_not_allowed() -> Self {
        Self::downstream(
            ErrorCode::MethodNotAllowed,
            INVALID_REQUEST,
            None,
            "This endpoint does not accept this HTTP method.",
        )
    }

    /// A passthrough model called without the client's own provider key, which goes in
    /// header `header`.
    pub fn missing_upstream_key(alias: &str, header: &str) -> Self {
        Self::downstream(
            ErrorCode::Unauthenticated,
            INVALID_REQUEST,
            Some("missing_upstream_key"),
            format!(
                "The provider of model `{alias}` needs your own provider key: send it in the `{header}` header (your Warden credential stays in `Authorization`)."
            ),
        )
    }

    /// A limit refused the request (429): `kind` of `scope` is at `limit`, free again in
    /// `retry_after`.
    pub fn limit_reached(kind: LimitKind, scope: &str, limit: u64, retry_after: Duration) -> Self {
        // A virtual key's id is shown as the logs and audit rows show it (`vk_1234****cdef`).
        let scope = match scope.strip_prefix("vkey:") {
            Some(id) => format!("vkey:{}", warden_core::fingerprint::obfuscate(id)),
            None => scope.to_owned(),
        };
        let wait = crate::limits::format_reset(retry_after);
        let (openai_type, openai_code, message) = match kind {
            LimitKind::Budget => (
                "insufficient_quota",
                "insufficient_quota",
                format!(
                    "You exceeded your current quota: the budget of {scope} (${:.2}) is spent for this period.",
                    limit as f64 / 1e6
                ),
            ),
            LimitKind::Requests => (
                "requests",
                "rate_limit_exceeded",
                format!(
                    "Rate limit reached for {scope} on requests per min (RPM): Limit {limit}. Please try again in {wait}."
                ),
            ),
            LimitKind::Tokens => (
                "tokens",
                "rate_limit_exceeded",
                format!(
                    "Rate limit reached for {scope} on tokens per min (TPM): Limit {limit}. Please try again in {wait}."
                ),
            ),
            LimitKind::Parallel => (
                "requests",
                "rate_limit_exceeded",
                format!(
                    "Too many requests in flight for {scope}: Limit {limit}. Please try again in {wait}."
                ),
            ),
        };
        let extra_headers = match kind {
            LimitKind::Requests | LimitKind::Tokens => {
                let which = if kind == LimitKind::Requests {
                    "requests"
                } else {
                    "tokens"
                };
                vec![
                    (format!("x-ratelimit-limit-{which}"), limit.to_string()),
                    (format!("x-ratelimit-remaining-{which}"), "0".into()),
                    (format!("x-ratelimit-reset-{which}"), wait),
                ]
            }
            LimitKind::Budget | LimitKind::Parallel => Vec::new(),
        };
        Self::new(
            Parts {
                code: ErrorCode::RateLimited,
                openai_type,
                openai_code: Some(openai_code),
                origin: Origin::Downstream,
                retryable: true,
            },
            message,
        )
        .with_retry_after(Some(retry_after.as_secs_f64().ceil().max(1.0).to_string()))
        .with_extra_headers(extra_headers)
    }

    /// A stream ended by the gateway because its tokens crossed a tokens-per-minute
    /// (`Tokens`) or budget (`Budget`) limit; sent as the stream's last event.
    pub fn limit_crossed_mid_stream(kind: LimitKind) -> Self {
        let (openai_type, openai_code, message) = if kind == LimitKind::Budget {
            (
                "insufficient_quota",
                "insufficient_quota",
                "You exceeded your current quota: the budget of this credential is spent. The stream was ended by the gateway.",
            )
        } else {
            (
                "tokens",
                "rate_limit_exceeded",
                "Rate limit reached on tokens per minute while streaming. The stream was ended by the gateway.",
            )
        };
        Self::downstream(
            ErrorCode::RateLimited,
            openai_type,
            Some(openai_code),
            message,
        )
    }

    // ---- Warden itself --------------------------------------------------------------

    pub fn not_ready() -> Self {
        Self::unavailable(
            "not_ready",
            "The gateway has not received its configuration yet; retry shortly.",
        )
    }

    /// Past `--max-snapshot-age` without the control plane: no client credential can be
    /// confirmed unrevoked (fail-closed).
    pub fn control_plane_unreachable() -> Self {
        Self::unavailable(
            "control_plane_unreachable",
            "This gateway has not reached its control plane for longer than its configured bound, so it cannot confirm that credentials are unrevoked; it refuses them until it reconnects. Retry shortly.",
        )
    }

    /// The node cannot record audit events (`--audit-on-full closed`), so it serves nothing.
    pub fn audit_unavailable(reason: &str) -> Self {
        Self::unavailable(
            "audit_unavailable",
            format!(
                "Audit log unavailable ({reason}): this gateway refuses requests until it can record them again. Retry shortly."
            ),
        )
        .with_retry_after(Some("1".to_owned()))
    }

    /// The gateway is locked down (`wardenctl lockdown`): every client request is refused,
    /// before its credential is looked up, so the answer is the same for every caller.
    pub fn locked_down() -> Self {
        Self::unavailable(
            "gateway_locked_down",
            "This gateway is locked down by its operators and serves no requests.",
        )
    }

    /// The limits cannot be checked (shared state unreachable, fail-closed).
    pub fn limits_unavailable() -> Self {
        Self::unavailable(
            "limits_unavailable",
            "The gateway cannot check this credential's limits right now; retry shortly.",
        )
        .with_retry_after(Some("1".to_owned()))
    }

    /// The node has as many requests in flight as `--http-max-concurrent-requests` allows.
    pub fn overloaded() -> Self {
        Self::unavailable(
            "overloaded",
            "This gateway node is serving as many requests as it allows; retry shortly.",
        )
        .with_retry_after(Some("1".to_owned()))
    }

    /// The node stopped (SIGTERM) and its drain deadline passed while this answer streamed.
    pub fn shutting_down() -> Self {
        Self::unavailable(
            "shutting_down",
            "This gateway node is shutting down and ended the answer at its drain deadline; retry the request.",
        )
        .with_retry_after(Some("1".to_owned()))
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            Parts {
                code: ErrorCode::Internal,
                openai_type: API_ERROR,
                openai_code: None,
                origin: Origin::Internal,
                retryable: false,
            },
            message,
        )
    }

    /// An upstream key that cannot be sent (not a valid header value).
    pub fn unusable_upstream_key() -> Self {
        Self::internal("an upstream key is not a valid header value")
    }

    // ---- the provider ---------------------------------------------------------------

    /// The provider did not answer within the read timeout.
    pub fn upstream_timeout(provider: &str) -> Self {
        Self::upstream(
            ErrorCode::UpstreamTimeout,
            "upstream_timeout",
            true,
            format!("The request to provider `{provider}` timed out."),
        )
    }

    /// The provider's whole exchange took longer than `--upstream-deadline`.
    pub fn upstream_deadline(provider: &str, deadline: Duration) -> Self {
        Self::upstream(
            ErrorCode::UpstreamTimeout,
            "upstream_deadline",
            false,
            format!(
                "The request to provider `{provider}` did not complete within the gateway's deadline of {} s.",
                deadline.as_secs_f64()
            ),
        )
    }

    /// The provider could not be connected to.
    pub fn upstream_unreachable(provider: &str) -> Self {
        Self::upstream(
            ErrorCode::UpstreamFailed,
            "upstream_unreachable",
            true,
            format!("The request to provider `{provider}` could not be reached."),
        )
    }

    /// TLS with the provider failed — its certificate did not verify against the public
    /// roots or the provider's own CA bundle: nothing was sent.
    pub fn upstream_tls_failed(provider: &str) -> Self {
        Self::upstream(
            ErrorCode::UpstreamFailed,
            "upstream_tls_failed",
            true,
            format!(
                "The TLS connection to provider `{provider}` failed: its certificate could not be verified."
            ),
        )
    }

    /// The node's egress policy refused the provider's address ([`crate::egress`]): nothing
    /// was sent. Another route (a fallback) may be allowed.
    pub fn egress_denied(provider: &str) -> Self {
        Self::new(
            Parts {
                code: ErrorCode::UpstreamFailed,
                openai_type: API_ERROR,
                openai_code: Some("egress_denied"),
                origin: Origin::Internal,
                retryable: true,
            },
            format!(
                "The request to provider `{provider}` was refused by the gateway's egress policy."
            ),
        )
    }

    /// The request to the provider failed on the way (neither a timeout nor a refused
    /// connection).
    pub fn upstream_request_failed(provider: &str) -> Self {
        Self::upstream(
            ErrorCode::UpstreamFailed,
            "upstream_error",
            true,
            format!("The request to provider `{provider}` failed."),
        )
    }

    /// The provider answered with an error that is not the request's fault (5xx, or an
    /// unexpected status).
    pub fn upstream_status_failed(
        provider: &str,
        status: StatusCode,
        retry_after: Option<String>,
    ) -> Self {
        Self::upstream(
            ErrorCode::UpstreamFailed,
            "upstream_error",
            true,
            format!(
                "Provider `{provider}` failed with status {}.",
                status.as_u16()
            ),
        )
        .with_retry_after(retry_after)
    }

    /// The provider rejected one of the gateway's own upstream keys (401/403).
    pub fn upstream_auth_failed(provider: &str) -> Self {
        Self::upstream(
            ErrorCode::UpstreamFailed,
            "upstream_auth_failed",
            true,
            format!("Provider `{provider}` rejected the gateway's upstream key."),
        )
    }

    /// The provider rate limits one of the gateway's keys (429); `message` is the
    /// provider's, redacted.
    pub fn upstream_rate_limited(
        provider: &str,
        message: &str,
        retry_after: Option<String>,
    ) -> Self {
        Self::upstream(
            ErrorCode::RateLimited,
            "rate_limit_exceeded",
            true,
            format!("Provider `{provider}` is rate limiting: {message}"),
        )
        .with_retry_after(retry_after)
    }

    /// The provider has no upstream key configured.
    pub fn no_upstream_key(provider: &str) -> Self {
        Self::upstream(
            ErrorCode::Unavailable,
            "no_upstream_key",
            false,
            format!("No upstream key is configured for provider `{provider}`."),
        )
    }

    /// Every key of the model and its fallbacks is rate limited or disabled; the shortest
    /// wait is `wait`.
    pub fn upstream_keys_exhausted(wait: Duration) -> Self {
        Self::new(
            Parts {
                code: ErrorCode::RateLimited,
                openai_type: "requests",
                openai_code: Some("upstream_keys_exhausted"),
                origin: Origin::Upstream,
                retryable: true,
            },
            "All upstream keys exhausted: every key of this model and its fallbacks is rate limited or disabled.",
        )
        .with_retry_after(Some(wait.as_secs().max(1).to_string()))
    }

    /// The provider refused the request itself (a 4xx that is not about the key): its
    /// status is relayed, with its message (redacted).
    pub fn rejected_by_provider(
        status: StatusCode,
        message: impl Into<String>,
        retry_after: Option<String>,
    ) -> Self {
        Self::new(
            Parts {
                code: ErrorCode::InvalidArgument,
                openai_type: INVALID_REQUEST,
                openai_code: None,
                origin: Origin::Upstream,
                retryable: false,
            },
            message,
        )
        .with_status(status)
        .with_retry_after(retry_after)
    }

    /// The provider rejected the key a client sent for a passthrough model (401 or 403,
    /// relayed).
    pub fn client_key_rejected(
        provider: &str,
        status: StatusCode,
        retry_after: Option<String>,
    ) -> Self {
        let code = if status == StatusCode::FORBIDDEN {
            ErrorCode::PermissionDenied
        } else {
            ErrorCode::Unauthenticated
        };
        Self::new(
            Parts {
                code,
                openai_type: INVALID_REQUEST,
                openai_code: Some("upstream_key_rejected"),
                origin: Origin::Upstream,
                retryable: false,
            },
            format!("Provider `{provider}` rejected the upstream key you sent."),
        )
        .with_status(status)
        .with_retry_after(retry_after)
    }

    /// The provider rate limits the key a client sent for a passthrough model.
    pub fn client_key_rate_limited(
        provider: &str,
        message: &str,
        retry_after: Option<String>,
    ) -> Self {
        Self::upstream(
            ErrorCode::RateLimited,
            "rate_limit_exceeded",
            true,
            format!("Provider `{provider}` is rate limiting your key: {message}"),
        )
        .with_retry_after(retry_after)
    }

    // ---- reading --------------------------------------------------------------------

    /// The class of failure.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The OpenAI `error.type`.
    pub fn openai_type(&self) -> &'static str {
        self.openai_type
    }

    /// The OpenAI `error.code`.
    pub fn openai_code(&self) -> Option<&'static str> {
        self.openai_code
    }

    /// The message shown to the client.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Where the failure came from.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// Whether trying again (another key, later) may succeed.
    pub fn retryable(&self) -> bool {
        self.retryable
    }

    /// Low-cardinality label for logs and metrics.
    pub fn metric_label(&self) -> &'static str {
        self.openai_code.unwrap_or(self.openai_type)
    }

    // ---- rendering ------------------------------------------------------------------

    /// The error's JSON body in the shape of `api`.
    pub fn body(&self, api: Wire) -> Value {
        let openai = json!({
            "error": {
                "message": self.message,
                "type": self.openai_type,
                "param": null,
                "code": self.openai_code,
            }
        });
        match api {
            Wire::OpenAi => openai,
            Wire::Anthropic => {
                crate::translate::error::anthropic_body_from_openai(self.status, &openai)
            }
        }
    }

    /// The response in the error shape of `api`: the body, `retry-after` and any
    /// `x-ratelimit-*` headers, and for an OpenAI-shaped 401 the `www-authenticate` challenge.
    pub fn render(self, api: Wire) -> Response {
        let mut response = (self.status, axum::Json(self.body(api))).into_response();
        let headers = response.headers_mut();
        if let Some(ra) = self
            .retry_after
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            headers.insert("retry-after", ra);
        }
        for (name, value) in &self.extra_headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(n, v);
            }
        }
        if api == Wire::OpenAi && self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                "www-authenticate",
                HeaderValue::from_static("Bearer realm=\"warden\""),
            );
        }
        response
    }
}

/// A request refused by the limits: over a rate, the parallel cap or the budget (429), or
/// limits that cannot be checked right now (503).
impl From<&Denied> for ApiError {
    fn from(d: &Denied) -> Self {
        match d {
            Denied::Unavailable => ApiError::limits_unavailable(),
            Denied::Limit {
                kind,
                scope,
                limit,
                retry_after,
            } => ApiError::limit_reached(*kind, scope, *limit, *retry_after),
        }
    }
}

/// A request that cannot be translated for the provider: the client's fault (400) or the
/// gateway's (500).
impl From<TranslateError> for ApiError {
    fn from(e: TranslateError) -> Self {
        if e.is_client_error() {
            ApiError::bad_request(e.to_string())
        } else {
            ApiError::internal(e.to_string())
        }
    }
}

/// Names echoed back are clipped so a client cannot make us reflect a huge string.
fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    warden_core::redact::redact(&out).into_owned()
}

/// The OpenAI shape, which every OpenAI endpoint answers.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.render(Wire::OpenAi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_openai_shape() {
        let b = ApiError::model_not_allowed("gpt-4o").body(Wire::OpenAi);
        assert_eq!(b["error"]["type"], "permission_error");
        assert_eq!(b["error"]["code"], "model_not_allowed");
        assert!(b["error"]["param"].is_null());
        assert!(b["error"]["message"].as_str().unwrap().contains("gpt-4o"));
    }

    #[test]
    fn reflected_names_are_clipped_and_redacted() {
        let e = ApiError::model_not_found(&format!("sk-{}", "a".repeat(100)));
        assert!(!e.message.contains("aaaaaaaaaa"), "{}", e.message);
    }

    /// The status derives from the class, but where a provider's status is relayed.
    #[test]
    fn statuses_derive_from_the_class() {
        for e in [
            ApiError::unauthenticated(),
            ApiError::missing_scope("write"),
            ApiError::model_not_found("m"),
            ApiError::bad_request("x"),
            ApiError::unreadable_body(StatusCode::PAYLOAD_TOO_LARGE),
            ApiError::unknown_endpoint(),
            ApiError::method_not_allowed(),
            ApiError::limit_reached(LimitKind::Tokens, "s", 1, Duration::from_secs(1)),
            ApiError::not_ready(),
            ApiError::internal("x"),
            ApiError::upstream_timeout("p"),
            ApiError::upstream_unreachable("p"),
            ApiError::no_upstream_key("p"),
            ApiError::client_key_rejected("p", StatusCode::FORBIDDEN, None),
        ] {
            assert_eq!(e.status(), e.code().http(), "{e:?}");
        }
        let relayed = ApiError::rejected_by_provider(StatusCode::UNPROCESSABLE_ENTITY, "no", None);
        assert_eq!(relayed.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(relayed.code(), ErrorCode::InvalidArgument);
    }
}
