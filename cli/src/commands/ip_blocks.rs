//! `wardenctl ip block|unblock|blocks`: client addresses refused with 403 `ip_blocked` on
//! every node — the manual blocks an admin sets, and the automatic ones nodes set after
//! failed logins (listed and lifted when the control plane has Redis).

use clap::Subcommand;
use serde_json::{Value, json};
use warden_proto::admin::v1 as pb;

use crate::output::{self, Printer, Rows};
use crate::paging::list_all;
use crate::session::Session;

#[derive(Debug, Subcommand)]
pub enum IpCommand {
    /// Block an address or CIDR network on every node (through the snapshot).
    Block {
        /// An address (192.0.2.7, 2001:db8::1) or a CIDR network (10.1.0.0/16).
        network: String,
        /// How long the block lasts (`30m`, `12h`, `7d`); without it: until unblocked.
        #[arg(long = "for", value_parser = parse_for)]
        duration: Option<u64>,
        /// Why (kept with the block and audited).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Remove the manual block of a network, and lift the automatic blocks inside it.
    Unblock {
        /// The address or CIDR network, as blocked.
        network: String,
    },
    /// List manual blocks, and the automatic ones in Redis.
    Blocks,
}

/// `--for`: a humantime duration of at least one second.
fn parse_for(raw: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(raw).map_err(|e| e.to_string())?;
    if d.as_secs() == 0 {
        return Err("the block must last at least a second".into());
    }
    Ok(d.as_secs())
}

/// Runs one `ip` subcommand.
pub async fn run(session: &Session, out: Printer, command: IpCommand) -> anyhow::Result<()> {
    let mut client = session.client.clone();
    match command {
        IpCommand::Block {
            network,
            duration,
            reason,
        } => {
            let b = session
                .call(client.block_ip(pb::BlockIpRequest {
                    network,
                    duration_seconds: duration.unwrap_or(0),
                    reason,
                }))
                .await?;
            let until = if b.expires_at > 0 {
                format!("until {}", output::timestamp(b.expires_at))
            } else {
                "until unblocked".to_owned()
            };
            out.done(
                &format!("blocked {} on every node, {until}", b.network),
                &manual_json(&b),
            )?;
        }
        IpCommand::Unblock { network } => {
            let u = session
                .call(client.unblock_ip(pb::UnblockIpRequest {
                    network: network.clone(),
                }))
                .await?;
            let automatic = if u.automatic_unavailable.is_empty() {
                format!("{} automatic block(s) lifted", u.automatic_lifted)
            } else {
                format!(
                    "automatic blocks not lifted ({}); they expire by their TTL",
                    u.automatic_unavailable
                )
            };
            let manual = if u.manual_removed {
                "manual block removed"
            } else {
                "no manual block"
            };
            out.done(
                &format!("{network}: {manual}; {automatic}"),
                &json!({
                    "network": network, "manual_removed": u.manual_removed,
                    "automatic_lifted": u.automatic_lifted,
                    "automatic_unavailable": u.automatic_unavailable,
                }),
            )?;
        }
        IpCommand::Blocks => {
            let l = list_all!(session, list_ip_blocks, pb::ListIpBlocksRequest::default()).await?;
            let mut rows = Rows::new(&["NETWORK", "KIND", "EXPIRES", "REASON", "BY"]);
            for b in &l.manual {
                rows.push(vec![
                    b.network.clone(),
                    "manual".to_owned(),
                    expiry(b.expires_at),
                    b.reason.clone(),
                    b.created_by.clone(),
                ]);
            }
            for b in &l.automatic {
                rows.push(vec![
                    b.address.clone(),
                    "automatic".to_owned(),
                    expiry(b.expires_at),
                    "failed logins".to_owned(),
                    "-".to_owned(),
                ]);
            }
            if !l.automatic_unavailable.is_empty() {
                eprintln!(
                    "automatic blocks not listed: {} (they expire by their TTL; each is audited as edge.ip_blocked)",
                    l.automatic_unavailable
                );
            }
            out.table(
                &rows,
                &json!({
                    "manual": l.manual.iter().map(manual_json).collect::<Vec<_>>(),
                    "automatic": l.automatic.iter()
                        .map(|b| json!({"address": b.address, "expires_at": b.expires_at}))
                        .collect::<Vec<_>>(),
                    "automatic_unavailable": l.automatic_unavailable,
                }),
            )?;
        }
    }
    Ok(())
}

fn expiry(at: i64) -> String {
    if at > 0 {
        output::timestamp(at)
    } else {
        "never".to_owned()
    }
}

fn manual_json(b: &pb::IpBlockInfo) -> Value {
    json!({
        "network": b.network, "reason": b.reason, "created_by": b.created_by,
        "created_at": b.created_at, "expires_at": b.expires_at,
    })
}
