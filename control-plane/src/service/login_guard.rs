//! Failed logins on the control plane's APIs (admin credentials and JWTs on Admin and
//! AuditStream, node credentials on Sync), counted per peer address so that their cost is
//! bounded:
//!
//! - **Throttle**: past [`DEFAULT_MAX_FAILURES_PER_MINUTE`] failures in a minute from one
//!   address, further attempts from it are refused with `RESOURCE_EXHAUSTED` and a retry
//!   hint before any credential lookup, until the minute is over.
//! - **Audit** (DESIGN.md invariant 3): the first failure of an (address, reason) is
//!   audited at once; later ones within the minute are counted, and one row per (address,
//!   reason) per minute carries the count ([`LoginGuard::due`], flushed by a background
//!   tick). Throttled attempts are counted the same way under reason `throttled`.
//!
//! Memory is bounded: at most [`DEFAULT_MAX_ADDRESSES`] addresses are tracked; past that,
//! failures from untracked addresses are counted together under `overflow` (audited, not
//! throttled: throttling them together would lock out every new address during a spray).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures a minute from one address before it is throttled.
pub const DEFAULT_MAX_FAILURES_PER_MINUTE: u32 = 20;
/// Addresses tracked at once.
pub const DEFAULT_MAX_ADDRESSES: usize = 10_000;
/// The counting window.
pub const WINDOW: Duration = Duration::from_secs(60);

/// One audit row to write for failed logins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `auth.admin` or `auth.node`.
    pub action: &'static str,
    /// The fingerprint of the last credential presented (`fp:…`) or `-`.
    pub actor: String,
    /// The RPC's action (admin) or the node id.
    pub subject: String,
    pub reason: &'static str,
    /// The peer address, `unknown` (an in-process call), or `overflow`.
    pub client_ip: String,
    /// Failures this row stands for.
    pub count: u64,
    /// Whether this is the first row of its (address, reason) in the window.
    pub first: bool,
}

#[derive(Debug)]
struct Pending {
    action: &'static str,
    reason: &'static str,
    actor: String,
    subject: String,
    /// When the last row for this (address, reason) was written.
    reported_at: Instant,
    /// Failures since then.
    count: u64,
}

#[derive(Debug)]
struct Address {
    window_start: Instant,
    failures: u32,
    pending: Vec<Pending>,
}

impl Address {
    fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            failures: 0,
            pending: Vec::new(),
        }
    }

    /// Idle: its window is over and nothing waits to be reported.
    fn idle(&self, now: Instant) -> bool {
        now.duration_since(self.window_start) >= WINDOW
            && self
                .pending
                .iter()
                .all(|p| p.count == 0 && now.duration_since(p.reported_at) >= WINDOW)
    }
}

#[derive(Debug, Default)]
struct State {
    addresses: HashMap<IpAddr, Address>,
    overflow: Option<Address>,
}

/// Per-address counting of failed logins (see the module docs).
#[derive(Debug)]
pub struct LoginGuard {
    state: Mutex<State>,
    limit: std::sync::atomic::AtomicU32,
    max_addresses: usize,
}

impl Default for LoginGuard {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FAILURES_PER_MINUTE, DEFAULT_MAX_ADDRESSES)
    }
}

/// An address as audited: `unknown` for an in-process call.
fn label(ip: IpAddr) -> String {
    if ip.is_unspecified() {
        "unknown".to_owned()
    } else {
        ip.to_string()
    }
}

