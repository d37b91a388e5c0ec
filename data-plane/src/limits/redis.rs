//! Shared enforcement in Redis: the admission and settlement scripts
//! (`admit_v2.lua`, `settle_v2.lua`), one round trip each, atomic across every node. Both
//! carry the settlements waiting on the node ([`super::batch`]) along: an admission applies
//! them before it decides.
//!
//! Keys (all under the link's hash tag, e.g. `{warden}:`): `rl:<scope>:rpm` and
//! `rl:<scope>:tpm` (token buckets: hash of tokens and last update), `par:<scope>` (sorted
//! set of in-flight request ids scored by lease expiry), `spend:<scope>:<period>` (micro-USD
//! spent in the current budget period).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::Script;
use warden_core::shared_keys;

use super::{Denied, HeaderLimit, LimitKind, Metered, RateHeaders, Scope};
use crate::redis_state::redis::{LinkError, RedisLink};

static ADMIT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("admit_v2.lua")));
static SETTLE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("settle_v2.lua")));

struct Bucket {
    key: String,
    scope: usize,
    kind: LimitKind,
    capacity: u64,
    cost: u64,
}

fn per_ms(per_minute: u64) -> f64 {
    per_minute as f64 / 60_000.0
}

fn buckets(link: &RedisLink, scopes: &[Scope], tokens: u64) -> Vec<Bucket> {
    let mut out = Vec::new();
    for (i, s) in scopes.iter().enumerate() {
        if s.policy.rpm > 0 {
            out.push(Bucket {
                key: shared_keys::bucket(link.prefix(), &s.id, "rpm"),
                scope: i,
                kind: LimitKind::Requests,
                capacity: s.policy.rpm,
                cost: 1,
            });
        }
        if s.policy.tpm > 0 {
            out.push(Bucket {
                key: shared_keys::bucket(link.prefix(), &s.id, "tpm"),
                scope: i,
                kind: LimitKind::Tokens,
                capacity: s.policy.tpm,
                // A request estimated above a whole minute's worth could never pass; it
                // may start when the bucket is full and is settled from its real usage.
                cost: tokens.min(s.policy.tpm),
            });
        }
    }
    out
}

/// The budget period index and the time left in it.
pub fn budget_period(now_secs: u64, period_secs: u64) -> (u64, Duration) {
    let (index, left) = shared_keys::budget_period(now_secs, period_secs);
    (index, Duration::from_secs(left))
}

fn budget_key(link: &RedisLink, scope: &Scope) -> (String, Duration) {
    let now = u64::try_from(warden_core::unix_now()).unwrap_or(0);
    let (index, left) = budget_period(now, scope.policy.budget_period_secs);
    (shared_keys::spend(link.prefix(), &scope.id, index), left)
}

