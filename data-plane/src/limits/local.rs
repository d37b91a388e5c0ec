//! Per-node enforcement with `governor`, used when no Redis is configured (one machine) or
//! while Redis is unreachable. Every shared limit is divided by the configured node count,
//! so N nodes together stay near the shared limit. Weaker than the shared limiter: buckets
//! are checked one by one (a refusal by a later bucket does not refund an earlier one),
//! token refunds are not applied, and no `x-ratelimit-*` headers are produced.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::{Denied, LimitKind, Metered, RateHeaders, Scope};

#[derive(Debug)]
pub struct LocalLimiter {
    divisor: u32,
    buckets: Mutex<HashMap<(String, LimitKind, u64), Arc<DefaultDirectRateLimiter>>>,
    slots: Mutex<HashMap<String, HashSet<String>>>,
    spend: Mutex<HashMap<(String, u64), u64>>,
}

fn share(limit: u64, divisor: u32) -> u32 {
    let per_node = (limit / u64::from(divisor.max(1))).max(1);
    u32::try_from(per_node).unwrap_or(u32::MAX)
}

impl LocalLimiter {
    pub fn new(divisor: u32) -> Self {
        Self {
            divisor,
            buckets: Mutex::new(HashMap::new()),
            slots: Mutex::new(HashMap::new()),
            spend: Mutex::new(HashMap::new()),
        }
    }

    fn bucket(
        &self,
        scope: &str,
        kind: LimitKind,
        per_minute: u64,
    ) -> Arc<DefaultDirectRateLimiter> {
        let n = NonZeroU32::new(share(per_minute, self.divisor)).unwrap_or(NonZeroU32::MIN);
        let mut map = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(
            map.entry((scope.to_owned(), kind, per_minute))
                .or_insert_with(|| Arc::new(RateLimiter::direct(Quota::per_minute(n)))),
        )
    }

    fn take(&self, scope: &Scope, kind: LimitKind, per_minute: u64, n: u64) -> Result<(), Denied> {
        let bucket = self.bucket(&scope.id, kind, per_minute);
        let burst = u64::from(share(per_minute, self.divisor));
        let n = NonZeroU32::new(u32::try_from(n.min(burst)).unwrap_or(u32::MAX))
            .unwrap_or(NonZeroU32::MIN);
        match bucket.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Denied::Limit {
                kind,
                scope: scope.id.clone(),
                limit: per_minute,
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            }),
            Err(_) => Err(Denied::Limit {
                kind,
                scope: scope.id.clone(),
                limit: per_minute,
                retry_after: Duration::from_secs(60),
            }),
        }
    }

    fn period(scope: &Scope) -> (u64, Duration) {
        let now = u64::try_from(warden_core::unix_now()).unwrap_or(0);
        super::redis::budget_period(now, scope.policy.budget_period_secs)
    }

    pub fn admit(
        &self,
        scopes: &[Scope],
        request_id: &str,
        tokens: u64,
    ) -> Result<RateHeaders, Denied> {
        for s in scopes {
            if s.policy.max_budget_micros > 0 {
                let (index, left) = Self::period(s);
                let spend = self
                    .spend
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let spent = spend.get(&(s.id.clone(), index)).copied().unwrap_or(0);
                if spent >= s.policy.max_budget_micros / u64::from(self.divisor.max(1)) {
                    return Err(Denied::Limit {
                        kind: LimitKind::Budget,
                        scope: s.id.clone(),
                        limit: s.policy.max_budget_micros,
                        retry_after: left,
                    });
                }
            }
        }
        {
            let slots = self
                .slots
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for s in scopes.iter().filter(|s| s.policy.max_parallel > 0) {
                let max = share(u64::from(s.policy.max_parallel), self.divisor) as usize;
                if slots.get(&s.id).map_or(0, HashSet::len) >= max {
                    return Err(Denied::Limit {
                        kind: LimitKind::Parallel,
                        scope: s.id.clone(),
                        limit: u64::from(s.policy.max_parallel),
                        retry_after: Duration::from_secs(1),
                    });
                }
            }
        }
        for s in scopes {
            if s.policy.rpm > 0 {
                self.take(s, LimitKind::Requests, s.policy.rpm, 1)?;
            }
            if s.policy.tpm > 0 && tokens > 0 {
                self.take(s, LimitKind::Tokens, s.policy.tpm, tokens)?;
            }
        }
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for s in scopes.iter().filter(|s| s.policy.max_parallel > 0) {
            slots
                .entry(s.id.clone())
                .or_default()
                .insert(request_id.to_owned());
        }
        Ok(RateHeaders::default())
    }

    pub fn settle(
        &self,
        scopes: &[Scope],
        request_id: &str,
        token_delta: i64,
        cost_micros: u64,
        release: bool,
    ) -> Metered {
        let mut outcome = Metered::Within;
        if token_delta > 0 {
            for s in scopes.iter().filter(|s| s.policy.tpm > 0) {
                let n = u64::try_from(token_delta).unwrap_or(0);
                if self.take(s, LimitKind::Tokens, s.policy.tpm, n).is_err()
                    && outcome == Metered::Within
                {
                    outcome = Metered::Exceeded(LimitKind::Tokens);
                }
            }
        }
        if cost_micros > 0 {
            let mut spend = self
                .spend
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for s in scopes.iter().filter(|s| s.policy.max_budget_micros > 0) {
                let (index, _) = Self::period(s);
                let spent = spend.entry((s.id.clone(), index)).or_default();
                *spent = spent.saturating_add(cost_micros);
                if *spent > s.policy.max_budget_micros / u64::from(self.divisor.max(1))
                    && outcome == Metered::Within
                {
                    outcome = Metered::Exceeded(LimitKind::Budget);
                }
            }
        }
        if release {
            let mut slots = self
                .slots
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for s in scopes.iter().filter(|s| s.policy.max_parallel > 0) {
                if let Some(set) = slots.get_mut(&s.id) {
                    set.remove(request_id);
                }
            }
        }
        outcome
    }
}
