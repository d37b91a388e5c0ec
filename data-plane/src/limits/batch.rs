//! Settlement off the response path: the tokens and spend of ended requests are summed per
//! Redis key on the node and written in one script call (`settle_v2.lua`) every
//! [`super::LimiterSettings::settle_interval`], or sooner once
//! [`super::LimiterSettings::settle_batch`] requests are waiting. Any call the node makes
//! anyway takes the waiting batch along: an admission (`admit_v2.lua` applies it before it
//! decides, so this node's own admissions see every settlement, refunds included), a
//! mid-stream charge, the release of parallel slots. Under steady traffic the batch costs
//! no call of its own.
//!
//! What waits in a batch is not yet seen by other nodes' admissions: a tokens-per-minute
//! bucket or a budget may be overshot by what this node's requests used in the last
//! interval. Parallel slots are never batched (see [`super::Admission::finish`]), and a
//! stream's own mid-stream charges are made at once, so mid-stream cuts see every charge of
//! that stream. A batch whose call fails is not counted (as a single settlement whose call
//! fails). When the node stops, [`Batcher::flush`] writes what waits.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::redis::{Settlement, settle};
use crate::redis_state::redis::RedisLink;

/// Settlements waiting to be written, and the task that writes them.
#[derive(Debug)]
pub struct Batcher {
    link: Arc<RedisLink>,
    pending: Mutex<Settlement>,
    /// A first settlement arrived in an empty batch.
    wake: Notify,
    /// The batch reached `max_requests`.
    full: Notify,
    /// Held while a batch is being written, so [`Batcher::flush`] waits for one in flight.
    sending: tokio::sync::Mutex<()>,
    interval: Duration,
    max_requests: usize,
}

impl Batcher {
    /// A batcher writing through `link`; its task runs until the link shuts down (and
    /// writes what waits then).
    pub fn start(link: Arc<RedisLink>, interval: Duration, max_requests: usize) -> Arc<Self> {
        let batcher = Arc::new(Self {
            link,
            pending: Mutex::new(Settlement::default()),
            wake: Notify::new(),
            full: Notify::new(),
            sending: tokio::sync::Mutex::new(()),
            interval,
            max_requests: max_requests.max(1),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(Arc::clone(&batcher).run());
        }
        batcher
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Settlement> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds one request's settlement to the batch; never waits for Redis.
    pub fn push(&self, settlement: Settlement) {
        if settlement.is_empty() {
            return;
        }
        let mut pending = self.lock();
        let first = pending.requests() == 0;
        pending.merge(settlement);
        let n = pending.requests();
        drop(pending);
        if first {
            self.wake.notify_one();
        }
        if n >= self.max_requests {
            self.full.notify_one();
        }
    }

    /// Takes the waiting batch (to send it along with another call).
    pub fn take(&self) -> Settlement {
        std::mem::take(&mut *self.lock())
    }

    /// Writes the waiting batch now, after any write in flight.
    pub async fn flush(&self) {
        let _sending = self.sending.lock().await;
        let batch = self.take();
        if batch.is_empty() {
            return;
        }
        let requests = batch.requests();
        if let Err(e) = settle(&self.link, Settlement::default(), batch, None).await {
            // As with a single settlement that fails: the usage is not counted in Redis
            // (the slots of these requests were released already).
            tracing::warn!(error = %e, requests, "could not write a batch of settlements to redis; their usage is not counted");
        }
    }

    async fn run(self: Arc<Self>) {
        let shutdown = self.link.shutdown_token();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notified() => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(self.interval) => {}
                () = self.full.notified() => {}
            }
            self.flush().await;
        }
        self.flush().await;
    }
}
