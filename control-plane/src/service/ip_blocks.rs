//! Manual blocks of client addresses (`wardenctl ip block|unblock|blocks`): kept in the
//! state store and sent to every node in the snapshot; and the automatic blocks the nodes
//! set after failed logins, which live in Redis (listed, and lifted, through the control
//! plane's Redis connection when it has one: [`crate::usage::UsageReader`]).
//!
//! Why unblocking lifts an automatic block from here: the block is a key with a TTL and a
//! sorted-set entry in the Redis the nodes share, and every node holds a copy fed by
//! pub/sub; deleting both and publishing `u <network>` removes it everywhere within a
//! moment, with no new snapshot field and no per-request cost on the nodes. Without Redis on
//! the control plane, automatic blocks cannot be seen or lifted from here and expire by
//! their TTL (`--ip-block-duration`).

use ipnet::IpNet;
use warden_core::audit_detail::Detail;
use warden_core::unix_now;

use super::{Actor, ControlPlane};
use crate::domain::{AutomaticIpBlock, IpBlockRecord};
use crate::error::ServiceError;

/// Longest reason kept.
const REASON_MAX: usize = 256;

/// What `ip blocks` shows.
#[derive(Debug, Clone)]
pub struct IpBlockList {
    /// Manual blocks in force.
    pub manual: Vec<IpBlockRecord>,
    /// Automatic blocks in Redis, or why they cannot be read.
    pub automatic: Result<Vec<AutomaticIpBlock>, String>,
}

/// What an unblock did.
#[derive(Debug, Clone)]
pub struct Unblocked {
    /// Whether a manual block of the network was removed.
    pub manual: bool,
    /// Automatic blocks lifted in Redis, or why none could be.
    pub automatic: Result<u32, String>,
}

/// `text` as a network: an address (a /32 or /128) or a CIDR, its host bits cleared;
/// IPv4-mapped IPv6 addresses as IPv4.
pub fn parse_network(text: &str) -> Result<IpNet, ServiceError> {
    let text = text.trim();
    let net = match text.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => text
            .parse::<std::net::IpAddr>()
            .map(|a| match a {
                std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, std::net::IpAddr::V4),
                v4 => v4,
            })
            .map(IpNet::from)
            .map_err(|_| {
                ServiceError::InvalidArgument(format!(
                    "`{}` is not an IP address or CIDR network (e.g. 192.0.2.7, 2001:db8::/48)",
                    text.chars().take(64).collect::<String>()
                ))
            })?,
    };
    Ok(net.trunc())
}

impl ControlPlane {
    /// Blocks `network` (an address or CIDR) on every node, for `duration_secs` (0: until
    /// unblocked); audited as `ip.block`.
    pub async fn block_ip(
        &self,
        actor: &Actor,
        network: &str,
        duration_secs: u64,
        reason: &str,
    ) -> Result<IpBlockRecord, ServiceError> {
        let parsed = parse_network(network);
        let subject = parsed
            .as_ref()
            .map_or_else(|_| "-".to_owned(), ToString::to_string);
        let detail = |r: &Result<IpBlockRecord, ServiceError>| match r {
            Ok(b) => Detail::new()
                .with("reason", b.reason.as_str())
                .with_opt("expires_at", b.expires_at),
            Err(_) => Detail::new(),
        };
        self.audited_with(actor, "ip.block", subject, detail, async {
            let net = parsed?;
            if reason.chars().any(char::is_control) {
                return Err(ServiceError::InvalidArgument(
                    "the reason may not contain control characters".into(),
                ));
            }
            let now = unix_now();
            let expires_at = match duration_secs {
                0 => None,
                d => Some(now.saturating_add(i64::try_from(d).unwrap_or(i64::MAX))),
            };
            let record = IpBlockRecord {
                cidr: net.to_string(),
                reason: reason.chars().take(REASON_MAX).collect(),
                created_by: actor.0.clone(),
                created_at: now,
                expires_at,
            };
            self.store.put_ip_block(&record).await?;
            self.publish().await?;
            Ok(record)
        })
        .await
    }

    /// Removes the manual block of `network` and lifts the automatic blocks inside it;
    /// audited as `ip.unblock`. Neither found: `NotFound`.
    pub async fn unblock_ip(
        &self,
        actor: &Actor,
        network: &str,
    ) -> Result<Unblocked, ServiceError> {
        let parsed = parse_network(network);
        let subject = parsed
            .as_ref()
            .map_or_else(|_| "-".to_owned(), ToString::to_string);
        let detail = |r: &Result<Unblocked, ServiceError>| match r {
            Ok(u) => Detail::new()
                .with("manual", u.manual)
                .with_opt("automatic", u.automatic.as_ref().ok().copied())
                .with_opt("automatic_unavailable", u.automatic.as_ref().err().cloned()),
            Err(_) => Detail::new(),
        };
        self.audited_with(actor, "ip.unblock", subject, detail, async {
            let net = parsed?;
            let manual = self.store.delete_ip_block(&net.to_string()).await?;
            if manual {
                self.publish().await?;
            }
            let automatic = self.usage.lift_ip_blocks(net).await;
            if !manual && matches!(automatic, Ok(0) | Err(_)) {
                return Err(ServiceError::NotFound(match &automatic {
                    Err(why) => format!(
                        "no manual block of {net}; automatic blocks cannot be lifted from the control plane ({why}) and expire by their TTL"
                    ),
                    Ok(_) => format!("no manual or automatic block of {net}"),
                }));
            }
            Ok(Unblocked { manual, automatic })
        })
        .await
    }

    /// The manual blocks in force, and the automatic ones in Redis.
    pub async fn ip_blocks(&self) -> Result<IpBlockList, ServiceError> {
        Ok(IpBlockList {
            manual: self.manual_ip_blocks().await?,
            automatic: self.usage.automatic_ip_blocks().await,
        })
    }

    /// The manual blocks that have not expired (what the snapshot carries).
    pub(super) async fn manual_ip_blocks(&self) -> Result<Vec<IpBlockRecord>, ServiceError> {
        let now = unix_now();
        Ok(self
            .store
            .list_ip_blocks()
            .await?
            .into_iter()
            .filter(|b| b.expires_at.is_none_or(|e| e > now))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_normalised() {
        assert_eq!(
            parse_network("192.0.2.7").unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert_eq!(
            parse_network(" 10.1.2.3/16 ").unwrap().to_string(),
            "10.1.0.0/16"
        );
        assert_eq!(
            parse_network("::ffff:192.0.2.7").unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert_eq!(
            parse_network("2001:db8::1/48").unwrap().to_string(),
            "2001:db8::/48"
        );
        assert!(parse_network("example.com").is_err());
        assert!(parse_network("10.0.0.0/33").is_err());
    }
}
