//! Errors answered to clients, in the OpenAI error shape
//! (`{"error":{"message","type","param","code"}}`) or, on the Anthropic endpoints, the
//! Anthropic one ([`ApiError::render`]). Messages are fixed or redacted: they never carry a
//! key, a token or a raw upstream body.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

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

/// An error for the client, with its HTTP status and OpenAI `type`/`code`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub message: String,
    pub origin: Origin,
    /// Whether trying again (another key, later) may succeed.
    pub retryable: bool,
    pub retry_after: Option<String>,
    /// Headers to add to the error response (e.g. `x-ratelimit-*`).
    pub extra_headers: Vec<(String, String)>,
}

impl ApiError {
    fn new(
        status: StatusCode,
        kind: &'static str,
        code: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            code,
            message: message.into(),
            origin: Origin::Downstream,
            retryable: false,
            retry_after: None,
            extra_headers: Vec::new(),
        }
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("invalid_api_key"),
            "Invalid or missing credential. Pass a Warden token or virtual key as `Authorization: Bearer …`.",
        )
    }

    pub fn missing_scope(scope: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            Some("insufficient_scope"),
            format!("This credential lacks the `{scope}` scope."),
        )
    }

    pub fn model_not_allowed(model: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            Some("model_not_allowed"),
            format!(
                "This credential is not allowed to use the model `{}`.",
                clip(model)
            ),
        )
    }

    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("model_not_found"),
            format!("The model `{}` does not exist.", clip(model)),
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            message,
        )
    }

    pub fn not_ready() -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            Some("not_ready"),
            "The gateway has not received its configuration yet; retry shortly.",
        );
        e.origin = Origin::Internal;
        e.retryable = true;
        e
    }

    /// The node cannot record audit events (`--audit-on-full closed`), so it serves nothing.
    pub fn audit_unavailable(reason: &str) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            Some("audit_unavailable"),
            format!(
                "Audit log unavailable ({reason}): this gateway refuses requests until it can record them again. Retry shortly."
            ),
        );
        e.origin = Origin::Internal;
        e.retryable = true;
        e.retry_after = Some("1".to_owned());
        e
    }

    pub fn upstream(
        status: StatusCode,
        code: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        let mut e = Self::new(status, "api_error", code, message);
        e.origin = Origin::Upstream;
        e.retryable = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
        e
    }

    pub fn internal(message: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            None,
            message,
        );
        e.origin = Origin::Internal;
        e
    }

    /// A request body that could not be read (too large, broken connection), with the
    /// status the body extractor chose.
    pub fn unreadable_body(status: StatusCode) -> Self {
        let mut e = if status == StatusCode::PAYLOAD_TOO_LARGE {
            Self::bad_request("The request body is larger than this gateway accepts.")
        } else {
            Self::bad_request("The request body could not be read.")
        };
        e.status = status;
        e
    }

    /// A path the gateway does not serve.
    pub fn unknown_endpoint() -> Self {
        let mut e = Self::bad_request(
            "Unknown endpoint. Warden serves /v1/chat/completions, /v1/messages, /v1/messages/count_tokens, /v1/embeddings, /v1/responses and /v1/models.",
        );
        e.status = StatusCode::NOT_FOUND;
        e
    }

    /// A served path called with another HTTP method.
    pub fn method_not_allowed() -> Self {
        let mut e = Self::bad_request("This endpoint does not accept this HTTP method.");
        e.status = StatusCode::METHOD_NOT_ALLOWED;
        e
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The OpenAI `error.type`.
    pub fn openai_type(&self) -> &'static str {
        self.kind
    }

    /// The OpenAI `error.code`.
    pub fn openai_code(&self) -> Option<&'static str> {
        self.code
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
        self.code.unwrap_or(self.kind)
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": null,
                "code": self.code,
            }
        })
    }
}

