//! The Redis side of automatic blocks (module docs of [`super`]):
//!
//! - [`run`]'s counter reads the failures the request path hands over (a bounded channel:
//!   a failed login never waits for Redis), adds them up per address, and runs `fail_v1.lua`
//!   once per address and batch: the script counts within the window and, at the threshold,
//!   sets the block key with its TTL, records it in the sorted set of blocks and publishes
//!   it. The node whose call crossed the threshold audits the block; a Redis error counts the
//!   batch on this node instead.
//! - Its listener subscribes to the block channel on a connection of its own, then loads the
//!   current blocks from the sorted set (so nothing published while it was away is missed),
//!   and applies each message: `b <addr> <expiry ms>` blocks, `u <addr or CIDR>` lifts (sent
//!   by the control plane's `wardenctl ip unblock`). A lost subscription is re-made with
//!   backoff, and the blocks reloaded.
//!
//! Keys ([`warden_core::shared_keys`]): `ipfail:<addr>` (counter, TTL the window),
//! `ipblock:<addr>` (the block: its count, TTL the block's duration), `ipblocks` (sorted set
//! of blocked addresses by expiry), channel `ipblock-events`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt as _;
use redis::Script;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use warden_core::backoff::Backoff;
use warden_core::shared_keys;
use warden_core::shutdown::sleep_or_cancel;

use super::{IpBlocks, NewBlock, key, millis, unix_ms};
use crate::redis_state::redis::{LinkError, RedisLink};

static FAIL: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("fail_v1.lua")));

/// Most distinct addresses counted in one batch.
const BATCH: usize = 256;
/// How many failures may wait for the counter; past it they are counted on this node.
pub const QUEUE: usize = 4096;

/// What to do with a block this node set (audit it).
pub type OnBlock = Arc<dyn Fn(NewBlock) + Send + Sync>;

/// Counts failures in Redis and keeps `blocks` in step with the blocks there, until
/// `shutdown`.
pub async fn run(
    blocks: Arc<IpBlocks>,
    link: Arc<RedisLink>,
    failures: mpsc::Receiver<IpAddr>,
    on_block: OnBlock,
    shutdown: CancellationToken,
) {
    tokio::join!(
        count(
            Arc::clone(&blocks),
            Arc::clone(&link),
            failures,
            on_block,
            shutdown.clone()
        ),
        listen(blocks, link, shutdown),
    );
}

async fn count(
    blocks: Arc<IpBlocks>,
    link: Arc<RedisLink>,
    mut failures: mpsc::Receiver<IpAddr>,
    on_block: OnBlock,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => return,
            a = failures.recv() => match a {
                Some(a) => a,
                None => return,
            },
        };
        let mut batch: HashMap<IpAddr, u64> = HashMap::new();
        *batch.entry(key(first)).or_default() += 1;
        while batch.len() < BATCH {
            match failures.try_recv() {
                Ok(a) => *batch.entry(key(a)).or_default() += 1,
                Err(_) => break,
            }
        }
        for (addr, n) in batch {
            match record(&blocks, &link, addr, n).await {
                Ok(Some((count, newly, expiry))) => {
                    blocks.insert(addr, expiry);
                    if newly {
                        on_block(NewBlock {
                            addr,
                            count,
                            window: blocks.settings().window,
                            expires_at_ms: expiry,
                            shared: true,
                        });
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "ip block: counting failed logins on this node");
                    if let Some(block) = blocks.count_locally(addr, n, Instant::now()) {
                        on_block(block);
                    }
                }
            }
        }
    }
}

/// Adds `n` failures of `addr` in Redis: `Some((count, newly blocked, expiry ms))` when the
/// address is blocked.
async fn record(
    blocks: &IpBlocks,
    link: &Arc<RedisLink>,
    addr: IpAddr,
    n: u64,
) -> Result<Option<(u64, bool, u64)>, LinkError> {
    let s = blocks.settings();
    let prefix = link.prefix();
    let member = addr.to_string();
    let mut invocation = FAIL.prepare_invoke();
    invocation
        .key(shared_keys::ip_failures(prefix, &member))
        .key(shared_keys::ip_block(prefix, &member))
        .key(shared_keys::ip_blocks(prefix))
        .arg(n)
        .arg(millis(s.window).max(1))
        .arg(s.threshold)
        .arg(millis(s.duration).max(1))
        .arg(shared_keys::ip_block_channel(prefix))
        .arg(&member);
    let reply: Vec<i64> = link
        .with(|mut c| async move { invocation.invoke_async(c.conn()).await })
        .await?;
    let expiry = reply
        .get(2)
        .and_then(|e| u64::try_from(*e).ok())
        .unwrap_or(0);
    if expiry == 0 {
        return Ok(None);
    }
    let count = reply
        .first()
        .and_then(|c| u64::try_from(*c).ok())
        .unwrap_or(0);
    Ok(Some((count, reply.get(1) == Some(&1), expiry)))
}

