//! Rate limits, parallel-request slots and spend budgets, enforced across every node.
//!
//! Each request carries the [`Scope`]s that apply to it (its credential or JWT subject, its
//! model, and the global policy). [`Limiter::admit`] makes one atomic decision for all of
//! them — one Redis script call (`warden_ratelimit_v2`) when Redis is healthy — and returns
//! an [`Admission`] that reserves an estimate of the tokens and holds the parallel slots.
//! As a response flows, [`Admission::charge`] meters more tokens (at once: a crossed
//! ceiling cuts the stream); when it ends, [`Admission::finish`] settles the reservation
//! against the provider's reported usage, records the spend and releases the slots — the
//! slots at once, the tokens and spend in a per-node batch ([`batch`]) unless a call is
//! made anyway. Dropping an admission without finishing it (an error path, a client that
//! went away) settles it with what was metered so far, so a slot is never leaked.
//!
//! Semantics: `rpm` and `tpm` are token buckets holding one minute's worth (a fresh
//! credential may use its whole minute at once) and refilling continuously. While Redis is
//! unreachable the node enforces each limit divided by the configured node count
//! ([`local`]), or refuses requests when configured fail-closed.

pub mod batch;
pub mod local;
pub mod redis;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::redis_state::redis::RedisLink;

/// Limits of one scope; zero means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    pub rpm: u64,
    pub tpm: u64,
    pub max_parallel: u32,
    pub max_budget_micros: u64,
    pub budget_period_secs: u64,
    /// Ceiling on the completion tokens one request may ask for (applied to the request by
    /// the proxy, not by the limiter).
    pub max_tokens: u64,
}

impl Policy {
    /// Whether the limiter has nothing to enforce for this policy.
    pub fn is_unlimited(&self) -> bool {
        self.rpm == 0 && self.tpm == 0 && self.max_parallel == 0 && self.max_budget_micros == 0
    }
}

/// One set of limits that applies to a request, named for its shared keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// `vkey:<id>`, `sub:<subject>`, `model:<alias>` or `global`.
    pub id: String,
    pub policy: Policy,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    Requests,
    Tokens,
    Parallel,
    Budget,
}

impl LimitKind {
    pub fn label(self) -> &'static str {
        match self {
            Self::Requests => "rpm",
            Self::Tokens => "tpm",
            Self::Parallel => "parallel",
            Self::Budget => "budget",
        }
    }
}

/// A refusal.
#[derive(Debug, Clone)]
pub enum Denied {
    Limit {
        kind: LimitKind,
        scope: String,
        limit: u64,
        retry_after: Duration,
    },
    /// Shared state is unreachable and the node is configured fail-closed.
    Unavailable,
}

/// What a response may tell the client about its limits (OpenAI's `x-ratelimit-*`).
#[derive(Debug, Clone, Copy, Default)]
pub struct RateHeaders {
    pub requests: Option<HeaderLimit>,
    pub tokens: Option<HeaderLimit>,
}

#[derive(Debug, Clone, Copy)]
pub struct HeaderLimit {
    pub limit: u64,
    pub remaining: u64,
    pub reset: Duration,
}

/// What to do while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailureMode {
    /// Keep serving with per-node limits (the shared limit divided by the node count).
    #[default]
    Open,
    /// Refuse requests that have limits (503) until Redis is back.
    Closed,
}

/// Settings of the limiter.
#[derive(Debug, Clone, Copy)]
pub struct LimiterSettings {
    pub failure_mode: FailureMode,
    /// How many nodes share the limits; per-node fallback limits are divided by it.
    pub node_count: u32,
    /// Lease of a parallel-request slot in Redis (a crashed node's slots expire after it).
    pub slot_lease: Duration,
    /// Longest time an ended request's tokens and spend wait on the node before they are
    /// written to Redis ([`batch`]).
    pub settle_interval: Duration,
    /// Ended requests whose settlements are written together at most.
    pub settle_batch: usize,
}

impl Default for LimiterSettings {
    fn default() -> Self {
        Self {
            failure_mode: FailureMode::Open,
            node_count: 1,
            slot_lease: Duration::from_secs(15 * 60),
            settle_interval: Duration::from_millis(50),
            settle_batch: 64,
        }
    }
}

/// Shared (Redis) or per-node enforcement, chosen per decision by Redis health.
#[derive(Debug)]
pub struct Limiter {
    link: Option<Arc<RedisLink>>,
    /// Settlements waiting to be written (with a link).
    batch: Option<Arc<batch::Batcher>>,
    local: local::LocalLimiter,
    settings: LimiterSettings,
}

/// Where an admission's state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Shared,
    Local,
}

