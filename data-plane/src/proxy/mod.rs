//! The request path for `POST /v1/chat/completions`: authenticate, authorize the model,
//! route the alias, then answer from the built-in echo provider or forward to the upstream
//! provider ([`upstream`]), streaming the answer back chunk by chunk.

pub mod echo;
pub mod upstream;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use warden_core::jwt::Scope;

use crate::error::ApiError;
use crate::runtime::Format;
use crate::server::AppState;

/// The fields of a chat request the gateway reads; the rest is forwarded untouched.
#[derive(Debug)]
pub struct ChatRequest {
    pub body: Map<String, Value>,
    pub model: String,
    pub stream: bool,
}

/// Parses and checks a chat completion body.
pub fn parse_chat(bytes: &[u8]) -> Result<ChatRequest, ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "We could not parse the JSON body of your request: {}",
            e.to_string().chars().take(200).collect::<String>()
        ))
    })?;
    let Value::Object(body) = value else {
        return Err(ApiError::bad_request(
            "The request body must be a JSON object.",
        ));
    };
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => return Err(ApiError::bad_request("`model` must be a non-empty string.")),
        None => return Err(ApiError::bad_request("you must provide a model parameter")),
    };
    match body.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => {}
        _ => {
            return Err(ApiError::bad_request(
                "`messages` must be a non-empty array of messages.",
            ));
        }
    }
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad_request("`stream` must be a boolean.")),
    };
    Ok(ChatRequest {
        body,
        model,
        stream,
    })
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let started = Instant::now();
    let request_id = uuid::Uuid::now_v7().to_string();
    let outcome = match body {
        Ok(body) => handle_chat(&state, &headers, &body).await,
        Err(rejection) => Err((body_error(&rejection), String::new(), String::new())),
    };
    let (mut response, principal, model, provider) = match outcome {
        Ok(done) => (done.response, done.principal, done.model, done.provider),
        Err((e, principal, model)) => {
            let label = e.metric_label();
            tracing::info!(
                request_id = %request_id,
                principal = %principal,
                model = %model,
                status = e.status.as_u16(),
                error = label,
                origin = ?e.origin,
                latency_ms = started.elapsed().as_millis() as u64,
                "request rejected"
            );
            let mut r = e.into_response();
            set_request_id(&mut r, &request_id);
            return r;
        }
    };
    tracing::info!(
        request_id = %request_id,
        principal = %principal,
        model = %model,
        provider = %provider,
        status = response.status().as_u16(),
        latency_ms = started.elapsed().as_millis() as u64,
        "request forwarded"
    );
    set_request_id(&mut response, &request_id);
    response
}

/// A body that could not be read (too large, broken connection) in the OpenAI shape.
fn body_error(rejection: &axum::extract::rejection::BytesRejection) -> ApiError {
    let status = rejection.status();
    let mut e = if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::bad_request("The request body is larger than this gateway accepts.")
    } else {
        ApiError::bad_request("The request body could not be read.")
    };
    e.status = status;
    e
}

fn set_request_id(response: &mut Response, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        response.headers_mut().insert("x-request-id", v);
    }
}

struct Done {
    response: Response,
    principal: String,
    model: String,
    provider: String,
}

type Rejection = (ApiError, String, String);

async fn handle_chat(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Done, Rejection> {
    let rt = state
        .runtime()
        .ok_or_else(|| (ApiError::not_ready(), String::new(), String::new()))?;
    let principal =
        crate::auth::authenticate(&rt, headers).map_err(|e| (e, "-".to_owned(), String::new()))?;
    let pid = principal.id.clone();
    principal
        .require(Scope::Write)
        .map_err(|e| (e, pid.clone(), String::new()))?;
    let mut request = parse_chat(body).map_err(|e| (e, pid.clone(), String::new()))?;
    let model = request.model.clone();
    if !principal.may_use(&model) {
        return Err((ApiError::model_not_allowed(&model), pid, model));
    }
    let route = rt.routes.get(&model).cloned().ok_or_else(|| {
        (
            ApiError::model_not_found(&model),
            pid.clone(),
            model.clone(),
        )
    })?;
    let provider = route.provider.name.clone();
    let response = match route.provider.format {
        Format::Echo => echo::answer(&request),
        Format::OpenAi | Format::Anthropic => {
            request
                .body
                .insert("model".into(), Value::String(route.upstream_model.clone()));
            state
                .upstream
                .forward_chat(&route.provider, &request)
                .await
                .map_err(|e| (e, pid.clone(), model.clone()))?
        }
    };
    Ok(Done {
        response,
        principal: pid,
        model,
        provider,
    })
}

/// `GET /v1/models`: the models this caller may use.
pub async fn list_models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some(rt) = state.runtime() else {
        return ApiError::not_ready().into_response();
    };
    let principal = match crate::auth::authenticate(&rt, &headers) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = principal.require(Scope::Read) {
        return e.into_response();
    }
    let data: Vec<Value> = rt
        .aliases
        .iter()
        .filter(|a| principal.may_use(a))
        .filter_map(|a| rt.routes.get(a))
        .map(|r| {
            serde_json::json!({
                "id": r.alias,
                "object": "model",
                "created": 0,
                "owned_by": r.provider.name,
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "object": "list", "data": data })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_fields_it_needs() {
        let r = parse_chat(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"x":1}"#,
        )
        .unwrap();
        assert_eq!(r.model, "m");
        assert!(r.stream);
        assert_eq!(r.body["x"], 1);
    }

    #[test]
    fn rejects_bad_bodies_with_clear_messages() {
        for (body, needle) in [
            (&b"not json"[..], "parse the JSON"),
            (b"[1]", "JSON object"),
            (br#"{"messages":[{"role":"user","content":"x"}]}"#, "model"),
            (
                br#"{"model":5,"messages":[{"role":"user","content":"x"}]}"#,
                "model",
            ),
            (br#"{"model":"m"}"#, "messages"),
            (br#"{"model":"m","messages":[]}"#, "messages"),
            (
                br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
                "stream",
            ),
        ] {
            let e = parse_chat(body).unwrap_err();
            assert_eq!(e.status.as_u16(), 400);
            assert!(e.message.contains(needle), "{} lacks {needle}", e.message);
        }
    }
}