/// A request refused by the limits: over a rate, the parallel cap or the budget (429), or
/// limits that cannot be checked right now (503).
impl From<&Denied> for ApiError {
    fn from(d: &Denied) -> Self {
        match d {
            Denied::Unavailable => {
                let mut e = ApiError::internal(
                    "The gateway cannot check this credential's limits right now; retry shortly.",
                );
                e.status = axum::http::StatusCode::SERVICE_UNAVAILABLE;
                e.code = Some("limits_unavailable");
                e.retryable = true;
                e.retry_after = Some("1".into());
                e
            }
            Denied::Limit {
                kind,
                scope,
                limit,
                retry_after,
            } => {
                let wait = crate::limits::format_reset(*retry_after);
                let mut e = match kind {
                    LimitKind::Budget => {
                        let mut e = ApiError::bad_request(format!(
                            "You exceeded your current quota: the budget of {scope} (${:.2}) is spent for this period.",
                            *limit as f64 / 1e6
                        ));
                        e.kind = "insufficient_quota";
                        e.code = Some("insufficient_quota");
                        e
                    }
                    LimitKind::Requests => {
                        let mut e = ApiError::bad_request(format!(
                            "Rate limit reached for {scope} on requests per min (RPM): Limit {limit}. Please try again in {wait}."
                        ));
                        e.kind = "requests";
                        e.code = Some("rate_limit_exceeded");
                        e
                    }
                    LimitKind::Tokens => {
                        let mut e = ApiError::bad_request(format!(
                            "Rate limit reached for {scope} on tokens per min (TPM): Limit {limit}. Please try again in {wait}."
                        ));
                        e.kind = "tokens";
                        e.code = Some("rate_limit_exceeded");
                        e
                    }
                    LimitKind::Parallel => {
                        let mut e = ApiError::bad_request(format!(
                            "Too many requests in flight for {scope}: Limit {limit}. Please try again in {wait}."
                        ));
                        e.kind = "requests";
                        e.code = Some("rate_limit_exceeded");
                        e
                    }
                };
                e.status = axum::http::StatusCode::TOO_MANY_REQUESTS;
                e.retryable = true;
                e.retry_after = Some(retry_after.as_secs_f64().ceil().max(1.0).to_string());
                if let LimitKind::Requests | LimitKind::Tokens = kind {
                    let which = if *kind == LimitKind::Requests {
                        "requests"
                    } else {
                        "tokens"
                    };
                    e.extra_headers
                        .push((format!("x-ratelimit-limit-{which}"), limit.to_string()));
                    e.extra_headers
                        .push((format!("x-ratelimit-remaining-{which}"), "0".into()));
                    e.extra_headers
                        .push((format!("x-ratelimit-reset-{which}"), wait));
                }
                e
            }
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

impl ApiError {
    /// The response in the error shape of `api`.
    pub fn render(self, api: Wire) -> Response {
        match api {
            Wire::OpenAi => self.into_response(),
            Wire::Anthropic => {
                let body =
                    crate::translate::error::anthropic_body_from_openai(self.status, &self.body());
                let mut r = (self.status, axum::Json(body)).into_response();
                if let Some(ra) = self
                    .retry_after
                    .as_deref()
                    .and_then(|v| HeaderValue::from_str(v).ok())
                {
                    r.headers_mut().insert("retry-after", ra);
                }
                for (name, value) in &self.extra_headers {
                    if let (Ok(n), Ok(v)) = (
                        axum::http::HeaderName::try_from(name.as_str()),
                        HeaderValue::from_str(value),
                    ) {
                        r.headers_mut().insert(n, v);
                    }
                }
                r
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(ra) = self
            .retry_after
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            response.headers_mut().insert("retry-after", ra);
        }
        for (name, value) in &self.extra_headers {
            if let (Ok(n), Ok(v)) = (
                axum::http::HeaderName::try_from(name.as_str()),
                HeaderValue::from_str(value),
            ) {
                response.headers_mut().insert(n, v);
            }
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                "www-authenticate",
                HeaderValue::from_static("Bearer realm=\"warden\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_openai_shape() {
        let b = ApiError::model_not_allowed("gpt-4o").body();
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
}
