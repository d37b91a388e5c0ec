//! Address blocks over the Admin API.

use tonic::Status;
use warden_proto::admin::v1 as pb;

use crate::domain::IpBlockRecord;
use crate::page::{PageKey, page_whole};
use crate::service::{Actor, ControlPlane};

pub(super) async fn block(
    cp: &ControlPlane,
    actor: Actor,
    r: pb::BlockIpRequest,
) -> Result<pb::IpBlockInfo, Status> {
    Ok(info(
        cp.block_ip(&actor, &r.network, r.duration_seconds, &r.reason)
            .await?,
    ))
}

pub(super) async fn unblock(
    cp: &ControlPlane,
    actor: Actor,
    r: pb::UnblockIpRequest,
) -> Result<pb::UnblockIpResponse, Status> {
    let u = cp.unblock_ip(&actor, &r.network).await?;
    Ok(pb::UnblockIpResponse {
        manual_removed: u.manual,
        automatic_lifted: u.automatic.as_ref().map_or(0, |n| *n),
        automatic_unavailable: u.automatic.err().unwrap_or_default(),
    })
}

pub(super) async fn list(
    cp: &ControlPlane,
    _: Actor,
    r: pb::ListIpBlocksRequest,
) -> Result<pb::ListIpBlocksResponse, Status> {
    let l = cp.ip_blocks().await?;
    let first = r.page_token.is_empty();
    let page = page_whole("ip_blocks", r.page_size, &r.page_token, l.manual, |b| {
        PageKey::name(b.cidr.clone())
    })?;
    // Automatic blocks (from Redis) come whole, on the first page only.
    let (automatic, automatic_unavailable) = match l.automatic {
        Ok(_) if !first => (Vec::new(), String::new()),
        Ok(blocks) => (
            blocks
                .into_iter()
                .map(|b| pb::AutomaticIpBlock {
                    address: b.addr,
                    expires_at: b.expires_at,
                })
                .collect(),
            String::new(),
        ),
        Err(why) => (Vec::new(), why),
    };
    Ok(pb::ListIpBlocksResponse {
        manual: page.items.into_iter().map(info).collect(),
        automatic,
        automatic_unavailable,
        next_page_token: page.next_token,
    })
}

fn info(b: IpBlockRecord) -> pb::IpBlockInfo {
    pb::IpBlockInfo {
        network: b.cidr,
        reason: b.reason,
        created_by: b.created_by,
        created_at: b.created_at,
        expires_at: b.expires_at.unwrap_or(0),
    }
}
