//! Request JSON handling (`proxy::parse`): what the gateway reads from a body, the
//! output-token cap it writes, the estimates it reserves, and the guard on provider state.

use serde_json::Value;
use warden_data_plane::proxy::Endpoint;
use warden_data_plane::proxy::parse::{
    self, MAX_CHOICES, MAX_MODEL_LEN, cap_output_tokens, guard_provider_state, parse_request,
    prompt_estimate, requested_output,
};

const ENDPOINTS: [Endpoint; 4] = [
    Endpoint::Chat,
    Endpoint::Messages,
    Endpoint::Embeddings,
    Endpoint::Responses,
];

/// The body as sent (bytes) and, when those are not JSON, a JSON body built from them.
pub fn target(data: &[u8]) {
    let built = match super::json::from_input(data) {
        Some(v) if serde_json::from_slice::<Value>(data).is_err() => serde_json::to_vec(&v).ok(),
        _ => None,
    };
    for body in std::iter::once(data).chain(built.as_deref()) {
        for endpoint in ENDPOINTS {
            check(endpoint, body, data.first().copied().unwrap_or(0));
        }
    }
}

fn check(endpoint: Endpoint, body: &[u8], knob: u8) {
    let Ok(mut request) = parse_request(endpoint, body) else {
        return;
    };
    assert!(!request.model.is_empty() && request.model.len() <= MAX_MODEL_LEN);
    assert!((1..=MAX_CHOICES).contains(&request.choices));
    let _ = prompt_estimate(endpoint, &request.body);
    let cap = u64::from(knob) * 37;
    if let Ok(per_choice) = parse::per_choice_cap(cap, request.choices) {
        cap_output_tokens(endpoint, &mut request.body, per_choice);
        let asked = requested_output(endpoint, &request.body, request.choices);
        if endpoint != Endpoint::Embeddings {
            assert!(
                asked <= per_choice.saturating_mul(request.choices),
                "{asked} output tokens asked after capping at {per_choice} × {}",
                request.choices
            );
        }
    }
    let _ = guard_provider_state(endpoint, knob.is_multiple_of(2), &mut request.body);
    if endpoint == Endpoint::Responses
        && !knob.is_multiple_of(2)
        && guard_provider_state(endpoint, false, &mut request.body).is_ok()
    {
        assert_eq!(request.body.get("store"), Some(&Value::Bool(false)));
    }
}