/// One admission decision, after applying `along` (settlements waiting on the node).
/// `Ok(Err(_))` is a refusal; `Err(_)` means Redis could not be asked.
pub async fn admit(
    link: &Arc<RedisLink>,
    scopes: &[Scope],
    request_id: &str,
    tokens: u64,
    lease: Duration,
    along: Settlement,
) -> Result<Result<RateHeaders, Denied>, LinkError> {
    let buckets = buckets(link, scopes, tokens);
    let slots: Vec<(usize, String)> = scopes
        .iter()
        .enumerate()
        .filter(|(_, s)| s.policy.max_parallel > 0)
        .map(|(i, s)| (i, shared_keys::slots(link.prefix(), &s.id)))
        .collect();
    let budgets: Vec<(usize, String)> = scopes
        .iter()
        .enumerate()
        .filter(|(_, s)| s.policy.max_budget_micros > 0)
        .map(|(i, s)| (i, budget_key(link, s).0))
        .collect();
    let mut invocation = ADMIT.prepare_invoke();
    for b in &buckets {
        invocation.key(&b.key);
    }
    for (_, k) in &slots {
        invocation.key(k);
    }
    for (_, k) in &budgets {
        invocation.key(k);
    }
    for (k, _, _) in &along.buckets {
        invocation.key(k);
    }
    for (k, _, _, _) in &along.budgets {
        invocation.key(k);
    }
    invocation
        .arg(buckets.len())
        .arg(slots.len())
        .arg(budgets.len())
        .arg(request_id)
        .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX))
        .arg(along.buckets.len())
        .arg(along.budgets.len());
    for b in &buckets {
        invocation
            .arg(b.capacity)
            .arg(per_ms(b.capacity))
            .arg(b.cost);
    }
    for (i, _) in &slots {
        invocation.arg(scopes[*i].policy.max_parallel);
    }
    for (i, _) in &budgets {
        invocation.arg(scopes[*i].policy.max_budget_micros);
    }
    for (_, cap, delta) in &along.buckets {
        invocation.arg(*cap).arg(per_ms(*cap)).arg(*delta);
    }
    for (_, add, _, ttl) in &along.budgets {
        invocation.arg(*add).arg(*ttl);
    }
    let reply: Vec<i64> = link
        .with(|mut c| async move { invocation.invoke_async(c.conn()).await })
        .await?;
    if reply.first() == Some(&1) {
        let mut headers = RateHeaders::default();
        for (n, b) in buckets.iter().enumerate() {
            let remaining = u64::try_from(reply.get(2 + 2 * n).copied().unwrap_or(0)).unwrap_or(0);
            let reset_ms = u64::try_from(reply.get(3 + 2 * n).copied().unwrap_or(0)).unwrap_or(0);
            let h = HeaderLimit {
                limit: b.capacity,
                remaining,
                reset: Duration::from_millis(reset_ms),
            };
            let slot = match b.kind {
                LimitKind::Requests => &mut headers.requests,
                _ => &mut headers.tokens,
            };
            if slot.is_none_or(|cur| h.remaining < cur.remaining) {
                *slot = Some(h);
            }
        }
        return Ok(Ok(headers));
    }
    let kind = reply.get(1).copied().unwrap_or(0);
    let index = usize::try_from(reply.get(2).copied().unwrap_or(1) - 1).unwrap_or(0);
    let retry =
        Duration::from_millis(u64::try_from(reply.get(3).copied().unwrap_or(1000)).unwrap_or(1000));
    let (kind, scope, limit) = match kind {
        1 => {
            let b = &buckets[index.min(buckets.len().saturating_sub(1))];
            (b.kind, b.scope, b.capacity)
        }
        2 => {
            let (i, _) = slots[index.min(slots.len().saturating_sub(1))];
            (
                LimitKind::Parallel,
                i,
                u64::from(scopes[i].policy.max_parallel),
            )
        }
        _ => {
            let (i, _) = budgets[index.min(budgets.len().saturating_sub(1))];
            (LimitKind::Budget, i, scopes[i].policy.max_budget_micros)
        }
    };
    Ok(Err(Denied::Limit {
        kind,
        scope: scopes[scope].id.clone(),
        limit,
        retry_after: retry,
    }))
}

/// Token and spend changes to make in Redis in one call: one request's, or a batch of
/// requests' summed per key.
#[derive(Debug, Default)]
pub struct Settlement {
    /// tpm bucket key, capacity, tokens to take (negative refunds).
    buckets: Vec<(String, u64, i64)>,
    /// Spend key, micro-USD to add, the budget, ms left in the period.
    budgets: Vec<(String, u64, u64, u64)>,
    /// How many requests' settlements this holds.
    requests: usize,
}