impl Limiter {
    pub fn new(link: Option<Arc<RedisLink>>, settings: LimiterSettings) -> Arc<Self> {
        let divisor = if link.is_some() {
            settings.node_count.max(1)
        } else {
            1
        };
        let batch = link.as_ref().map(|l| {
            batch::Batcher::start(
                Arc::clone(l),
                settings.settle_interval,
                settings.settle_batch,
            )
        });
        Arc::new(Self {
            link,
            batch,
            local: local::LocalLimiter::new(divisor),
            settings,
        })
    }

    /// Writes the settlements waiting on this node (at shutdown, once requests ended).
    pub async fn flush(&self) {
        if let Some(batch) = &self.batch {
            batch.flush().await;
        }
    }

    /// Whether decisions currently use shared state.
    pub fn shared(&self) -> bool {
        self.link.as_ref().is_some_and(|l| l.is_healthy())
    }

    /// Decides whether a request may start, reserving `tokens` (an estimate) on every
    /// tokens-per-minute limit.
    pub async fn admit(
        self: &Arc<Self>,
        scopes: Vec<Scope>,
        tokens: u64,
    ) -> Result<Admission, Denied> {
        let scopes: Vec<Scope> = scopes
            .into_iter()
            .filter(|s| !s.policy.is_unlimited())
            .collect();
        let request_id = uuid::Uuid::new_v4().simple().to_string();
        let started = Instant::now();
        let mut mode = Mode::Local;
        let mut headers = RateHeaders::default();
        if !scopes.is_empty() {
            let shared = match &self.link {
                Some(link) => {
                    let along = self.batch.as_ref().map(|b| b.take()).unwrap_or_default();
                    let lease = self.settings.slot_lease;
                    match redis::admit(link, &scopes, &request_id, tokens, lease, along).await {
                        Ok(result) => Some(result),
                        Err(e) => {
                            tracing::debug!(error = %e, "shared limiter unavailable");
                            None
                        }
                    }
                }
                None => None,
            };
            match shared {
                Some(result) => {
                    mode = Mode::Shared;
                    headers = result?;
                }
                None => {
                    if self.link.is_some() && self.settings.failure_mode == FailureMode::Closed {
                        return Err(Denied::Unavailable);
                    }
                    headers = self.local.admit(&scopes, &request_id, tokens)?;
                }
            }
        }
        metrics::histogram!(crate::metrics::LIMITER_SECONDS)
            .record(started.elapsed().as_secs_f64());
        Ok(Admission {
            limiter: Arc::clone(self),
            scopes,
            request_id,
            mode,
            reserved: tokens,
            charged: tokens,
            headers,
            done: false,
        })
    }
}

/// An admitted request: holds its parallel slots and token reservation until finished.
#[derive(Debug)]
pub struct Admission {
    limiter: Arc<Limiter>,
    scopes: Vec<Scope>,
    request_id: String,
    mode: Mode,
    reserved: u64,
    /// Tokens taken from the tpm buckets so far (reservation plus mid-stream charges).
    charged: u64,
    pub headers: RateHeaders,
    done: bool,
}

/// Result of metering more usage against the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metered {
    Within,
    /// A tokens-per-minute or budget ceiling was crossed.
    Exceeded(LimitKind),
}

impl Admission {
    /// Tokens reserved at admission.
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// Tokens charged so far.
    pub fn charged(&self) -> u64 {
        self.charged
    }

    /// Takes `extra` more tokens (and `cost_micros` of spend) while a response is still
    /// flowing; tells whether a ceiling has been crossed.
    pub async fn charge(&mut self, extra: u64, cost_micros: u64) -> Metered {
        self.charged = self.charged.saturating_add(extra);
        let delta = i64::try_from(extra).unwrap_or(i64::MAX);
        self.settle(delta, cost_micros, false).await
    }

