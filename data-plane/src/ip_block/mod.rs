//! Blocking client addresses: the step after the failed-login throttle
//! ([`crate::proxy::failed_logins`], 429). Every request from a blocked address is answered
//! 403 `ip_blocked` before any credential is looked up.
//!
//! - **Automatic blocks**: an address with `threshold` failed logins (the throttle's 429
//!   refusals included) within `window` is blocked for `duration`. With Redis, failures are
//!   counted there — only on the failure path, batched by a worker ([`shared`]) — and the
//!   node whose count crosses the threshold sets the block (a key with a TTL, and an entry in
//!   a sorted set by expiry), publishes it, and audits it once (`edge.ip_blocked`). Every
//!   node keeps the blocks it heard of in a node-local set ([`IpBlocks`]), fed by pub/sub and
//!   loaded whole whenever it (re)subscribes, so the per-request check is a local lookup and
//!   the one admission round trip per request stays the only Redis call of a request. While
//!   Redis is unreachable (or not configured), each node counts and blocks on its own, with
//!   the same thresholds, and audits its own blocks.
//! - **Manual blocks** (`wardenctl ip block`): addresses and CIDRs in the snapshot
//!   ([`ManualBlock`]), checked the same way.
//!
//! IPv4 addresses are blocked as they are; IPv6 addresses by their /64, as the throttle
//! counts them. Loopback is not exempt.

pub mod shared;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;

/// Failed logins within [`DEFAULT_WINDOW`] that block an address.
pub const DEFAULT_THRESHOLD: u32 = 50;
/// How long failed logins of an address are counted together.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(5 * 60);
/// How long an automatic block lasts.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(15 * 60);
/// Most addresses counted or blocked node-locally at once.
pub const MAX_ADDRESSES: usize = 100_000;

/// The node's flags for automatic blocks.
#[derive(Debug, Clone, clap::Args)]
pub struct IpBlockFlags {
    /// Failed logins from one client address (the 429 refusals of --failed-login-limit
    /// included) within --ip-block-window that block the address: every request from it is
    /// answered 403 `ip_blocked` for --ip-block-duration, before any credential lookup.
    /// Shared across nodes through Redis. `0` turns automatic blocks off (warned and audited
    /// as a dangerous setting).
    #[arg(long, env = "WARDEN_IP_BLOCK_THRESHOLD", default_value_t = DEFAULT_THRESHOLD)]
    pub ip_block_threshold: u32,
    /// The window in which --ip-block-threshold failed logins block an address.
    #[arg(long, env = "WARDEN_IP_BLOCK_WINDOW", default_value = "5m", value_parser = humantime::parse_duration)]
    pub ip_block_window: Duration,
    /// How long an automatic block lasts.
    #[arg(long, env = "WARDEN_IP_BLOCK_DURATION", default_value = "15m", value_parser = humantime::parse_duration)]
    pub ip_block_duration: Duration,
}

/// Automatic blocks: after `threshold` failures within `window`, blocked for `duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// `0`: automatic blocks off.
    pub threshold: u32,
    pub window: Duration,
    pub duration: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            threshold: DEFAULT_THRESHOLD,
            window: DEFAULT_WINDOW,
            duration: DEFAULT_DURATION,
        }
    }
}

impl IpBlockFlags {
    /// The settings, or which flag is wrong.
    pub fn settings(&self) -> Result<Settings, &'static str> {
        if self.ip_block_window.is_zero() {
            return Err("--ip-block-window");
        }
        if self.ip_block_duration.is_zero() {
            return Err("--ip-block-duration");
        }
        Ok(Settings {
            threshold: self.ip_block_threshold,
            window: self.ip_block_window,
            duration: self.ip_block_duration,
        })
    }
}

impl Settings {
    /// Whether automatic blocks are on.
    pub fn enabled(&self) -> bool {
        self.threshold > 0
    }
}

/// A block set by an operator, from the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualBlock {
    pub net: IpNet,
    /// Unix seconds; `None`: until unblocked.
    pub expires_at: Option<i64>,
}

impl ManualBlock {
    /// Whether the block covers `addr` at `now_secs`.
    pub fn covers(&self, addr: IpAddr, now_secs: i64) -> bool {
        self.expires_at.is_none_or(|e| now_secs < e) && self.net.contains(&canonical(addr))
    }
}

/// An automatic block just set: audited once, by the node that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBlock {
    /// The address blocked (an IPv6 address as its /64 network address).
    pub addr: IpAddr,
    /// Failed logins counted in the window.
    pub count: u64,
    pub window: Duration,
    /// Unix milliseconds.
    pub expires_at_ms: u64,
    /// Whether the count was shared through Redis (else this node's own).
    pub shared: bool,
}

