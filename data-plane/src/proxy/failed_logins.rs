//! What failed logins may cost (DESIGN.md invariant 3): counted per client address on this
//! node, so that a flood of bad credentials can neither fill the audit spool nor reach the
//! credential lookups at will.
//!
//! - The first failure from an address is audited at once, as its own `auth.client` event
//!   (with the request id and the client address: [`Recorded::First`]).
//! - Further failures from it within its window ([`DEFAULT_WINDOW`]) are only counted, per
//!   reason; when the window closes, each (address, reason) becomes one event carrying the
//!   count ([`Summary`]). An address still failing then gets a new window at once, counted
//!   the same way; an address whose window closes with nothing counted is forgotten, and
//!   its next failure is a first again.
//! - Past `limit` failures in a window ([`DEFAULT_LIMIT`]), every request from the address
//!   is answered 429 before any credential is looked up, until the window closes. Those
//!   refusals count as failed logins too (`throttled`), under the reason of the last
//!   failure: no credential was read to give them one.
//!
//! The map is bounded ([`MAX_ADDRESSES`]): at the bound the address whose window closes
//! first is forgotten, its counts handed out as [`Summary`] first, so an attacker with many
//! addresses costs memory only up to the bound. IPv6 addresses are counted by their /64
//! (one host usually holds a whole /64). Windows are closed by [`FailedLogins::close_due`]
//! (a tick), by the next failure of the address, and all at once by
//! [`FailedLogins::flush`] at shutdown, so no count is lost. Nothing here does I/O: the
//! caller audits what the methods hand back ([`super::request_audit`]).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use warden_core::audit_detail;

/// Failed logins from one address in one window past which it gets 429.
pub const DEFAULT_LIMIT: u32 = 20;
/// How long failures from an address are counted before their summary is audited.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Most addresses tracked at once.
pub const MAX_ADDRESSES: usize = 100_000;

/// What became of a failed login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// The address's first failure: audit it at once.
    First,
    /// Counted, audited with its window's summary.
    Counted,
}

/// The failed logins of one (address, reason) in a closed window, after the address's first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The address as audited (masked when the node masks client addresses; a /64 for IPv6).
    pub client_ip: String,
    pub reason: &'static str,
    /// Failed logins counted, the refused ones included.
    pub count: u32,
    /// Of them, requests refused with 429 before any lookup.
    pub throttled: u32,
    /// The window's length.
    pub window: Duration,
}

/// The per-address accounting (module docs).
#[derive(Debug)]
pub struct FailedLogins {
    limit: u32,
    window: Duration,
    max_addresses: usize,
    mask_client_ip: bool,
    /// Addresses tracked: read without the lock, so that a request from a node without
    /// failures never takes it.
    tracked: AtomicUsize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<IpAddr, Entry>,
    /// `(address, generation, window end)` in order of window end; an item whose generation
    /// is no longer its entry's is stale and skipped.
    order: VecDeque<(IpAddr, u64, Instant)>,
    next_generation: u64,
}

#[derive(Debug)]
struct Entry {
    generation: u64,
    window_end: Instant,
    client_ip: String,
    /// Failures looked up in this window (the first of the address included).
    failures: u32,
    /// What this window counted, per reason: `(reason, count, throttled)`.
    counted: Vec<(&'static str, u32, u32)>,
    last_reason: &'static str,
}

impl Entry {
    fn count(&mut self, reason: &'static str, throttled: bool) {
        let t = u32::from(throttled);
        match self.counted.iter_mut().find(|(r, _, _)| *r == reason) {
            Some((_, count, refused)) => {
                *count = count.saturating_add(1);
                *refused = refused.saturating_add(t);
            }
            None => self.counted.push((reason, 1, t)),
        }
    }

    fn summaries(&mut self, window: Duration) -> impl Iterator<Item = Summary> + '_ {
        let client_ip = &self.client_ip;
        self.counted
            .drain(..)
            .map(move |(reason, count, throttled)| Summary {
                client_ip: client_ip.clone(),
                reason,
                count,
                throttled,
                window,
            })
    }
}

impl Default for FailedLogins {
    fn default() -> Self {
        Self::new(DEFAULT_LIMIT, DEFAULT_WINDOW, false)
    }
}

