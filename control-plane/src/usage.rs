//! Current usage of a policy target, read from the Redis the nodes share (the same keys,
//! named by [`warden_core::shared_keys`]), and the nodes' automatic address blocks. The
//! control plane writes no shared state but one: `wardenctl ip unblock` lifts automatic
//! blocks ([`UsageReader::lift_ip_blocks`]). Without Redis configured, or while it is
//! unreachable, usage and blocks are reported as unavailable with the reason.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::{ExposeSecret as _, SecretBox};
use warden_core::shared_keys;

use crate::domain::{Limits, PolicyTarget};

/// Usage figures of one target.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub requests_remaining: Option<u64>,
    pub tokens_remaining: Option<u64>,
    pub in_flight: u32,
    pub spent_micros: u64,
    pub period_ends_at: i64,
}

/// Reads usage from Redis.
pub struct UsageReader {
    url: Option<SecretBox<str>>,
    prefix: String,
    /// PEM CA certificates for a `rediss://` URL (`[redis] ca_file`).
    root_ca: Option<Vec<u8>>,
    conn: tokio::sync::Mutex<Option<ConnectionManager>>,
}

impl std::fmt::Debug for UsageReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageReader")
            .field("configured", &self.url.is_some())
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl UsageReader {
    pub fn new(url: Option<SecretBox<str>>, prefix: String, root_ca: Option<Vec<u8>>) -> Self {
        Self {
            url,
            prefix,
            root_ca,
            conn: tokio::sync::Mutex::new(None),
        }
    }

    async fn connection(&self) -> Result<ConnectionManager, String> {
        let Some(url) = &self.url else {
            return Err("no Redis configured on the control plane (WARDEN_REDIS_URL)".into());
        };
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let client = match &self.root_ca {
            Some(pem) => redis::Client::build_with_tls(
                url.expose_secret(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => redis::Client::open(url.expose_secret()),
        }
        .map_err(|_| "the Redis URL or its CA file is not valid".to_owned())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1);
        let c = tokio::time::timeout(
            Duration::from_secs(2),
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| "Redis did not answer in time".to_owned())?
        .map_err(|e| unreachable_reason(&e))?;
        *guard = Some(c.clone());
        Ok(c)
    }

    /// Usage of `target` under `limits`.
    pub async fn usage(&self, target: &PolicyTarget, limits: &Limits) -> Result<Usage, String> {
        let mut conn = self.connection().await?;
        let scope = target.scope_id();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as f64)
            .unwrap_or(0.0);
        let mut usage = Usage::default();
        let fail = |e: redis::RedisError| format!("Redis read failed: {}", e.category());
        if limits.rpm > 0 {
            let key = shared_keys::bucket(&self.prefix, &scope, "rpm");
            usage.requests_remaining = Some(
                bucket_level(&mut conn, &key, limits.rpm, now_ms)
                    .await
                    .map_err(fail)?,
            );
        }
        if limits.tpm > 0 {
            let key = shared_keys::bucket(&self.prefix, &scope, "tpm");
            usage.tokens_remaining = Some(
                bucket_level(&mut conn, &key, limits.tpm, now_ms)
                    .await
                    .map_err(fail)?,
            );
        }
        if limits.max_parallel > 0 {
            let n: u32 = redis::cmd("ZCOUNT")
                .arg(shared_keys::slots(&self.prefix, &scope))
                .arg(now_ms as i64)
                .arg("+inf")
                .query_async(&mut conn)
                .await
                .map_err(fail)?;
            usage.in_flight = n;
        }
        if limits.max_budget_micros > 0 {
            let now = u64::try_from(warden_core::unix_now()).unwrap_or(0);
            let (index, left) = shared_keys::budget_period(now, limits.budget_period_secs);
            let spent: Option<u64> = redis::cmd("GET")
                .arg(shared_keys::spend(&self.prefix, &scope, index))
                .query_async(&mut conn)
                .await
                .map_err(fail)?;
            usage.spent_micros = spent.unwrap_or(0);
            usage.period_ends_at = i64::try_from(now + left).unwrap_or(i64::MAX);
        }
        Ok(usage)
    }
}