/// The node-local view of automatic blocks, and the node-local failure counts used while
/// Redis is unavailable.
#[derive(Debug)]
pub struct IpBlocks {
    settings: Settings,
    /// Entries in `blocked`: read without the lock, so that a node with no block never takes
    /// it on the request path.
    blocked_len: AtomicUsize,
    /// Address → expiry (Unix milliseconds).
    blocked: RwLock<HashMap<IpAddr, u64>>,
    /// Node-local counting: address → (window end, failures).
    local: Mutex<HashMap<IpAddr, (Instant, u64)>>,
    /// Failures to count in Redis; `None` without Redis.
    to_shared: Option<tokio::sync::mpsc::Sender<IpAddr>>,
}

impl IpBlocks {
    /// Blocks counted on this node only.
    pub fn local(settings: Settings) -> Self {
        Self {
            settings,
            blocked_len: AtomicUsize::new(0),
            blocked: RwLock::new(HashMap::new()),
            local: Mutex::new(HashMap::new()),
            to_shared: None,
        }
    }

    /// Blocks counted in Redis while it is healthy: failures go to `to_shared`, read by
    /// [`shared::run`].
    pub fn shared(settings: Settings, to_shared: tokio::sync::mpsc::Sender<IpAddr>) -> Self {
        Self {
            to_shared: Some(to_shared),
            ..Self::local(settings)
        }
    }

    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// Whether `addr` is blocked, by an automatic block this node knows of or by one of
    /// `manual`. Costs an atomic load and an emptiness check when nothing is blocked.
    pub fn is_blocked(&self, addr: IpAddr, manual: &[ManualBlock]) -> bool {
        if self.blocked_len.load(Ordering::Relaxed) == 0 && manual.is_empty() {
            return false;
        }
        let now = SystemTime::now();
        if !manual.is_empty() {
            let secs = unix_secs(now);
            if manual.iter().any(|b| b.covers(addr, secs)) {
                return true;
            }
        }
        if self.blocked_len.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let now_ms = unix_ms(now);
        self.read()
            .get(&key(addr))
            .is_some_and(|&expiry| now_ms < expiry)
    }

    /// A failed login from `addr` (or a request refused by the throttle). Counted in Redis
    /// when it is usable (`redis_healthy`; the block, if any, then comes from the worker),
    /// else here: the block it sets, if it crosses the threshold.
    pub fn failure(&self, addr: IpAddr, redis_healthy: bool) -> Option<NewBlock> {
        if !self.settings.enabled() {
            return None;
        }
        if redis_healthy
            && let Some(tx) = &self.to_shared
            && tx.try_send(addr).is_ok()
        {
            return None;
        }
        self.count_locally(addr, 1, Instant::now())
    }

    /// Counts `n` failures of `addr` on this node; the block set when they cross the
    /// threshold.
    pub fn count_locally(&self, addr: IpAddr, n: u64, now: Instant) -> Option<NewBlock> {
        let key = key(addr);
        let count = {
            let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
            if local.len() >= MAX_ADDRESSES && !local.contains_key(&key) {
                local.retain(|_, (end, _)| *end > now);
                if local.len() >= MAX_ADDRESSES {
                    // Bounded: a new address is not counted until space frees up (the 429
                    // throttle still applies to it).
                    return None;
                }
            }
            let entry = local.entry(key).or_insert((now + self.settings.window, 0));
            if entry.0 <= now {
                *entry = (now + self.settings.window, 0);
            }
            entry.1 = entry.1.saturating_add(n);
            if entry.1 < u64::from(self.settings.threshold) {
                return None;
            }
            let count = entry.1;
            local.remove(&key);
            count
        };
        if self.is_blocked(key, &[]) {
            return None;
        }
        let expires_at_ms = unix_ms(SystemTime::now()) + millis(self.settings.duration);
        self.insert(key, expires_at_ms);
        Some(NewBlock {
            addr: key,
            count,
            window: self.settings.window,
            expires_at_ms,
            shared: false,
        })
    }

    /// Records a block of `addr` until `expires_at_ms` (Unix milliseconds).
    pub fn insert(&self, addr: IpAddr, expires_at_ms: u64) {
        let mut blocked = self.write();
        if blocked.len() >= MAX_ADDRESSES && !blocked.contains_key(&key(addr)) {
            let now = unix_ms(SystemTime::now());
            blocked.retain(|_, e| *e > now);
            if blocked.len() >= MAX_ADDRESSES {
                return;
            }
        }
        let e = blocked.entry(key(addr)).or_insert(0);
        *e = (*e).max(expires_at_ms);
        self.blocked_len.store(blocked.len(), Ordering::Relaxed);
    }