impl FailedLogins {
    /// At most `limit` failed logins per address per `window` (at least one of each).
    pub fn new(limit: u32, window: Duration, mask_client_ip: bool) -> Self {
        Self {
            limit: limit.max(1),
            window: window.max(Duration::from_millis(1)),
            max_addresses: MAX_ADDRESSES,
            mask_client_ip,
            tracked: AtomicUsize::new(0),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The same with another bound on the addresses tracked.
    #[must_use]
    pub fn with_max_addresses(mut self, max: usize) -> Self {
        self.max_addresses = max.max(1);
        self
    }

    /// The window's length.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Before any credential is looked up: `Err(wait)` when `addr` is past the limit in its
    /// window, which closes in `wait`; the refusal is counted.
    pub fn admit(&self, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.tracked.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get_mut(&key(addr)) else {
            return Ok(());
        };
        if now >= entry.window_end || entry.failures < self.limit {
            return Ok(());
        }
        let reason = entry.last_reason;
        entry.count(reason, true);
        Err(entry.window_end - now)
    }

    /// Records a failed login from `addr` for `reason`; hands back whether it is the
    /// address's first, and the summaries of windows it closed on the way (the address's
    /// own, when it had ended; the oldest address's, when the map was full).
    pub fn record(
        &self,
        addr: IpAddr,
        reason: &'static str,
        now: Instant,
    ) -> (Recorded, Vec<Summary>) {
        let key = key(addr);
        let mut closed = Vec::new();
        let mut inner = self.lock();
        if inner.entries.get(&key).is_some_and(|e| now >= e.window_end) {
            self.close(&mut inner, key, now, &mut closed);
        }
        let recorded = if let Some(entry) = inner.entries.get_mut(&key) {
            entry.failures = entry.failures.saturating_add(1);
            entry.count(reason, false);
            entry.last_reason = reason;
            Recorded::Counted
        } else {
            while inner.entries.len() >= self.max_addresses {
                let Some((oldest, generation, _)) = inner.order.pop_front() else {
                    break;
                };
                if inner
                    .entries
                    .get(&oldest)
                    .is_some_and(|e| e.generation == generation)
                    && let Some(mut e) = inner.entries.remove(&oldest)
                {
                    closed.extend(e.summaries(self.window));
                }
            }
            let generation = inner.next_generation;
            inner.next_generation += 1;
            let window_end = now + self.window;
            inner.entries.insert(
                key,
                Entry {
                    generation,
                    window_end,
                    client_ip: self.audited(key),
                    failures: 1,
                    counted: Vec::new(),
                    last_reason: reason,
                },
            );
            inner.order.push_back((key, generation, window_end));
            Recorded::First
        };
        self.tracked.store(inner.entries.len(), Ordering::Relaxed);
        (recorded, closed)
    }

    /// Closes every window that has ended by `now`; their summaries.
    pub fn close_due(&self, now: Instant) -> Vec<Summary> {
        let mut closed = Vec::new();
        if self.tracked.load(Ordering::Relaxed) == 0 {
            return closed;
        }
        let mut inner = self.lock();
        while let Some(&(key, generation, end)) = inner.order.front() {
            if end > now {
                break;
            }
            inner.order.pop_front();
            if inner
                .entries
                .get(&key)
                .is_some_and(|e| e.generation == generation)
            {
                self.close(&mut inner, key, now, &mut closed);
            }
        }
        self.tracked.store(inner.entries.len(), Ordering::Relaxed);
        closed
    }

    /// Closes every window now (shutdown); their summaries. The addresses are forgotten.
    pub fn flush(&self) -> Vec<Summary> {
        let mut inner = self.lock();
        inner.order.clear();
        let closed = inner
            .entries
            .drain()
            .flat_map(|(_, mut e)| e.summaries(self.window).collect::<Vec<_>>())
            .collect();
        self.tracked.store(0, Ordering::Relaxed);
        closed
    }

    /// Closes `key`'s window: its counts go to `closed`; an address that failed in it gets a
    /// new window from `now`, one that did not is forgotten.
    fn close(&self, inner: &mut Inner, key: IpAddr, now: Instant, closed: &mut Vec<Summary>) {
        let generation = inner.next_generation;
        let Some(entry) = inner.entries.get_mut(&key) else {
            return;
        };
        if entry.counted.is_empty() {
            inner.entries.remove(&key);
            return;
        }
        closed.extend(entry.summaries(self.window));
        entry.generation = generation;
        entry.window_end = now + self.window;
        entry.failures = 0;
        let end = entry.window_end;
        inner.next_generation += 1;
        inner.order.push_back((key, generation, end));
    }

    /// How a tracked address appears in its summaries.
    fn audited(&self, key: IpAddr) -> String {
        match key {
            IpAddr::V6(_) if !self.mask_client_ip => format!("{key}/64"),
            _ => audit_detail::client_ip(key, self.mask_client_ip),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves counts that are still counts.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What an address is counted as: IPv4 as is (also when mapped into IPv6), IPv6 by its /64.
fn key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(
                u128::from(v6) & 0xffff_ffff_ffff_ffff_0000_0000_0000_0000,
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn first_at_once_then_one_summary_per_reason_with_the_count() {
        let f = FailedLogins::new(20, Duration::from_secs(60), false);
        let t0 = Instant::now();
        let a = ip("192.0.2.7");
        assert_eq!(f.record(a, "vkey_unknown", t0), (Recorded::First, vec![]));
        for _ in 0..4 {
            assert_eq!(f.record(a, "vkey_unknown", t0).0, Recorded::Counted);
        }
        assert_eq!(f.record(a, "jwt_expired", t0).0, Recorded::Counted);
        assert!(f.close_due(t0 + Duration::from_secs(59)).is_empty());
        let mut s = f.close_due(t0 + Duration::from_secs(60));
        s.sort_by_key(|s| s.reason);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].reason, s[0].count), ("jwt_expired", 1));
        assert_eq!(
            (s[1].reason, s[1].count, s[1].throttled),
            ("vkey_unknown", 4, 0)
        );
        assert_eq!(s[1].client_ip, "192.0.2.7");
        // Still tracked (it failed in the window), with nothing counted: the next window
        // closes empty and the address is forgotten; its next failure is a first again.
        assert!(f.close_due(t0 + Duration::from_secs(120)).is_empty());
        assert_eq!(
            f.record(a, "vkey_unknown", t0 + Duration::from_secs(121)).0,
            Recorded::First
        );
    }

    #[test]
    fn past_the_limit_the_address_waits_for_its_window_and_the_refusals_are_counted() {
        let f = FailedLogins::new(3, Duration::from_secs(60), false);
        let t0 = Instant::now();
        let a = ip("192.0.2.7");
        for _ in 0..3 {
            assert_eq!(f.admit(a, t0), Ok(()));
            f.record(a, "missing_credential", t0);
        }
        let later = t0 + Duration::from_secs(20);
        assert_eq!(f.admit(a, later), Err(Duration::from_secs(40)));
        assert_eq!(f.admit(a, later), Err(Duration::from_secs(40)));
        assert_eq!(f.admit(ip("192.0.2.8"), later), Ok(()));
        let s = f.close_due(t0 + Duration::from_secs(60));
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].count, s[0].throttled), (4, 2));
        assert_eq!(f.admit(a, t0 + Duration::from_secs(61)), Ok(()));
    }

    #[test]
    fn a_failure_after_the_window_closes_it() {
        let f = FailedLogins::new(3, Duration::from_secs(60), false);
        let t0 = Instant::now();
        let a = ip("192.0.2.7");
        f.record(a, "x", t0);
        f.record(a, "x", t0);
        let (r, closed) = f.record(a, "x", t0 + Duration::from_secs(61));
        assert_eq!(r, Recorded::Counted);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].count, 1);
        // The stale order item is skipped; the new window closes with its own count.
        assert!(f.close_due(t0 + Duration::from_secs(62)).is_empty());
        let s = f.close_due(t0 + Duration::from_secs(121));
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].count, 1);
    }

    #[test]
    fn the_map_is_bounded_and_the_oldest_hands_over_its_counts() {
        let f = FailedLogins::new(3, Duration::from_secs(60), false).with_max_addresses(2);
        let t0 = Instant::now();
        f.record(ip("192.0.2.1"), "x", t0);
        f.record(ip("192.0.2.1"), "x", t0);
        f.record(ip("192.0.2.2"), "x", t0 + Duration::from_secs(1));
        let (r, closed) = f.record(ip("192.0.2.3"), "x", t0 + Duration::from_secs(2));
        assert_eq!(r, Recorded::First);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].client_ip, "192.0.2.1");
        assert_eq!(f.tracked.load(Ordering::Relaxed), 2);
        let mut s = f.flush();
        assert!(s.is_empty(), "{s:?}");
        f.record(ip("192.0.2.4"), "x", t0);
        f.record(ip("192.0.2.4"), "y", t0);
        s = f.flush();
        assert_eq!(s.len(), 1);
        assert_eq!(f.admit(ip("192.0.2.4"), t0), Ok(()));
    }

    #[test]
    fn ipv6_is_counted_by_its_slash_64_and_masking_applies() {
        let f = FailedLogins::new(2, Duration::from_secs(60), false);
        let t0 = Instant::now();
        f.record(ip("2001:db8:1:2::1"), "x", t0);
        assert_eq!(
            f.record(ip("2001:db8:1:2::ffff"), "x", t0).0,
            Recorded::Counted
        );
        assert!(f.admit(ip("2001:db8:1:2:3::9"), t0).is_err());
        assert!(f.admit(ip("2001:db8:1:3::1"), t0).is_ok());
        assert_eq!(f.flush()[0].client_ip, "2001:db8:1:2::/64");
        let masked = FailedLogins::new(2, Duration::from_secs(60), true);
        masked.record(ip("192.0.2.7"), "x", t0);
        masked.record(ip("::ffff:192.0.2.7"), "x", t0);
        assert_eq!(masked.flush()[0].client_ip, "192.0.2.0/24");
    }
}
