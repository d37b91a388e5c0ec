//! Choosing an upstream key: round-robin over a provider's pool with the cursor in Redis,
//! skipping keys that any node found rejected (a 401/403 saying the key is invalid, until
//! re-enabled or re-keyed) or resting (429, for the provider's `Retry-After`; an ambiguous
//! 401/403, briefly). One script call
//! (`pick_key_v1.lua`) per pick. Health is also remembered per node, which is all there is
//! while Redis is unreachable.
//!
//! A key's health lives under `key:<provider>:<key id>:<fingerprint>:<epoch>`: a new secret
//! (new fingerprint) or an admin re-enable (new epoch) starts with a clean record.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use redis::Script;

use super::rejection::RejectionBudget;
use crate::compiled::{Provider, UpstreamKey};
use crate::redis_state::redis::RedisLink;

static PICK: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("pick_key_v1.lua")));

#[derive(Debug, Clone)]
enum Health {
    Disabled,
    CoolingUntil(Instant),
}

/// Why no key could be picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoKey {
    /// Keys are cooling down; the shortest wait.
    CoolingDown(Duration),
    /// Every key is disabled, quarantined or already tried.
    Exhausted,
}

/// Counts of a provider's keys out of service ([`KeyPicker::health`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyHealth {
    pub disabled: usize,
    pub cooling_down: usize,
}

/// Picks keys and records their health.
#[derive(Debug)]
pub struct KeyPicker {
    link: Option<Arc<RedisLink>>,
    local: Mutex<HashMap<String, Health>>,
    /// Key health changes each principal caused this minute.
    budget: RejectionBudget,
}

/// Name of a key's local health record (the shared one adds the prefix's hash tag).
fn health_key(provider: &Provider, key: &UpstreamKey) -> String {
    format!(
        "{}:{}:{}:{}",
        provider.name, key.id, key.fingerprint, key.health_epoch
    )
}

fn shared_health_key(link: &RedisLink, provider: &Provider, key: &UpstreamKey) -> String {
    warden_core::shared_keys::key_health(
        link.prefix(),
        &provider.name,
        &key.id,
        &key.fingerprint,
        key.health_epoch,
    )
}

impl KeyPicker {
    pub fn new(link: Option<Arc<RedisLink>>) -> Self {
        Self {
            budget: RejectionBudget::new(link.clone()),
            link,
            local: Mutex::new(HashMap::new()),
        }
    }

    /// Charges `principal` for one change of a key's health; false once its budget for this
    /// minute is spent ([`super::rejection::MAX_REJECTIONS_PER_MINUTE`]).
    pub async fn take_rejection(&self, principal: &str) -> bool {
        self.budget.take(principal).await
    }

    fn local_health(&self, name: &str) -> Option<Health> {
        let mut map = self
            .local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get(name) {
            Some(Health::CoolingUntil(t)) if *t <= Instant::now() => {
                map.remove(name);
                None
            }
            other => other.cloned(),
        }
    }

    /// Picks the next usable key of `provider`, skipping those in `tried`.
    pub async fn pick(&self, provider: &Provider, tried: &[bool]) -> Result<usize, NoKey> {
        let n = provider.keys.len();
        // Locally known bad keys count as tried: no need to ask Redis about them.
        let mut skip: Vec<bool> = (0..n)
            .map(|i| {
                tried.get(i).copied().unwrap_or(false)
                    || provider.keys[i].disabled
                    || self
                        .local_health(&health_key(provider, &provider.keys[i]))
                        .is_some()
            })
            .collect();
        if skip.iter().all(|s| *s) {
            return Err(self.local_wait(provider, tried));
        }
        if let Some(link) = &self.link
            && link.is_healthy()
        {
            let mut invocation = PICK.prepare_invoke();
            invocation.key(warden_core::shared_keys::cursor(
                link.prefix(),
                &provider.name,
            ));
            for k in &provider.keys {
                invocation.key(shared_health_key(link, provider, k));
            }
            invocation.arg(n);
            for s in &skip {
                invocation.arg(if *s { "1" } else { "0" });
            }
            match link
                .with(|mut c| async move { invocation.invoke_async::<Vec<i64>>(c.conn()).await })
                .await
            {
                Ok(reply) => {
                    let index = reply.first().copied().unwrap_or(0);
                    if index >= 1 {
                        return Ok(usize::try_from(index - 1).unwrap_or(0));
                    }
                    let wait = reply.get(1).copied().unwrap_or(-1);
                    return Err(if wait > 0 {
                        NoKey::CoolingDown(Duration::from_millis(u64::try_from(wait).unwrap_or(0)))
                    } else {
                        NoKey::Exhausted
                    });
                }
                Err(e) => {
                    tracing::debug!(error = %e, "shared key rotation unavailable; rotating per node")
                }
            }
        }
        // Per-node rotation.
        let start = provider.cursor.fetch_add(1, Ordering::Relaxed);
        for step in 0..n {
            let i = (start + step) % n;
            if !skip[i] {
                skip[i] = true;
                return Ok(i);
            }
        }
        Err(self.local_wait(provider, tried))
    }

    /// How many of `provider`'s keys this node knows to be out of service: disabled (by an
    /// admin, or rejected by the provider) or cooling down. Keys only other nodes marked
    /// are not known here until a pick meets them.
    pub fn health(&self, provider: &Provider) -> KeyHealth {
        let map = self
            .local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let mut health = KeyHealth::default();
        for k in &provider.keys {
            match map.get(&health_key(provider, k)) {
                _ if k.disabled => health.disabled += 1,
                Some(Health::Disabled) => health.disabled += 1,
                Some(Health::CoolingUntil(t)) if *t > now => health.cooling_down += 1,
                _ => {}
            }
        }
        health
    }

    fn local_wait(&self, provider: &Provider, tried: &[bool]) -> NoKey {
        let map = self
            .local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        provider
            .keys
            .iter()
            .enumerate()
            .filter(|(i, k)| !tried.get(*i).copied().unwrap_or(false) && !k.disabled)
            .filter_map(|(_, k)| match map.get(&health_key(provider, k)) {
                Some(Health::CoolingUntil(t)) if *t > now => Some(*t - now),
                _ => None,
            })
            .min()
            .map_or(NoKey::Exhausted, NoKey::CoolingDown)
    }

    /// Takes a key out of service on every node (the provider rejected it).
    pub async fn disable(&self, provider: &Provider, key: &UpstreamKey) {
        let name = health_key(provider, key);
        self.local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.clone(), Health::Disabled);
        metrics::counter!(crate::metrics::KEY_EVENTS, "reason" => "rejected").increment(1);
        if let Some(link) = &self.link {
            let key = shared_health_key(link, provider, key);
            let _ = link
                .with(|mut c| async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg("disabled")
                        .query_async::<()>(c.conn())
                        .await
                })
                .await;
        }
    }

    /// Rests a key on every node for `wait` (the provider rate limited it).
    pub async fn cool_down(&self, provider: &Provider, key: &UpstreamKey, wait: Duration) {
        let name = health_key(provider, key);
        self.local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.clone(), Health::CoolingUntil(Instant::now() + wait));
        metrics::counter!(crate::metrics::KEY_EVENTS, "reason" => "cooldown").increment(1);
        if let Some(link) = &self.link {
            let key = shared_health_key(link, provider, key);
            let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
            let _ = link
                .with(|mut c| async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg("cooldown")
                        .arg("PX")
                        .arg(ms)
                        .query_async::<()>(c.conn())
                        .await
                })
                .await;
        }
    }
}
