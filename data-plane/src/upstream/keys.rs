//! Choosing an upstream key: round-robin over a provider's pool on the node, skipping keys
//! that any node found rejected (a 401/403 saying the key is invalid, until re-enabled or
//! re-keyed) or resting (429, for the provider's `Retry-After`; an ambiguous 401/403,
//! briefly). A pick makes no Redis call: key health is kept on every node
//! ([`KeyHealth`]) and kept in step through Redis by [`super::key_health`] — the node that
//! meets a rejection records it there and publishes it, every node applies it on receipt,
//! and a node reloads the whole record whenever it (re)subscribes and every
//! [`super::key_health::REFRESH`]. While Redis is unreachable a node knows what it heard
//! before and what it finds itself.
//!
//! A key's health is named `<provider>:<key id>:<fingerprint>:<epoch>`: a new secret (new
//! fingerprint) or an admin re-enable (new epoch) starts with a clean record.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::key_health::{self, Health, KeyHealth};
use super::rejection::RejectionBudget;
use crate::compiled::{Provider, UpstreamKey};
use crate::redis_state::redis::RedisLink;

/// Why no key could be picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoKey {
    /// Keys are cooling down; the shortest wait.
    CoolingDown(Duration),
    /// Every key is disabled, quarantined or already tried.
    Exhausted,
}

/// Counts of a provider's keys out of service ([`KeyPicker::out_of_service`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyHealthCounts {
    pub disabled: usize,
    pub cooling_down: usize,
}

/// Picks keys and records their health.
#[derive(Debug)]
pub struct KeyPicker {
    link: Option<Arc<RedisLink>>,
    health: Arc<KeyHealth>,
    /// Key health changes each principal caused this minute.
    budget: RejectionBudget,
}

/// Name of a key's health record (the index member and the node-local name).
pub fn health_key(provider: &Provider, key: &UpstreamKey) -> String {
    format!(
        "{}:{}:{}:{}",
        provider.name, key.id, key.fingerprint, key.health_epoch
    )
}

impl KeyPicker {
    /// A picker; with a link, it follows the shared key health from now on (a task that
    /// ends with the link's shutdown).
    pub fn new(link: Option<Arc<RedisLink>>) -> Self {
        let health = Arc::new(KeyHealth::default());
        if let Some(link) = &link
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(key_health::follow(Arc::clone(&health), Arc::clone(link)));
        }
        Self {
            budget: RejectionBudget::new(link.clone()),
            link,
            health,
        }
    }

    /// The node's copy of key health.
    pub fn health(&self) -> &Arc<KeyHealth> {
        &self.health
    }

    /// How many of `provider`'s keys are out of service as this node knows it: disabled (by
    /// an admin, or rejected by the provider) or cooling down, whichever node marked them
    /// (the shared key health reaches every node by pub/sub).
    pub fn out_of_service(&self, provider: &Provider) -> KeyHealthCounts {
        let mut counts = KeyHealthCounts::default();
        for k in &provider.keys {
            match self.health.get(&health_key(provider, k)) {
                _ if k.disabled => counts.disabled += 1,
                Some(Health::Disabled) => counts.disabled += 1,
                Some(Health::CoolingUntil(_)) => counts.cooling_down += 1,
                None => {}
            }
        }
        counts
    }

    /// Charges `principal` for one change of a key's health; false once its budget for this
    /// minute is spent ([`super::rejection::MAX_REJECTIONS_PER_MINUTE`]).
    pub async fn take_rejection(&self, principal: &str) -> bool {
        self.budget.take(principal).await
    }

    /// Picks the next usable key of `provider`, skipping those in `tried`: round-robin on
    /// this node, without a Redis call.
    pub fn pick(&self, provider: &Provider, tried: &[bool]) -> Result<usize, NoKey> {
        let n = provider.keys.len();
        let usable = |i: usize| {
            !tried.get(i).copied().unwrap_or(false)
                && !provider.keys[i].disabled
                && self
                    .health
                    .get(&health_key(provider, &provider.keys[i]))
                    .is_none()
        };
        if n > 0 {
            let start = provider.cursor.fetch_add(1, Ordering::Relaxed);
            for step in 0..n {
                let i = (start + step) % n;
                if usable(i) {
                    return Ok(i);
                }
            }
        }
        let names: Vec<String> = provider
            .keys
            .iter()
            .enumerate()
            .filter(|(i, k)| !tried.get(*i).copied().unwrap_or(false) && !k.disabled)
            .map(|(_, k)| health_key(provider, k))
            .collect();
        Err(self
            .health
            .shortest_wait(names.iter().map(String::as_str))
            .map_or(NoKey::Exhausted, NoKey::CoolingDown))
    }

    /// Takes a key out of service on every node (the provider rejected it).
    pub async fn disable(&self, provider: &Provider, key: &UpstreamKey) {
        let name = health_key(provider, key);
        self.health.set(&name, Health::Disabled);
        metrics::counter!(crate::metrics::KEY_EVENTS, "reason" => "rejected").increment(1);
        if let Some(link) = &self.link {
            let record = warden_core::shared_keys::key_health(
                link.prefix(),
                &provider.name,
                &key.id,
                &key.fingerprint,
                key.health_epoch,
            );
            key_health::record(link, &record, &name, None).await;
        }
    }

    /// Rests a key on every node for `wait` (the provider rate limited it).
    pub async fn cool_down(&self, provider: &Provider, key: &UpstreamKey, wait: Duration) {
        let name = health_key(provider, key);
        self.health
            .set(&name, Health::CoolingUntil(Instant::now() + wait));
        metrics::counter!(crate::metrics::KEY_EVENTS, "reason" => "cooldown").increment(1);
        if let Some(link) = &self.link {
            let record = warden_core::shared_keys::key_health(
                link.prefix(),
                &provider.name,
                &key.id,
                &key.fingerprint,
                key.health_epoch,
            );
            key_health::record(link, &record, &name, Some(wait)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_wins_and_longer_cool_downs_are_kept() {
        let h = KeyHealth::default();
        let soon = Instant::now() + Duration::from_secs(1);
        let later = Instant::now() + Duration::from_secs(60);
        h.set("a", Health::CoolingUntil(later));
        h.set("a", Health::CoolingUntil(soon));
        assert_eq!(h.get("a"), Some(Health::CoolingUntil(later)));
        h.set("a", Health::Disabled);
        h.set("a", Health::CoolingUntil(soon));
        assert_eq!(h.get("a"), Some(Health::Disabled));
        h.set("b", Health::CoolingUntil(Instant::now()));
        assert_eq!(h.get("b"), None, "an expired cool-down is forgotten");
    }
}
