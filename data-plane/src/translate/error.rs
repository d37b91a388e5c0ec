//! Error shapes of the two APIs and the mapping between them.
//!
//! Anthropic: `{"type":"error","error":{"type":"rate_limit_error","message":"…"}}`, the
//! `type` one of [`AnthropicErrorType`]. OpenAI: `{"error":{"message","type","param","code"}}`.
//! The Anthropic endpoints answer every error in the Anthropic shape
//! ([`anthropic_error_type`], [`anthropic_body_from_openai`]); an Anthropic provider's error
//! reaches an OpenAI client in the OpenAI shape ([`openai_error_from_anthropic`],
//! [`openai_body_from_anthropic`]). The SDKs pick their exception class from the HTTP status,
//! so the status is kept, except Anthropic's non-standard 529, which becomes 503 for OpenAI
//! clients ([`openai_status`]). Messages taken from a body are redacted and clipped.

use http::StatusCode;
use serde_json::{Value, json};

/// The `error.type` values of the Anthropic API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnthropicErrorType {
    /// 400, and other 4xx without a better match.
    InvalidRequest,
    /// 401.
    Authentication,
    /// 402.
    Billing,
    /// 403.
    Permission,
    /// 404.
    NotFound,
    /// 413.
    RequestTooLarge,
    /// 429.
    RateLimit,
    /// 500 and other 5xx without a better match.
    Api,
    /// 504.
    Timeout,
    /// 529 (and 503).
    Overloaded,
}

impl AnthropicErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            AnthropicErrorType::InvalidRequest => "invalid_request_error",
            AnthropicErrorType::Authentication => "authentication_error",
            AnthropicErrorType::Billing => "billing_error",
            AnthropicErrorType::Permission => "permission_error",
            AnthropicErrorType::NotFound => "not_found_error",
            AnthropicErrorType::RequestTooLarge => "request_too_large",
            AnthropicErrorType::RateLimit => "rate_limit_error",
            AnthropicErrorType::Api => "api_error",
            AnthropicErrorType::Timeout => "timeout_error",
            AnthropicErrorType::Overloaded => "overloaded_error",
        }
    }

    /// The type for an `error.type` string; `None` for one this module does not know.
    pub fn parse(kind: &str) -> Option<Self> {
        Some(match kind {
            "invalid_request_error" => AnthropicErrorType::InvalidRequest,
            "authentication_error" => AnthropicErrorType::Authentication,
            "billing_error" => AnthropicErrorType::Billing,
            "permission_error" => AnthropicErrorType::Permission,
            "not_found_error" => AnthropicErrorType::NotFound,
            "request_too_large" => AnthropicErrorType::RequestTooLarge,
            "rate_limit_error" => AnthropicErrorType::RateLimit,
            "api_error" => AnthropicErrorType::Api,
            "timeout_error" => AnthropicErrorType::Timeout,
            "overloaded_error" => AnthropicErrorType::Overloaded,
            _ => return None,
        })
    }

    /// The HTTP status Anthropic answers with this type.
    pub fn status(self) -> StatusCode {
        match self {
            AnthropicErrorType::InvalidRequest => StatusCode::BAD_REQUEST,
            AnthropicErrorType::Authentication => StatusCode::UNAUTHORIZED,
            AnthropicErrorType::Billing => StatusCode::PAYMENT_REQUIRED,
            AnthropicErrorType::Permission => StatusCode::FORBIDDEN,
            AnthropicErrorType::NotFound => StatusCode::NOT_FOUND,
            AnthropicErrorType::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AnthropicErrorType::RateLimit => StatusCode::TOO_MANY_REQUESTS,
            AnthropicErrorType::Api => StatusCode::INTERNAL_SERVER_ERROR,
            AnthropicErrorType::Timeout => StatusCode::GATEWAY_TIMEOUT,
            // 529 is a valid status code number; `from_u16` cannot fail for it.
            AnthropicErrorType::Overloaded => {
                StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
            }
        }
    }
}

impl std::fmt::Display for AnthropicErrorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Anthropic error type for an HTTP status, refined by an OpenAI (or Warden) error
/// `code` where the code is more precise than the status: `invalid_api_key` →
/// authentication, `model_not_found` → not found, `model_not_allowed` and
/// `insufficient_scope` → permission, `rate_limit_exceeded` → rate limit,
/// `insufficient_quota` → billing.
pub fn anthropic_error_type(status: StatusCode, openai_code: Option<&str>) -> AnthropicErrorType {
    match openai_code {
        Some("invalid_api_key") => return AnthropicErrorType::Authentication,
        Some("model_not_found") => return AnthropicErrorType::NotFound,
        Some("model_not_allowed" | "insufficient_scope") => {
            return AnthropicErrorType::Permission;
        }
        Some("rate_limit_exceeded") => return AnthropicErrorType::RateLimit,
        Some("insufficient_quota") => return AnthropicErrorType::Billing,
        _ => {}
    }
    match status.as_u16() {
        401 => AnthropicErrorType::Authentication,
        402 => AnthropicErrorType::Billing,
        403 => AnthropicErrorType::Permission,
        404 => AnthropicErrorType::NotFound,
        413 => AnthropicErrorType::RequestTooLarge,
        429 => AnthropicErrorType::RateLimit,
        503 | 529 => AnthropicErrorType::Overloaded,
        504 => AnthropicErrorType::Timeout,
        400..=499 => AnthropicErrorType::InvalidRequest,
        _ => AnthropicErrorType::Api,
    }
}

/// `{"type":"error","error":{"type":KIND,"message":MESSAGE}}`.
pub fn anthropic_error_body(kind: AnthropicErrorType, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind.as_str(), "message": message}})
}

