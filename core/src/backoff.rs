//! [`Backoff`]: the delays of a reconnect or retry loop — doubling from a minimum up to a
//! maximum, optionally jittered so that many clients that lost the same server do not come
//! back in step — with `reset` after a success.
//!
//! Hand-written rather than taken from `backon` (already in the tree through `redis`): its
//! jitter adds up to one more delay (`[d, 2d)`), where Warden's reconnects spread around
//! the delay (`[d/2, 3d/2)`), and it has no reset but rebuilding the iterator.

use std::time::Duration;

use rand::Rng as _;

/// The delays between attempts of one loop.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    jitter: Jitter,
}

/// How each delay is spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Jitter {
    /// Exactly the delay.
    None,
    /// Scaled by a random factor in `[0.5, 1.5)`: around the delay.
    Around,
    /// Scaled by a random factor in `[0.5, 1.0]`: never above the delay (nor the maximum).
    Below,
}

impl Backoff {
    /// Delays of `min`, then twice the previous one, up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
            jitter: Jitter::None,
        }
    }

    /// The same delays, each scaled by a random factor in `[0.5, 1.5)`.
    #[must_use]
    pub fn jittered(mut self) -> Self {
        self.jitter = Jitter::Around;
        self
    }

    /// The same delays, each scaled by a random factor in `[0.5, 1.0]`, so that no wait
    /// exceeds the maximum.
    #[must_use]
    pub fn jittered_below(mut self) -> Self {
        self.jitter = Jitter::Below;
        self
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = delay.saturating_mul(2).min(self.max);
        match self.jitter {
            Jitter::None => delay,
            Jitter::Around => delay.mul_f64(rand::rng().random_range(0.5..1.5)),
            Jitter::Below => delay.mul_f64(rand::rng().random_range(0.5..=1.0)),
        }
    }

    /// Starts again from the minimum (after a success).
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_up_to_the_maximum_and_resets() {
        let mut b = Backoff::new(200 * MS, 2000 * MS);
        let delays: Vec<u128> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [200, 400, 800, 1600, 2000, 2000]);
        b.reset();
        assert_eq!(b.next_delay(), 200 * MS);
    }

    #[test]
    fn jitter_spreads_each_delay_around_it() {
        let mut b = Backoff::new(100 * MS, 5000 * MS).jittered();
        for base in [100, 200, 400, 800, 1600, 3200, 5000, 5000] {
            let d = b.next_delay();
            assert!(
                d >= base * MS / 2 && d < base * MS * 3 / 2,
                "{d:?} outside [{base}/2, {base}*3/2) ms"
            );
        }
    }

    #[test]
    fn jitter_below_never_exceeds_the_delay_or_the_maximum() {
        let mut b = Backoff::new(100 * MS, 30_000 * MS).jittered_below();
        let mut base = 100 * MS;
        for _ in 0..12 {
            let d = b.next_delay();
            assert!(
                d >= base / 2 && d <= base,
                "{d:?} outside [{base:?}/2, {base:?}]"
            );
            base = (base * 2).min(30_000 * MS);
        }
        b.reset();
        assert!(b.next_delay() <= 100 * MS);
    }
}