async fn listen(blocks: Arc<IpBlocks>, link: Arc<RedisLink>, shutdown: CancellationToken) {
    let channel = shared_keys::ip_block_channel(link.prefix());
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
    let mut lost = false;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        match subscribe(&blocks, &link, &channel).await {
            Ok(pubsub) => {
                if lost {
                    tracing::info!("ip blocks: subscribed again, current blocks reloaded");
                }
                backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
                let mut messages = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        m = messages.next() => match m {
                            Some(msg) => apply(&blocks, msg.get_payload_bytes()),
                            None => break,
                        },
                    }
                }
                lost = true;
                tracing::warn!(
                    "ip blocks: subscription to redis lost; blocks are counted on this node until it is back"
                );
            }
            Err(e) => tracing::debug!(error = %e, "ip blocks: cannot subscribe yet"),
        }
        if !sleep_or_cancel(backoff.next_delay(), &shutdown).await {
            return;
        }
    }
}

/// Subscribes to `channel`, then loads the blocks in force.
async fn subscribe(
    blocks: &IpBlocks,
    link: &Arc<RedisLink>,
    channel: &str,
) -> Result<redis::aio::PubSub, LinkError> {
    let mut pubsub = link.pubsub().await?;
    pubsub.subscribe(channel).await?;
    let zset = shared_keys::ip_blocks(link.prefix());
    let now = unix_ms(SystemTime::now());
    let current: Vec<(String, f64)> = link
        .with(|mut c| async move {
            redis::cmd("ZRANGEBYSCORE")
                .arg(&zset)
                .arg(now)
                .arg("+inf")
                .arg("WITHSCORES")
                .query_async(c.conn())
                .await
        })
        .await?;
    for (member, expiry) in current {
        if let Ok(addr) = member.parse::<IpAddr>() {
            blocks.insert(addr, expiry as u64);
        }
    }
    Ok(pubsub)
}

/// Applies one message of the block channel; others are ignored.
fn apply(blocks: &IpBlocks, payload: &[u8]) {
    let Ok(text) = std::str::from_utf8(payload) else {
        return;
    };
    let mut parts = text.split(' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("b"), Some(addr), Some(expiry)) => {
            if let (Ok(addr), Ok(expiry)) = (addr.parse::<IpAddr>(), expiry.parse::<u64>()) {
                blocks.insert(addr, expiry);
            }
        }
        (Some("u"), Some(net), None) => {
            let net = net
                .parse::<ipnet::IpNet>()
                .or_else(|_| net.parse::<IpAddr>().map(ipnet::IpNet::from));
            if let Ok(net) = net {
                blocks.lift(net);
            }
        }
        _ => tracing::debug!("ip blocks: unknown message ignored"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Settings;
    use super::*;

    #[test]
    fn messages_block_and_lift() {
        let b = IpBlocks::local(Settings::default());
        let far = unix_ms(SystemTime::now()) + 60_000;
        apply(&b, format!("b 192.0.2.7 {far}").as_bytes());
        apply(&b, format!("b 2001:db8:1:2:: {far}").as_bytes());
        apply(&b, b"garbage");
        apply(&b, b"b notanaddress 5");
        assert!(b.is_blocked("192.0.2.7".parse().unwrap(), &[]));
        assert!(b.is_blocked("2001:db8:1:2::5".parse().unwrap(), &[]));
        apply(&b, b"u 192.0.2.0/24");
        apply(&b, b"u 2001:db8:1:2::5");
        assert!(!b.is_blocked("192.0.2.7".parse().unwrap(), &[]));
        assert!(!b.is_blocked("2001:db8:1:2::5".parse().unwrap(), &[]));
    }
}