impl Settlement {
    /// The settlement of one request: `token_delta` on each of its tpm buckets and
    /// `cost_micros` on each of its budgets (keys of the budget period now).
    pub fn of(link: &RedisLink, scopes: &[Scope], token_delta: i64, cost_micros: u64) -> Self {
        let mut s = Self {
            requests: 1,
            ..Self::default()
        };
        if token_delta != 0 {
            for scope in scopes.iter().filter(|s| s.policy.tpm > 0) {
                s.buckets.push((
                    shared_keys::bucket(link.prefix(), &scope.id, "tpm"),
                    scope.policy.tpm,
                    token_delta,
                ));
            }
        }
        if cost_micros > 0 {
            for scope in scopes.iter().filter(|s| s.policy.max_budget_micros > 0) {
                let (key, left) = budget_key(link, scope);
                s.budgets.push((
                    key,
                    cost_micros,
                    scope.policy.max_budget_micros,
                    u64::try_from(left.as_millis())
                        .unwrap_or(u64::MAX)
                        .saturating_add(60_000),
                ));
            }
        }
        s
    }

    /// Whether there is nothing to change.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty() && self.budgets.is_empty()
    }

    /// How many requests' settlements this holds.
    pub fn requests(&self) -> usize {
        self.requests
    }

    /// Adds `other`'s changes, summed per key (the latest limits win).
    pub fn merge(&mut self, other: Self) {
        for (key, cap, delta) in other.buckets {
            match self.buckets.iter_mut().find(|b| b.0 == key) {
                Some(b) => {
                    b.1 = cap;
                    b.2 = b.2.saturating_add(delta);
                }
                None => self.buckets.push((key, cap, delta)),
            }
        }
        for (key, add, max, ttl) in other.budgets {
            match self.budgets.iter_mut().find(|b| b.0 == key) {
                Some(b) => {
                    b.1 = b.1.saturating_add(add);
                    b.2 = max;
                    b.3 = ttl;
                }
                None => self.budgets.push((key, add, max, ttl)),
            }
        }
        self.requests += other.requests;
    }
}

/// Makes `own` (the calling request's changes, whose crossing of a ceiling is reported)
/// and `along` (other requests' changes riding in the same call) in one script call, and
/// releases the parallel slots of `release` (the request's scopes and id) when given.
pub async fn settle(
    link: &Arc<RedisLink>,
    own: Settlement,
    along: Settlement,
    release: Option<(&[Scope], &str)>,
) -> Result<Metered, LinkError> {
    let slots: Vec<String> = release
        .map(|(scopes, _)| {
            scopes
                .iter()
                .filter(|s| s.policy.max_parallel > 0)
                .map(|s| shared_keys::slots(link.prefix(), &s.id))
                .collect()
        })
        .unwrap_or_default();
    let (own_nb, own_nk) = (own.buckets.len(), own.budgets.len());
    let mut all = own;
    all.merge(along);
    if all.is_empty() && slots.is_empty() {
        return Ok(Metered::Within);
    }
    let mut invocation = SETTLE.prepare_invoke();
    for (k, _, _) in &all.buckets {
        invocation.key(k);
    }
    for (k, _, _, _) in &all.budgets {
        invocation.key(k);
    }
    for k in &slots {
        invocation.key(k);
    }
    invocation
        .arg(all.buckets.len())
        .arg(all.budgets.len())
        .arg(slots.len())
        .arg(release.map_or("", |(_, id)| id))
        .arg(own_nb)
        .arg(own_nk);
    for (_, cap, delta) in &all.buckets {
        invocation.arg(*cap).arg(per_ms(*cap)).arg(*delta);
    }
    for (_, add, max, ttl) in &all.budgets {
        invocation.arg(*add).arg(*max).arg(*ttl);
    }
    let reply: Vec<i64> = link
        .with(|mut c| async move { invocation.invoke_async(c.conn()).await })
        .await?;
    Ok(match reply.first() {
        Some(1) => Metered::Exceeded(LimitKind::Tokens),
        Some(3) => Metered::Exceeded(LimitKind::Budget),
        _ => Metered::Within,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_periods_are_aligned() {
        let (i, left) = budget_period(100, 30);
        assert_eq!(i, 3);
        assert_eq!(left, Duration::from_secs(20));
        let (i, left) = budget_period(90, 30);
        assert_eq!(i, 3);
        assert_eq!(left, Duration::from_secs(30));
    }
}