    /// Lifts the automatic blocks inside `net` (an address or a CIDR), and forgets their
    /// node-local counts.
    pub fn lift(&self, net: IpNet) {
        let mut blocked = self.write();
        blocked.retain(|a, _| !net.contains(a));
        if net.prefix_len() == net.max_prefix_len() {
            // One IPv6 address: its block is its /64's.
            blocked.remove(&key(net.addr()));
        }
        self.blocked_len.store(blocked.len(), Ordering::Relaxed);
        drop(blocked);
        self.local
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|a, _| !net.contains(a));
    }

    /// Forgets expired blocks and closed counting windows.
    pub fn prune(&self) {
        if self.blocked_len.load(Ordering::Relaxed) > 0 {
            let now = unix_ms(SystemTime::now());
            let mut blocked = self.write();
            blocked.retain(|_, e| *e > now);
            self.blocked_len.store(blocked.len(), Ordering::Relaxed);
        }
        let now = Instant::now();
        self.local
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, (end, _)| *end > now);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<IpAddr, u64>> {
        self.blocked.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<IpAddr, u64>> {
        self.blocked.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Forgets expired blocks and closed counting windows every second, until `shutdown`.
pub async fn prune_every_second(
    blocks: std::sync::Arc<IpBlocks>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => blocks.prune(),
        }
    }
}

/// An address as IPv4 when it is an IPv4-mapped IPv6 address.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        IpAddr::V4(_) => addr,
    }
}

/// What an address is blocked as: IPv4 as is (also when mapped into IPv6), IPv6 by its /64.
pub fn key(addr: IpAddr) -> IpAddr {
    match canonical(addr) {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(
            u128::from(v6) & 0xffff_ffff_ffff_ffff_0000_0000_0000_0000,
        )),
        v4 => v4,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, millis)
}

fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn settings(threshold: u32) -> Settings {
        Settings {
            threshold,
            window: Duration::from_secs(60),
            duration: Duration::from_secs(60),
        }
    }

    #[test]
    fn the_threshold_blocks_once_and_other_addresses_are_unaffected() {
        let b = IpBlocks::local(settings(3));
        let a = ip("127.0.0.7");
        assert_eq!(b.failure(a, false), None);
        assert_eq!(b.failure(a, false), None);
        assert!(!b.is_blocked(a, &[]));
        let block = b.failure(a, false).expect("third failure blocks");
        assert_eq!((block.addr, block.count, block.shared), (a, 3, false));
        assert!(b.is_blocked(a, &[]));
        assert!(!b.is_blocked(ip("127.0.0.8"), &[]));
        // Failures while blocked do not block (nor audit) again.
        for _ in 0..5 {
            assert_eq!(b.failure(a, false), None);
        }
        b.lift("127.0.0.0/24".parse().unwrap());
        assert!(!b.is_blocked(a, &[]));
    }

    #[test]
    fn the_window_closes_and_blocks_expire() {
        let b = IpBlocks::local(settings(2));
        let a = ip("192.0.2.1");
        let t0 = Instant::now();
        assert_eq!(b.count_locally(a, 1, t0), None);
        assert_eq!(b.count_locally(a, 1, t0 + Duration::from_secs(61)), None);
        b.insert(a, unix_ms(SystemTime::now()) - 1);
        assert!(!b.is_blocked(a, &[]));
        b.prune();
        assert_eq!(b.blocked_len.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn zero_turns_automatic_blocks_off() {
        let b = IpBlocks::local(settings(0));
        for _ in 0..100 {
            assert_eq!(b.failure(ip("192.0.2.1"), false), None);
        }
    }

    #[test]
    fn manual_blocks_cover_their_network_until_they_expire() {
        let b = IpBlocks::local(settings(3));
        let manual = vec![
            ManualBlock {
                net: "10.1.0.0/16".parse().unwrap(),
                expires_at: None,
            },
            ManualBlock {
                net: "192.0.2.9/32".parse().unwrap(),
                expires_at: Some(1),
            },
        ];
        assert!(b.is_blocked(ip("10.1.2.3"), &manual));
        assert!(b.is_blocked(ip("::ffff:10.1.2.3"), &manual));
        assert!(!b.is_blocked(ip("10.2.0.1"), &manual));
        assert!(!b.is_blocked(ip("192.0.2.9"), &manual), "expired");
    }

    #[test]
    fn ipv6_is_blocked_by_its_slash_64() {
        let b = IpBlocks::local(settings(2));
        b.failure(ip("2001:db8:1:2::1"), false);
        assert!(b.failure(ip("2001:db8:1:2::9"), false).is_some());
        assert!(b.is_blocked(ip("2001:db8:1:2:ffff::1"), &[]));
        assert!(!b.is_blocked(ip("2001:db8:1:3::1"), &[]));
    }
}