impl UsageReader {
    /// The automatic address blocks in force (address, expiry in Unix seconds).
    pub async fn automatic_ip_blocks(
        &self,
    ) -> Result<Vec<crate::domain::AutomaticIpBlock>, String> {
        let mut conn = self.connection().await?;
        let now_ms = unix_ms();
        let members: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
            .arg(shared_keys::ip_blocks(&self.prefix))
            .arg(now_ms)
            .arg("+inf")
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("Redis read failed: {}", e.category()))?;
        Ok(members
            .into_iter()
            .map(|(addr, expiry)| crate::domain::AutomaticIpBlock {
                addr,
                expires_at: (expiry / 1000.0).ceil() as i64,
            })
            .collect())
    }

    /// Lifts the automatic blocks of addresses inside `net`: deletes their block keys,
    /// failure counters and sorted-set entries, and publishes `u <net>` so that every node
    /// drops them (and any it set on its own while Redis was unreachable). How many were
    /// lifted in Redis.
    pub async fn lift_ip_blocks(&self, net: ipnet::IpNet) -> Result<u32, String> {
        let mut conn = self.connection().await?;
        let fail = |e: redis::RedisError| format!("Redis write failed: {}", e.category());
        let zset = shared_keys::ip_blocks(&self.prefix);
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(&zset)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .map_err(fail)?;
        let mut lifted = 0u32;
        for m in members {
            let inside = m.parse::<std::net::IpAddr>().is_ok_and(|a| {
                net.contains(&a)
                    || (net.prefix_len() == net.max_prefix_len()
                        && ipnet::IpNet::new(a, 64)
                            .is_ok_and(|n| a.is_ipv6() && n.contains(&net.addr())))
            });
            if !inside {
                continue;
            }
            let removed: u32 = redis::pipe()
                .cmd("DEL")
                .arg(shared_keys::ip_block(&self.prefix, &m))
                .ignore()
                .cmd("DEL")
                .arg(shared_keys::ip_failures(&self.prefix, &m))
                .ignore()
                .cmd("ZREM")
                .arg(&zset)
                .arg(&m)
                .query_async::<(u32,)>(&mut conn)
                .await
                .map_err(fail)?
                .0;
            lifted += removed;
        }
        let _: i64 = redis::cmd("PUBLISH")
            .arg(shared_keys::ip_block_channel(&self.prefix))
            .arg(format!("u {net}"))
            .query_async(&mut conn)
            .await
            .map_err(fail)?;
        Ok(lifted)
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Why Redis could not be reached, fit to show an admin: the error's category, and for a
/// refused TLS certificate the verifier's reason (`invalid peer certificate: UnknownIssuer`),
/// which names no host, URL or credential.
fn unreachable_reason(e: &redis::RedisError) -> String {
    let text = e.to_string();
    match text.find("invalid peer certificate") {
        Some(at) => {
            let reason: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | ':' | '_'))
                .collect();
            format!("Redis is unreachable: TLS: {}", reason.trim())
        }
        None => format!("Redis is unreachable: {}", e.category()),
    }
}

/// The level of a token bucket now: its stored level plus what refilled since.
async fn bucket_level(
    conn: &mut ConnectionManager,
    key: &str,
    per_minute: u64,
    now_ms: f64,
) -> Result<u64, redis::RedisError> {
    let (tokens, ts): (Option<f64>, Option<f64>) = redis::cmd("HMGET")
        .arg(key)
        .arg("t")
        .arg("ts")
        .query_async(conn)
        .await?;
    let level = match (tokens, ts) {
        (Some(t), Some(ts)) => {
            let rate = per_minute as f64 / 60_000.0;
            (t + (now_ms - ts).max(0.0) * rate).min(per_minute as f64)
        }
        _ => per_minute as f64,
    };
    Ok(level.max(0.0).floor() as u64)
}
