//! The Redis side of key health ([`super::keys`]):
//!
//! - [`record`]: the node that meets a rejection or a rate limit runs `key_health_v1.lua`,
//!   which writes the key's record, its entry in the index of key health (a sorted set by
//!   expiry) and publishes the change — one round trip, on the failure path only.
//! - [`follow`]: one subscriber connection per node listens on the key-health channel and
//!   applies each message to the node's [`KeyHealth`]; whenever it (re)subscribes it first
//!   loads the whole index (`key_health_load_v1.lua`), so a message missed while
//!   disconnected cannot leave a key wrongly marked healthy, and it reloads every
//!   [`REFRESH`] as a safety net. Durations travel as milliseconds left by the Redis clock,
//!   so nodes with skewed clocks agree.
//!
//! Keys ([`warden_core::shared_keys`]): `key:<provider>:<id>:<fingerprint>:<epoch>` (the
//! record, as earlier versions read it), `keyhealth` (the index), channel
//! `keyhealth-events`.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use redis::Script;
use warden_core::backoff::Backoff;
use warden_core::shared_keys;
use warden_core::shutdown::sleep_or_cancel;

use crate::redis_state::redis::{LinkError, RedisLink};

/// What is known about one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Disabled,
    CoolingUntil(Instant),
}

/// The node's copy of key health, by key name.
#[derive(Debug, Default)]
pub struct KeyHealth {
    map: Mutex<HashMap<String, Health>>,
}

impl KeyHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Health>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The health of `name` if it is not usable now (an expired cool-down is forgotten).
    pub fn get(&self, name: &str) -> Option<Health> {
        let mut map = self.lock();
        match map.get(name) {
            Some(Health::CoolingUntil(t)) if *t <= Instant::now() => {
                map.remove(name);
                None
            }
            other => other.copied(),
        }
    }

    /// Records `health` for `name`; a disabled key stays disabled and a longer cool-down is
    /// kept.
    pub fn set(&self, name: &str, health: Health) {
        let mut map = self.lock();
        let merged = match (map.get(name), health) {
            (Some(Health::Disabled), _) | (_, Health::Disabled) => Health::Disabled,
            (Some(Health::CoolingUntil(a)), Health::CoolingUntil(b)) => {
                Health::CoolingUntil((*a).max(b))
            }
            (None, h) => h,
        };
        // Expired cool-downs are dropped here, off the pick path, so the map stays small
        // (each time it doubles past 1,024 entries: amortised constant work).
        if map.len() >= 1024 && map.len().is_power_of_two() {
            let now = Instant::now();
            map.retain(|_, h| !matches!(h, Health::CoolingUntil(t) if *t <= now));
        }
        map.insert(name.to_owned(), merged);
    }

    /// The shortest cool-down left among `names`, if any is cooling down.
    pub(super) fn shortest_wait<'a>(
        &self,
        names: impl Iterator<Item = &'a str>,
    ) -> Option<Duration> {
        let map = self.lock();
        let now = Instant::now();
        names
            .filter_map(|n| match map.get(n) {
                Some(Health::CoolingUntil(t)) if *t > now => Some(*t - now),
                _ => None,
            })
            .min()
    }
}

static RECORD: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("key_health_v1.lua")));
static LOAD: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("key_health_load_v1.lua")));

/// How often a subscribed node reloads the whole key health anyway.
pub const REFRESH: Duration = Duration::from_secs(30);

/// Records a key's health in Redis and announces it to every node: disabled (`None`) or
/// cooling down for `wait`. A Redis error leaves it to this node (already recorded there).
pub async fn record(link: &Arc<RedisLink>, record: &str, name: &str, wait: Option<Duration>) {
    let mut invocation = RECORD.prepare_invoke();
    invocation
        .key(record)
        .key(shared_keys::key_health_index(link.prefix()))
        .arg(shared_keys::key_health_channel(link.prefix()))
        .arg(name);
    match wait {
        None => invocation.arg("d").arg(0),
        Some(w) => invocation
            .arg("c")
            .arg(u64::try_from(w.as_millis()).unwrap_or(u64::MAX).max(1)),
    };
    if let Err(e) = link
        .with(|mut c| async move { invocation.invoke_async::<i64>(c.conn()).await })
        .await
    {
        tracing::debug!(error = %e, "key health kept on this node: redis unavailable");
    }
}