/// An OpenAI-shaped error body (Warden's own `ApiError::body()`, or an OpenAI provider's)
/// re-shaped for an Anthropic client, with the type chosen by [`anthropic_error_type`].
pub fn anthropic_body_from_openai(status: StatusCode, openai_body: &Value) -> Value {
    let kind = anthropic_error_type(status, openai_body["error"]["code"].as_str());
    let message = openai_body["error"]["message"]
        .as_str()
        .map_or_else(|| default_message(status), safe_message);
    anthropic_error_body(kind, &message)
}

/// OpenAI `(type, code)` for an Anthropic `error.type`.
pub fn openai_error_from_anthropic(anthropic_type: &str) -> (&'static str, Option<&'static str>) {
    match AnthropicErrorType::parse(anthropic_type) {
        Some(AnthropicErrorType::InvalidRequest) => ("invalid_request_error", None),
        Some(AnthropicErrorType::Authentication) => {
            ("invalid_request_error", Some("invalid_api_key"))
        }
        Some(AnthropicErrorType::Billing) => ("insufficient_quota", Some("insufficient_quota")),
        Some(AnthropicErrorType::Permission) => ("permission_error", None),
        Some(AnthropicErrorType::NotFound) => ("invalid_request_error", Some("not_found")),
        Some(AnthropicErrorType::RequestTooLarge) => {
            ("invalid_request_error", Some("request_too_large"))
        }
        Some(AnthropicErrorType::RateLimit) => ("rate_limit_error", Some("rate_limit_exceeded")),
        Some(AnthropicErrorType::Timeout) => ("api_error", Some("timeout")),
        Some(AnthropicErrorType::Overloaded) => ("api_error", Some("overloaded")),
        Some(AnthropicErrorType::Api) | None => ("api_error", None),
    }
}

/// An Anthropic-shaped error body re-shaped for an OpenAI client.
pub fn openai_body_from_anthropic(status: StatusCode, anthropic_body: &Value) -> Value {
    let (kind, code) = openai_error_from_anthropic(
        anthropic_body["error"]["type"]
            .as_str()
            .unwrap_or_else(|| anthropic_error_type(status, None).as_str()),
    );
    let message = anthropic_body["error"]["message"]
        .as_str()
        .map_or_else(|| default_message(status), safe_message);
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

/// The status for an OpenAI client: Anthropic's 529 (overloaded) becomes 503; the rest are
/// kept.
pub fn openai_status(anthropic_status: StatusCode) -> StatusCode {
    if anthropic_status.as_u16() == 529 {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        anthropic_status
    }
}

fn safe_message(message: &str) -> String {
    warden_core::redact::redact(message)
        .chars()
        .take(500)
        .collect()
}

fn default_message(status: StatusCode) -> String {
    format!("The request failed with status {}.", status.as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_anthropic_types() {
        for (status, kind) in [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (402, "billing_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (413, "request_too_large"),
            (422, "invalid_request_error"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (502, "api_error"),
            (503, "overloaded_error"),
            (504, "timeout_error"),
            (529, "overloaded_error"),
        ] {
            let status = StatusCode::from_u16(status).unwrap();
            let t = anthropic_error_type(status, None);
            assert_eq!(t.as_str(), kind, "{status}");
            assert_eq!(AnthropicErrorType::parse(kind), Some(t));
        }
        assert_eq!(
            anthropic_error_type(StatusCode::BAD_REQUEST, Some("model_not_found")),
            AnthropicErrorType::NotFound
        );
        assert_eq!(
            anthropic_error_type(StatusCode::FORBIDDEN, Some("model_not_allowed")),
            AnthropicErrorType::Permission
        );
        assert_eq!(AnthropicErrorType::Overloaded.status().as_u16(), 529);
        assert_eq!(
            AnthropicErrorType::RateLimit.status(),
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    #[test]
    fn bodies_convert_both_ways() {
        let openai = json!({"error": {"message": "This credential is not allowed to use the model `x`.",
            "type": "permission_error", "param": null, "code": "model_not_allowed"}});
        let anthropic = anthropic_body_from_openai(StatusCode::FORBIDDEN, &openai);
        assert_eq!(
            anthropic,
            json!({"type": "error", "error": {"type": "permission_error",
                "message": "This credential is not allowed to use the model `x`."}})
        );

        let upstream = json!({"type": "error", "error": {"type": "rate_limit_error",
            "message": "Number of requests has exceeded your rate limit"}});
        let back = openai_body_from_anthropic(StatusCode::TOO_MANY_REQUESTS, &upstream);
        assert_eq!(back["error"]["type"], "rate_limit_error");
        assert_eq!(back["error"]["code"], "rate_limit_exceeded");
        assert_eq!(
            back["error"]["message"],
            "Number of requests has exceeded your rate limit"
        );
        assert!(back["error"]["param"].is_null());

        let bare = openai_body_from_anthropic(StatusCode::from_u16(529).unwrap(), &json!("oops"));
        assert_eq!(bare["error"]["code"], "overloaded");
        assert_eq!(
            bare["error"]["message"],
            "The request failed with status 529."
        );
        assert_eq!(
            openai_status(StatusCode::from_u16(529).unwrap()),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(openai_status(StatusCode::FORBIDDEN), StatusCode::FORBIDDEN);
    }

    #[test]
    fn messages_are_redacted_and_clipped() {
        let long = format!("key sk-proj-{} {}", "A".repeat(40), "x".repeat(1000));
        let body = json!({"type": "error", "error": {"type": "api_error", "message": long}});
        let out = openai_body_from_anthropic(StatusCode::INTERNAL_SERVER_ERROR, &body);
        let message = out["error"]["message"].as_str().unwrap();
        assert!(!message.contains("AAAAAAAAAA"), "{message}");
        assert!(message.chars().count() <= 500);
    }
}