impl LoginGuard {
    pub fn new(limit: u32, max_addresses: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            limit: std::sync::atomic::AtomicU32::new(limit.max(1)),
            max_addresses: max_addresses.max(1),
        }
    }

    /// Sets the failures a minute from one address before it is throttled.
    pub fn set_limit(&self, limit: u32) {
        self.limit
            .store(limit.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Err(retry_after)` when `peer` is throttled now. An unknown peer (no socket: an
    /// in-process call) is never throttled.
    pub fn check(&self, peer: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        let Some(ip) = peer else { return Ok(()) };
        let limit = self.limit.load(std::sync::atomic::Ordering::Relaxed);
        let state = self.lock();
        match state.addresses.get(&ip) {
            Some(a) if a.failures >= limit => {
                let elapsed = now.duration_since(a.window_start);
                if elapsed >= WINDOW {
                    Ok(())
                } else {
                    Err(WINDOW - elapsed)
                }
            }
            _ => Ok(()),
        }
    }

    /// Counts one failure (`reason` `throttled` does not count towards the throttle) and
    /// returns the audit row to write now, if any: the first of its (address, reason) in a
    /// window, or the one carrying the count once a window has passed since the last.
    pub fn failed(
        &self,
        peer: Option<IpAddr>,
        action: &'static str,
        reason: &'static str,
        actor: &str,
        subject: &str,
        now: Instant,
    ) -> Option<Report> {
        let max = self.max_addresses;
        let mut state = self.lock();
        let state = &mut *state;
        if !state
            .addresses
            .contains_key(&peer.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)))
            && state.addresses.len() >= max
        {
            state.addresses.retain(|_, a| !a.idle(now));
        }
        // An unknown peer (an in-process call) is counted under the unspecified address.
        let key = peer.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let (entry, shown) = if state.addresses.contains_key(&key) || state.addresses.len() < max {
            (
                state
                    .addresses
                    .entry(key)
                    .or_insert_with(|| Address::new(now)),
                label(key),
            )
        } else {
            (
                state.overflow.get_or_insert_with(|| Address::new(now)),
                "overflow".to_owned(),
            )
        };
        if now.duration_since(entry.window_start) >= WINDOW {
            entry.window_start = now;
            entry.failures = 0;
        }
        if reason != "throttled" {
            entry.failures = entry.failures.saturating_add(1);
        }
        let pending = match entry
            .pending
            .iter_mut()
            .position(|p| p.action == action && p.reason == reason)
        {
            Some(i) => &mut entry.pending[i],
            None => {
                entry.pending.push(Pending {
                    action,
                    reason,
                    actor: actor.to_owned(),
                    subject: subject.to_owned(),
                    reported_at: now,
                    count: 0,
                });
                let report = Report {
                    action,
                    actor: actor.to_owned(),
                    subject: subject.to_owned(),
                    reason,
                    client_ip: shown,
                    count: 1,
                    first: true,
                };
                return Some(report);
            }
        };
        pending.count += 1;
        pending.actor = actor.to_owned();
        pending.subject = subject.to_owned();
        if now.duration_since(pending.reported_at) < WINDOW {
            return None;
        }
        let count = std::mem::take(&mut pending.count);
        pending.reported_at = now;
        Some(Report {
            action,
            actor: pending.actor.clone(),
            subject: pending.subject.clone(),
            reason,
            client_ip: shown,
            count,
            first: false,
        })
    }

    /// The rows whose window has passed with failures counted and not yet reported; drops
    /// addresses with nothing left to count or report.
    pub fn due(&self, now: Instant) -> Vec<Report> {
        let mut state = self.lock();
        let state = &mut *state;
        let mut out = Vec::new();
        let mut take = |shown: String, a: &mut Address| {
            for p in &mut a.pending {
                if p.count > 0 && now.duration_since(p.reported_at) >= WINDOW {
                    out.push(Report {
                        action: p.action,
                        actor: p.actor.clone(),
                        subject: p.subject.clone(),
                        reason: p.reason,
                        client_ip: shown.clone(),
                        count: std::mem::take(&mut p.count),
                        first: false,
                    });
                    p.reported_at = now;
                }
            }
            a.pending
                .retain(|p| p.count > 0 || now.duration_since(p.reported_at) < WINDOW);
        };
        for (ip, a) in &mut state.addresses {
            take(label(*ip), a);
        }
        if let Some(a) = state.overflow.as_mut() {
            take("overflow".to_owned(), a);
        }
        state.addresses.retain(|_, a| !a.idle(now));
        if state.overflow.as_ref().is_some_and(|a| a.idle(now)) {
            state.overflow = None;
        }
        out
    }

    /// Addresses tracked now (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.lock().addresses.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, n]))
    }

    #[test]
    fn the_first_failure_is_reported_at_once_then_one_row_a_minute_with_the_count() {
        let g = LoginGuard::new(1000, 10);
        let t0 = Instant::now();
        let first = g
            .failed(ip(1), "auth.admin", "unknown_credential", "fp:a", "x", t0)
            .unwrap();
        assert!(first.first && first.count == 1 && first.client_ip == "127.0.0.1");
        for i in 1..50 {
            let later = t0 + Duration::from_millis(i * 100);
            assert!(
                g.failed(
                    ip(1),
                    "auth.admin",
                    "unknown_credential",
                    "fp:a",
                    "x",
                    later
                )
                .is_none()
            );
        }
        // Another reason from the same address is its own first row.
        assert!(
            g.failed(ip(1), "auth.admin", "malformed_credential", "fp:b", "x", t0)
                .is_some_and(|r| r.first)
        );
        assert!(g.due(t0 + Duration::from_secs(30)).is_empty());
        let due = g.due(t0 + WINDOW);
        assert_eq!(due.len(), 1, "{due:?}");
        assert_eq!(
            (due[0].reason, due[0].count, due[0].first),
            ("unknown_credential", 49, false)
        );
        assert!(g.due(t0 + WINDOW * 2).is_empty());
        assert_eq!(g.tracked(), 0, "an idle address is forgotten");
    }

    #[test]
    fn past_the_limit_an_address_is_throttled_until_its_minute_is_over() {
        let g = LoginGuard::new(3, 10);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(g.check(ip(1), t0).is_ok());
            g.failed(ip(1), "auth.node", "unknown_credential", "-", "n", t0);
        }
        let retry = g.check(ip(1), t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(retry, Duration::from_secs(50));
        assert!(g.check(ip(2), t0).is_ok(), "other addresses are not");
        assert!(g.check(None, t0).is_ok());
        // Throttled attempts are reported but do not extend the block.
        g.failed(ip(1), "auth.node", "throttled", "-", "n", t0);
        assert!(g.check(ip(1), t0 + WINDOW).is_ok());
    }

    #[test]
    fn memory_is_bounded_by_the_address_cap() {
        let g = LoginGuard::new(1, 4);
        let t0 = Instant::now();
        for n in 0..200u8 {
            let r = g.failed(ip(n), "auth.admin", "unknown_credential", "-", "x", t0);
            if n == 4 {
                assert_eq!(r.map(|r| r.client_ip).as_deref(), Some("overflow"));
            }
        }
        assert_eq!(g.tracked(), 4);
        assert!(g.check(ip(150), t0).is_ok(), "overflow is not throttled");
        let due = g.due(t0 + WINDOW);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].client_ip.as_str(), due[0].count), ("overflow", 195));
    }
}
