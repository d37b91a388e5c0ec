//! The staleness bound (`--max-snapshot-age`): how long the node may go on trusting its
//! snapshot without hearing from the control plane. "Heard from" means the Watch stream is
//! open (HTTP/2 keepalive closes a dead one); the snapshot's age is the time since the link
//! was last up. Past the bound the node cannot confirm that a client credential has not been
//! revoked meanwhile, so it refuses every client credential (503
//! `control_plane_unreachable`) until the link is back; `/readyz` says so, the metrics
//! `warden_snapshot_age_seconds` and `warden_snapshot_stale` show it, and one
//! `node.snapshot_stale` audit event reports the episode when the link returns.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The link's history, as far as the bound needs it.
#[derive(Debug)]
pub struct Freshness {
    bound: Option<Duration>,
    /// `None` while the link is up; else since when it is down.
    down_since: Mutex<Option<Instant>>,
    /// Whether the link was ever up (before that, there is no snapshot to be stale).
    ever_up: AtomicBool,
    /// Whether the node is past the bound (as last seen by [`Freshness::tick`] or a refusal).
    stale: AtomicBool,
    /// Requests refused in the current stale episode.
    refused: AtomicU64,
}

/// One stale episode, reported when the link returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleEpisode {
    /// How long the node went without the link.
    pub offline: Duration,
    /// How long of that it was past the bound.
    pub stale: Duration,
    /// Requests refused meanwhile.
    pub refused: u64,
    pub bound: Duration,
}

impl Freshness {
    /// `bound`: `--max-snapshot-age`, `None` for no bound (the node serves from its snapshot
    /// until the link returns).
    pub fn new(bound: Option<Duration>) -> Self {
        Self {
            bound,
            down_since: Mutex::new(Some(Instant::now())),
            ever_up: AtomicBool::new(false),
            stale: AtomicBool::new(false),
            refused: AtomicU64::new(0),
        }
    }

    pub fn bound(&self) -> Option<Duration> {
        self.bound
    }

    fn down_since(&self) -> Option<Instant> {
        *self
            .down_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The snapshot's age: zero while the link is up, else the time since it went down.
    pub fn age(&self) -> Duration {
        self.age_at(Instant::now())
    }

    fn age_at(&self, now: Instant) -> Duration {
        self.down_since()
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since))
    }

    /// Whether the node is past the bound now (false without a bound, or before the link
    /// was ever up: then there is no snapshot at all).
    pub fn is_stale(&self) -> bool {
        self.stale_at(Instant::now())
    }

    fn stale_at(&self, now: Instant) -> bool {
        let Some(bound) = self.bound else {
            return false;
        };
        self.ever_up.load(Ordering::Relaxed) && self.age_at(now) > bound
    }

    /// The Watch stream is open. Returns the stale episode that ends here, if the node went
    /// past the bound while the link was down.
    pub fn link_up(&self) -> Option<StaleEpisode> {
        self.link_up_at(Instant::now())
    }

    fn link_up_at(&self, now: Instant) -> Option<StaleEpisode> {
        let was_stale = self.stale_at(now) || self.stale.load(Ordering::Relaxed);
        let since = self
            .down_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        self.ever_up.store(true, Ordering::Relaxed);
        self.stale.store(false, Ordering::Relaxed);
        metrics::gauge!(crate::metrics::SNAPSHOT_STALE).set(0.0);
        metrics::gauge!(crate::metrics::SNAPSHOT_AGE_SECONDS).set(0.0);
        let refused = self.refused.swap(0, Ordering::Relaxed);
        let (bound, since) = (self.bound?, since?);
        if !was_stale {
            return None;
        }
        let offline = now.saturating_duration_since(since);
        Some(StaleEpisode {
            offline,
            stale: offline.saturating_sub(bound),
            refused,
            bound,
        })
    }

    /// The Watch stream closed (or never opened): the age counts from now, unless it was
    /// already down.
    pub fn link_down(&self) {
        let mut since = self
            .down_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if since.is_none() {
            *since = Some(Instant::now());
        }
    }

    /// Whether a client-authenticated request must be refused now; counts it if so.
    pub fn refuse(&self) -> bool {
        if !self.is_stale() {
            return false;
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        self.note_stale(true);
        true
    }

    /// Updates the metrics and logs a change of state once; run every second.
    pub fn tick(&self) {
        self.note_stale(self.is_stale());
    }

    fn note_stale(&self, stale: bool) {
        metrics::gauge!(crate::metrics::SNAPSHOT_AGE_SECONDS).set(self.age().as_secs_f64());
        metrics::gauge!(crate::metrics::SNAPSHOT_STALE).set(if stale { 1.0 } else { 0.0 });
        if self.stale.swap(stale, Ordering::Relaxed) != stale && stale {
            tracing::error!(
                age_seconds = self.age().as_secs(),
                max_snapshot_age_seconds = self.bound.unwrap_or_default().as_secs(),
                "no control plane replica heard from for longer than --max-snapshot-age: refusing client credentials (they could have been revoked) until the link returns"
            );
        }
    }
}

/// Runs `tick` (the node's [`Freshness::tick`]) every second until `shutdown`.
pub async fn every_second(tick: impl Fn(), shutdown: tokio_util::sync::CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => tick(),
            () = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_bound_nothing_is_ever_stale() {
        let f = Freshness::new(None);
        f.link_up();
        f.link_down();
        let later = Instant::now() + Duration::from_secs(3600);
        assert!(!f.stale_at(later));
        assert_eq!(f.link_up_at(later), None);
    }

    #[test]
    fn past_the_bound_it_refuses_and_reports_one_episode() {
        let f = Freshness::new(Some(Duration::from_secs(2)));
        let t0 = Instant::now();
        // Before the first link there is no snapshot: not "stale".
        assert!(!f.stale_at(t0 + Duration::from_secs(10)));
        assert_eq!(f.link_up_at(t0), None);
        assert_eq!(f.age_at(t0 + Duration::from_secs(5)), Duration::ZERO);
        f.link_down();
        assert!(!f.stale_at(Instant::now() + Duration::from_secs(1)));
        assert!(f.stale_at(Instant::now() + Duration::from_secs(3)));
        f.refused.fetch_add(4, Ordering::Relaxed);
        let episode = f
            .link_up_at(Instant::now() + Duration::from_secs(5))
            .unwrap();
        assert_eq!(episode.refused, 4);
        assert!(episode.offline >= Duration::from_secs(5));
        assert!(episode.stale >= Duration::from_secs(3) && episode.stale < episode.offline);
        // The episode is over: a second `link_up` reports nothing, the count starts again.
        assert_eq!(f.link_up(), None);
        assert!(!f.is_stale());
    }

    #[test]
    fn a_short_outage_is_no_episode() {
        let f = Freshness::new(Some(Duration::from_secs(60)));
        f.link_up();
        f.link_down();
        f.link_down();
        assert!(!f.refuse());
        assert_eq!(f.link_up(), None);
    }
}
