//! Names of the keys Warden keeps in Redis, shared by the nodes (which write them) and the
//! control plane (which reads usage from them). Every key carries one hash tag, `{prefix}`,
//! so that a script touching several keys stays in one Redis Cluster slot.

/// A token bucket (`rpm` or `tpm`) of a limit scope.
pub fn bucket(prefix: &str, scope: &str, kind: &str) -> String {
    format!("{{{prefix}}}:rl:{scope}:{kind}")
}

/// The set of in-flight request ids of a scope.
pub fn slots(prefix: &str, scope: &str) -> String {
    format!("{{{prefix}}}:par:{scope}")
}

/// Spend of a scope in budget period `index` (micro-USD).
pub fn spend(prefix: &str, scope: &str, index: u64) -> String {
    format!("{{{prefix}}}:spend:{scope}:{index}")
}

/// Round-robin cursor of a provider's keys.
pub fn cursor(prefix: &str, provider: &str) -> String {
    format!("{{{prefix}}}:rr:{provider}")
}

/// Health record of one upstream key version.
pub fn key_health(
    prefix: &str,
    provider: &str,
    key_id: &str,
    fingerprint: &str,
    epoch: u64,
) -> String {
    format!("{{{prefix}}}:key:{provider}:{key_id}:{fingerprint}:{epoch}")
}

/// Index of the key health in force: a sorted set of local key names
/// (`<provider>:<key id>:<fingerprint>:<epoch>`) scored by expiry (ms of the Redis clock;
/// `+inf` for a disabled key), read by nodes when they (re)subscribe to
/// [`key_health_channel`].
pub fn key_health_index(prefix: &str) -> String {
    format!("{{{prefix}}}:keyhealth")
}

/// The pub/sub channel on which changes of key health are announced to every node
/// (`c <ms> <name>`: cooling down for ms; `d <name>`: disabled).
pub fn key_health_channel(prefix: &str) -> String {
    format!("{{{prefix}}}:keyhealth-events")
}

/// Failed logins of one client address in its current window (a counter with a TTL).
pub fn ip_failures(prefix: &str, addr: &str) -> String {
    format!("{{{prefix}}}:ipfail:{addr}")
}

/// The automatic block of one client address (its failure count, with the block's TTL).
pub fn ip_block(prefix: &str, addr: &str) -> String {
    format!("{{{prefix}}}:ipblock:{addr}")
}

/// Every automatic block: a sorted set of addresses scored by expiry (Unix milliseconds),
/// read by nodes when they (re)subscribe and by the control plane to list blocks.
pub fn ip_blocks(prefix: &str) -> String {
    format!("{{{prefix}}}:ipblocks")
}

/// The pub/sub channel on which blocks (`b <addr> <expiry ms>`) and lifts (`u <addr or
/// CIDR>`) are announced to every node.
pub fn ip_block_channel(prefix: &str) -> String {
    format!("{{{prefix}}}:ipblock-events")
}

/// The budget period a time falls in, and the seconds left in it.
pub fn budget_period(now_secs: u64, period_secs: u64) -> (u64, u64) {
    let period = period_secs.max(1);
    let index = now_secs / period;
    (index, (index + 1) * period - now_secs)
}

/// Scope ids, as used in key names and error messages.
pub mod scope {
    pub fn virtual_key(id: &str) -> String {
        format!("vkey:{id}")
    }
    pub fn subject(sub: &str) -> String {
        format!("sub:{sub}")
    }
    pub fn model(alias: &str) -> String {
        format!("model:{alias}")
    }
    pub const GLOBAL: &str = "global";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag() {
        assert_eq!(bucket("warden", "vkey:a", "rpm"), "{warden}:rl:vkey:a:rpm");
        assert!(spend("w", "global", 3).starts_with("{w}:"));
        assert_eq!(budget_period(100, 30), (3, 20));
    }
}