/// Keeps `health` in step with the key health in Redis until the link shuts down.
pub async fn follow(health: Arc<KeyHealth>, link: Arc<RedisLink>) {
    let shutdown = link.shutdown_token();
    let channel = shared_keys::key_health_channel(link.prefix());
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
    let mut lost = false;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        match subscribe(&health, &link, &channel).await {
            Ok(pubsub) => {
                if lost {
                    tracing::info!("key health: subscribed again, shared key health reloaded");
                }
                backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
                let mut messages = pubsub.into_on_message();
                let mut refresh =
                    tokio::time::interval_at(tokio::time::Instant::now() + REFRESH, REFRESH);
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        m = messages.next() => match m {
                            Some(msg) => apply(&health, msg.get_payload_bytes()),
                            None => break,
                        },
                        _ = refresh.tick() => {
                            if let Err(e) = load(&health, &link).await {
                                tracing::debug!(error = %e, "key health: periodic reload failed");
                            }
                        }
                    }
                }
                lost = true;
                tracing::warn!(
                    "key health: subscription to redis lost; keys are judged by this node alone until it is back"
                );
            }
            Err(e) => tracing::debug!(error = %e, "key health: cannot subscribe yet"),
        }
        if !sleep_or_cancel(backoff.next_delay(), &shutdown).await {
            return;
        }
    }
}

/// Subscribes to `channel`, then loads the key health in force (in this order, so a change
/// published in between is not missed).
async fn subscribe(
    health: &KeyHealth,
    link: &Arc<RedisLink>,
    channel: &str,
) -> Result<redis::aio::PubSub, LinkError> {
    let mut pubsub = link.pubsub().await?;
    pubsub.subscribe(channel).await?;
    load(health, link).await?;
    Ok(pubsub)
}

/// Loads every entry of the index into `health`.
async fn load(health: &KeyHealth, link: &Arc<RedisLink>) -> Result<(), LinkError> {
    let mut invocation = LOAD.prepare_invoke();
    invocation.key(shared_keys::key_health_index(link.prefix()));
    let entries: Vec<(String, i64)> = link
        .with(|mut c| async move { invocation.invoke_async(c.conn()).await })
        .await?;
    let now = Instant::now();
    for (name, ms) in entries {
        health.set(&name, health_of(ms, now));
    }
    Ok(())
}

fn health_of(ms: i64, now: Instant) -> Health {
    match u64::try_from(ms) {
        Ok(ms) => Health::CoolingUntil(now + Duration::from_millis(ms)),
        Err(_) => Health::Disabled,
    }
}

/// Applies one message of the key-health channel; others are ignored.
fn apply(health: &KeyHealth, payload: &[u8]) {
    let Ok(text) = std::str::from_utf8(payload) else {
        return;
    };
    match text.split_once(' ') {
        Some(("d", name)) if !name.is_empty() => health.set(name, Health::Disabled),
        Some(("c", rest)) => match rest.split_once(' ') {
            Some((ms, name)) if !name.is_empty() => match ms.parse::<u64>() {
                Ok(ms) => health.set(
                    name,
                    Health::CoolingUntil(Instant::now() + Duration::from_millis(ms)),
                ),
                Err(_) => tracing::debug!("key health: malformed message ignored"),
            },
            _ => tracing::debug!("key health: malformed message ignored"),
        },
        _ => tracing::debug!("key health: unknown message ignored"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_disable_and_cool_down() {
        let h = KeyHealth::default();
        apply(&h, b"d openai:key_1:fp:0");
        apply(&h, b"c 60000 openai:key_2:fp:3");
        apply(&h, b"c soon openai:key_3:fp:0");
        apply(&h, b"x whatever");
        apply(&h, b"c 5");
        assert_eq!(h.get("openai:key_1:fp:0"), Some(Health::Disabled));
        assert!(matches!(
            h.get("openai:key_2:fp:3"),
            Some(Health::CoolingUntil(t)) if t > Instant::now() + Duration::from_secs(50)
        ));
        assert_eq!(h.get("openai:key_3:fp:0"), None);
        assert_eq!(health_of(-1, Instant::now()), Health::Disabled);
    }
}