    /// Settles the request: `total_tokens` actually used (from the provider's usage when it
    /// reported one) and its cost; refunds or charges the difference to the reservation and
    /// releases the parallel slots. With shared state, the slots are released in Redis
    /// before this returns (so the client's next request, on any node, finds them free);
    /// the tokens and spend ride along with that call, or wait in the node's batch
    /// ([`batch`]) when the request holds no slots.
    pub async fn finish(mut self, total_tokens: u64, cost_micros: u64) {
        let delta = i64::try_from(total_tokens)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(self.charged).unwrap_or(i64::MAX));
        self.charged = total_tokens;
        self.done = true;
        let _ = self.settle(delta, cost_micros, true).await;
    }

    async fn settle(&self, token_delta: i64, cost_micros: u64, release: bool) -> Metered {
        if self.scopes.is_empty() {
            return Metered::Within;
        }
        let limiter = &self.limiter;
        if self.mode == Mode::Shared
            && let Some(link) = &limiter.link
        {
            let own = redis::Settlement::of(link, &self.scopes, token_delta, cost_micros);
            let holds_slots = self.scopes.iter().any(|s| s.policy.max_parallel > 0);
            // An ended request without slots only adds to the batch. Slots are released at
            // once: a slot held until the next flush would refuse a client's next request
            // (on any node) for up to the interval. Mid-stream charges are made at once too,
            // so a crossed ceiling cuts the stream. Either call takes the batch along.
            if release && !holds_slots {
                if let Some(batch) = &limiter.batch {
                    batch.push(own);
                }
                return Metered::Within;
            }
            let along = limiter.batch.as_ref().map(|b| b.take()).unwrap_or_default();
            let release = release.then_some((self.scopes.as_slice(), self.request_id.as_str()));
            match redis::settle(link, own, along, release).await {
                Ok(m) => return m,
                Err(e) => {
                    // Shared state went away mid-request: the slot lease expires in Redis;
                    // meter locally from here on.
                    tracing::debug!(error = %e, "could not settle in redis");
                }
            }
            return Metered::Within;
        }
        limiter.local.settle(
            &self.scopes,
            &self.request_id,
            token_delta,
            cost_micros,
            release,
        )
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if self.done || self.scopes.is_empty() {
            return;
        }
        // Not finished (error path, cancelled request): settle with what was metered so far
        // and release the slots. Drop cannot await, so this runs as a task; in local mode it
        // is immediate.
        let limiter = Arc::clone(&self.limiter);
        let scopes = std::mem::take(&mut self.scopes);
        let request_id = std::mem::take(&mut self.request_id);
        let mode = self.mode;
        match mode {
            Mode::Local => {
                let _ = limiter.local.settle(&scopes, &request_id, 0, 0, true);
            }
            Mode::Shared => {
                if let Ok(handle) = tokio::runtime::Handle::try_current() {
                    handle.spawn(async move {
                        if let Some(link) = &limiter.link {
                            let along =
                                limiter.batch.as_ref().map(|b| b.take()).unwrap_or_default();
                            let own = redis::Settlement::default();
                            let release = Some((scopes.as_slice(), request_id.as_str()));
                            let _ = redis::settle(link, own, along, release).await;
                        }
                    });
                }
            }
        }
    }
}

/// Cost in micro-USD of `input` and `output` tokens at per-million prices.
pub fn cost_micros(input: u64, output: u64, input_per_mtok: f64, output_per_mtok: f64) -> u64 {
    let usd = (input as f64) * input_per_mtok / 1e6 + (output as f64) * output_per_mtok / 1e6;
    (usd * 1e6).round().max(0.0) as u64
}

/// OpenAI-style duration for `x-ratelimit-reset-*` (`1s`, `6m0s`, `250ms`).
pub fn format_reset(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        return format!("{}s", (secs * 10.0).round() / 10.0);
    }
    let total = d.as_secs();
    format!("{}m{}s", total / 60, total % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_and_reset_formatting() {
        assert_eq!(cost_micros(1_000_000, 0, 2.5, 10.0), 2_500_000);
        assert_eq!(cost_micros(1000, 1000, 2.5, 10.0), 12_500);
        assert_eq!(format_reset(Duration::from_millis(250)), "250ms");
        assert_eq!(format_reset(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_reset(Duration::from_secs(360)), "6m0s");
    }

    #[tokio::test]
    async fn local_limits_admit_and_refuse() {
        let limiter = Limiter::new(None, LimiterSettings::default());
        let scope = Scope {
            id: "vkey:a".into(),
            policy: Policy {
                rpm: 2,
                ..Policy::default()
            },
        };
        let a = limiter.admit(vec![scope.clone()], 0).await.unwrap();
        let b = limiter.admit(vec![scope.clone()], 0).await.unwrap();
        let denied = limiter.admit(vec![scope.clone()], 0).await.unwrap_err();
        assert!(matches!(
            denied,
            Denied::Limit {
                kind: LimitKind::Requests,
                ..
            }
        ));
        drop((a, b));
    }

    #[tokio::test]
    async fn local_parallel_slots_are_released_on_drop() {
        let limiter = Limiter::new(None, LimiterSettings::default());
        let scope = Scope {
            id: "vkey:p".into(),
            policy: Policy {
                max_parallel: 1,
                ..Policy::default()
            },
        };
        let a = limiter.admit(vec![scope.clone()], 0).await.unwrap();
        assert!(matches!(
            limiter.admit(vec![scope.clone()], 0).await,
            Err(Denied::Limit {
                kind: LimitKind::Parallel,
                ..
            })
        ));
        drop(a);
        let b = limiter.admit(vec![scope.clone()], 0).await.unwrap();
        b.finish(0, 0).await;
        assert!(limiter.admit(vec![scope], 0).await.is_ok());
    }
}
