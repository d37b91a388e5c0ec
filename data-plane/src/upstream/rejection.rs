//! What a provider's 401/403 says about the gateway's key, and how many such rejections one
//! principal may cause.
//!
//! A 401/403 takes a key out of service on every node only when the provider's error says
//! the key itself is invalid or revoked ([`KEY_INVALID`]: OpenAI `invalid_api_key` /
//! `account_deactivated`, Anthropic `authentication_error`). An error that names a
//! request-specific cause ([`REQUEST_SPECIFIC`]: Anthropic `permission_error`, OpenAI
//! `model_not_found` / `unsupported_country_region_territory`) leaves the key alone. Any
//! other 401/403 is ambiguous: the key rests for [`AMBIGUOUS_COOLDOWN`]. No key-only probe
//! is made: the markers are what providers document for a dead key, and a probe would be
//! one more upstream call per rejection.
//!
//! Each change of a key's health caused by a principal's request counts against that
//! principal's [`MAX_REJECTIONS_PER_MINUTE`] (in Redis when configured, so shared by the
//! nodes; per node otherwise); beyond it the provider's error goes back to the caller and
//! the key's health is left as it is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::redis_state::redis::RedisLink;

/// How long a key rests after a 401/403 that does not say why.
pub const AMBIGUOUS_COOLDOWN: Duration = Duration::from_secs(30);

/// Key health changes (cool-downs and disables) one principal may cause per minute.
pub const MAX_REJECTIONS_PER_MINUTE: u64 = 3;

/// `error.code` / `error.type` values that say the key itself is invalid or revoked.
const KEY_INVALID: &[&str] = &[
    "invalid_api_key",
    "account_deactivated",
    "authentication_error",
];

/// `error.code` / `error.type` values that say the request (its model, its origin) is
/// refused, not the key.
const REQUEST_SPECIFIC: &[&str] = &[
    "permission_error",
    "model_not_found",
    "unsupported_country_region_territory",
];

/// What a 401/403 says about the key that drew it; the marker is the provider's
/// `error.code` or `error.type` that decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The key is invalid or revoked: disable it everywhere.
    KeyInvalid(&'static str),
    /// The request is refused for its own reasons: the key is fine.
    RequestSpecific(&'static str),
    /// No marker: rest the key briefly.
    Ambiguous,
}

impl Verdict {
    /// The marker seen, for logs and audit (`none` when ambiguous).
    pub fn marker(self) -> &'static str {
        match self {
            Self::KeyInvalid(m) | Self::RequestSpecific(m) => m,
            Self::Ambiguous => "none",
        }
    }
}

/// Classifies a provider's 401/403 error body (OpenAI `{"error": {"type", "code"}}` or
/// Anthropic `{"type": "error", "error": {"type"}}`).
pub fn classify(body: &serde_json::Value) -> Verdict {
    let fields = ["/error/code", "/error/type"]
        .iter()
        .filter_map(|p| body.pointer(p).and_then(|v| v.as_str()))
        .collect::<Vec<_>>();
    let find = |list: &[&'static str]| {
        list.iter()
            .copied()
            .find(|marker| fields.iter().any(|f| f == marker))
    };
    if let Some(m) = find(KEY_INVALID) {
        Verdict::KeyInvalid(m)
    } else if let Some(m) = find(REQUEST_SPECIFIC) {
        Verdict::RequestSpecific(m)
    } else {
        Verdict::Ambiguous
    }
}

/// Counts, per principal and minute, the key health changes its requests caused.
#[derive(Debug)]
pub struct RejectionBudget {
    link: Option<Arc<RedisLink>>,
    /// Per node: principal → (minute, count).
    local: Mutex<HashMap<String, (u64, u64)>>,
}

fn minute_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

impl RejectionBudget {
    pub fn new(link: Option<Arc<RedisLink>>) -> Self {
        Self {
            link,
            local: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one rejection from `principal`'s budget for this minute; false when it is
    /// spent (the caller must then leave the key's health alone).
    pub async fn take(&self, principal: &str) -> bool {
        let minute = minute_now();
        if let Some(link) = &self.link
            && link.is_healthy()
        {
            let key = format!("{{{}}}:rej:{principal}:{minute}", link.prefix());
            let counted = link
                .with(|mut c| async move {
                    let (n,): (u64,) = redis::pipe()
                        .atomic()
                        .incr(&key, 1)
                        .expire(&key, 120)
                        .ignore()
                        .query_async(c.conn())
                        .await?;
                    Ok(n)
                })
                .await;
            match counted {
                Ok(n) => return n <= MAX_REJECTIONS_PER_MINUTE,
                Err(e) => {
                    tracing::debug!(error = %e, "shared rejection budget unavailable; counting per node")
                }
            }
        }
        let mut map = self
            .local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Only this minute's counts matter; older ones are dropped here, off the hot path.
        map.retain(|_, (m, _)| *m == minute);
        let entry = map.entry(principal.to_owned()).or_insert((minute, 0));
        entry.1 += 1;
        entry.1 <= MAX_REJECTIONS_PER_MINUTE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_key_markers_condemn_a_key() {
        let openai = |code: &str| json!({"error": {"message": "m", "type": "invalid_request_error", "code": code}});
        let anthropic =
            |kind: &str| json!({"type": "error", "error": {"type": kind, "message": "m"}});
        assert_eq!(
            classify(&openai("invalid_api_key")),
            Verdict::KeyInvalid("invalid_api_key")
        );
        assert_eq!(
            classify(&openai("account_deactivated")),
            Verdict::KeyInvalid("account_deactivated")
        );
        assert_eq!(
            classify(&anthropic("authentication_error")),
            Verdict::KeyInvalid("authentication_error")
        );
        assert_eq!(
            classify(&anthropic("permission_error")),
            Verdict::RequestSpecific("permission_error")
        );
        assert_eq!(
            classify(&openai("unsupported_country_region_territory")),
            Verdict::RequestSpecific("unsupported_country_region_territory")
        );
        assert_eq!(classify(&openai("something_else")), Verdict::Ambiguous);
        assert_eq!(
            classify(&json!({"error": {"message": "no"}})),
            Verdict::Ambiguous
        );
        assert_eq!(classify(&json!("not an object")), Verdict::Ambiguous);
        assert_eq!(classify(&serde_json::Value::Null), Verdict::Ambiguous);
    }

    #[tokio::test]
    async fn a_principal_gets_a_few_rejections_a_minute() {
        let budget = RejectionBudget::new(None);
        for _ in 0..MAX_REJECTIONS_PER_MINUTE {
            assert!(budget.take("vkey:a").await);
        }
        assert!(!budget.take("vkey:a").await, "the budget is spent");
        assert!(budget.take("vkey:b").await, "another principal has its own");
    }
}
