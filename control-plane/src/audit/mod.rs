//! The tamper-evident audit chain (after AWS CloudTrail's log file integrity validation).
//!
//! Every audit row carries a position `seq` (1, 2, 3, …), the previous row's hash
//! `prev_hash` and its own `hash = SHA-256(prev_hash ‖ canonical(seq, row))`
//! ([`chain`] documents the encoding). The store assigns all three inside the transaction
//! that inserts the row, after locking the one-row chain head (`audit_chain_head`), so
//! concurrent appends from any number of tasks or control-plane replicas form one chain.
//! At an interval the control plane signs the head `(seq_upto, hash)` with Ed25519
//! ([`checkpoint::sign_checkpoint`]; [`jobs`] runs it on a schedule with a key of its own,
//! and runs retention).
//!
//! [`verify`] walks the rows in `seq` order and reports the first problem: a missing
//! position (deleted row), a row whose content no longer matches its hash (edited), a row
//! that does not belong between its neighbours (inserted), a row that links to a later one
//! (reordered), a checkpoint whose signature fails or whose hash differs from the chain
//! (rows rewritten with recomputed hashes), and rows missing at the tail or beyond the
//! head.
//!
//! Where to start reading: [`chain::canonical`], then [`verify`]. [`export`] renders a
//! record for SIEMs (JSON, OCSF, CEF); [`syslog`] forwards the chain to a syslog receiver
//! and [`jsonl`] writes it to a rotated local file, each following the chain with a
//! [`cursor`] in the store's `meta` table. [`jobs`] signs checkpoints and applies retention
//! on a schedule; its [`jobs::AuditConfig`] is the `[audit]` configuration table.
//!
//! # What the chain proves, and what it cannot
//!
//! Anyone with write access to the database can recompute hashes. Rows up to the latest
//! checkpoint are protected by its signature (the key stays with the control plane);
//! rows after it are protected only against careless edits until the next checkpoint. Sign
//! checkpoints often enough for that window to be acceptable. For the same reason the
//! public keys [`verify`] trusts come from the secret store ([`jobs::verification_keys`]),
//! never from the database.
//!
//! # Retention
//!
//! [`crate::store::StateStore::delete_audit_older_than`] deletes only a prefix of the chain
//! that ends exactly at a checkpoint, so the first remaining row always follows a signed
//! checkpoint: sign one ([`checkpoint::sign_checkpoint`]) right before deleting
//! ([`jobs::apply_retention`] does both). [`verify`] starts at the latest checkpoint before
//! the first remaining row (or before `from_seq`), checks that checkpoint's signature, and
//! walks on from its hash. Keep retired
//! checkpoint keys in the verifier's key set as long as rows signed under them remain.
//! Deleting rows up to a checkpoint looks exactly like retention; the report's
//! [`VerifyReport::anchor_seq`] says where verification started.
//!
//! # Rows written before the chain existed
//!
//! The `0002_audit_chain` migration keeps them as `audit_legacy`; each store chains them
//! (oldest first, by time then id) in one transaction the first time it opens the database
//! after the migration, then drops that table.

pub mod chain;
pub mod checkpoint;
pub mod cursor;
pub mod export;
pub mod group_commit;
pub mod jobs;
pub mod jsonl;
pub mod node_events;
pub mod syslog;

use std::collections::HashMap;

use crate::store::{StateStore, StoreError};

pub use chain::{
    AuditCheckpoint, AuditLink, ChainHead, ChainedAudit, GENESIS_HASH, canonical, link_hash,
};
pub use checkpoint::sign_checkpoint;

/// Errors signing or verifying (not problems found in the chain: see [`ChainProblem`]).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("malformed chain data: {0}")]
    Malformed(String),
}

/// The first thing [`verify`] found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainProblem {
    #[error("row {seq} is missing (deleted)")]
    Missing { seq: u64 },
    #[error("row {seq} was edited: its content does not match its hash")]
    Edited { seq: u64 },
    #[error("row {seq} was inserted: it does not belong between its neighbours")]
    Inserted { seq: u64 },
    #[error("rows were reordered: row {seq} links to row {follows_seq}, which comes after it")]
    Reordered { seq: u64, follows_seq: u64 },
    #[error(
        "row {seq} does not link to the row before it: rows before it were deleted and the rest renumbered, the previous row was rewritten, or row {seq} was forged"
    )]
    BrokenLink { seq: u64 },
    #[error("the chain head disagrees with row {seq}: the row or the head was rewritten")]
    HeadMismatch { seq: u64 },
    #[error("checkpoint at row {seq_upto} is signed with unknown key {key_id}")]
    UnknownCheckpointKey { seq_upto: u64, key_id: String },
    #[error("checkpoint at row {seq_upto} has a bad signature (key {key_id})")]
    BadCheckpointSignature { seq_upto: u64, key_id: String },
    #[error(
        "checkpoint at row {seq_upto} (key {key_id}) does not match the chain: rows after {since_seq} up to {seq_upto} were rewritten"
    )]
    CheckpointMismatch {
        seq_upto: u64,
        key_id: String,
        since_seq: u64,
    },
}

/// What [`verify`] checked, and the first problem if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Where the walk started: 0 for the genesis, else the `seq_upto` of the signed
    /// checkpoint it started from.
    pub anchor_seq: u64,
    /// The last row accepted (`anchor_seq` when none).
    pub last_seq: u64,
    pub rows_checked: u64,
    pub checkpoints_checked: u64,
    pub problem: Option<ChainProblem>,
}

impl VerifyReport {
    /// True when no problem was found.
    pub fn is_valid(&self) -> bool {
        self.problem.is_none()
    }
}

/// Rows read per page while walking.
const PAGE: u32 = 500;
/// Rows read past a broken link to tell an insertion from a reordering.
const LOOKAHEAD: u32 = 1000;

/// Checks one checkpoint against the known keys and the chain's hash at its position.
fn check_checkpoint(
    cp: &AuditCheckpoint,
    chain_hash: &str,
    since_seq: u64,
    public_keys: &HashMap<String, Vec<u8>>,
) -> Result<(), ChainProblem> {
    let Some(key) = public_keys.get(&cp.key_id) else {
        return Err(ChainProblem::UnknownCheckpointKey {
            seq_upto: cp.seq_upto,
            key_id: cp.key_id.clone(),
        });
    };
    if !checkpoint::signature_valid(cp, key) {
        return Err(ChainProblem::BadCheckpointSignature {
            seq_upto: cp.seq_upto,
            key_id: cp.key_id.clone(),
        });
    }
    if cp.hash != chain_hash {
        return Err(ChainProblem::CheckpointMismatch {
            seq_upto: cp.seq_upto,
            key_id: cp.key_id.clone(),
            since_seq,
        });
    }
    Ok(())
}

/// Verifies the chain from `from_seq` (from the oldest stored row when `None`) to its end,
/// with the checkpoints' signatures checked against `public_keys` (key id → raw 32-byte
/// Ed25519 public key). The walk starts at the latest signed checkpoint before the first row
/// to check (the genesis when there is none), so a request to start later still checks the
/// rows from that checkpoint on.
pub async fn verify(
    store: &dyn StateStore,
    public_keys: &HashMap<String, Vec<u8>>,
    from_seq: Option<u64>,
) -> Result<VerifyReport, AuditError> {
    // Order matters: checkpoints, then the head, then rows. A checkpoint never covers more
    // than the head read after it, and every row read was appended before the head read
    // after the walk.
    let checkpoints = store.list_checkpoints(0).await?;
    let head_before = store.audit_head().await?;
    let first_stored = store
        .list_audit_range(0, 1)
        .await?
        .first()
        .map_or(head_before.seq + 1, |r| r.seq);
    let start = from_seq.unwrap_or(0).max(first_stored).max(1);

    let anchor_seq = checkpoints
        .iter()
        .filter(|c| c.seq_upto < start)
        .map(|c| c.seq_upto)
        .max()
        .unwrap_or(0);
    let mut report = VerifyReport {
        anchor_seq,
        last_seq: anchor_seq,
        rows_checked: 0,
        checkpoints_checked: 0,
        problem: None,
    };

    // The anchor: every checkpoint at its position must verify and agree.
    let anchor_hash = match checkpoints.iter().find(|c| c.seq_upto == anchor_seq) {
        Some(first) => first.hash.clone(),
        None => GENESIS_HASH.to_owned(),
    };
    let mut pending = checkpoints
        .iter()
        .filter(|c| c.seq_upto >= anchor_seq)
        .peekable();
    while let Some(cp) = pending.next_if(|c| c.seq_upto == anchor_seq) {
        if let Err(p) = check_checkpoint(cp, &anchor_hash, anchor_seq, public_keys) {
            report.problem = Some(p);
            return Ok(report);
        }
        report.checkpoints_checked += 1;
    }

    let mut walker = chain::Walker::new(anchor_seq, &anchor_hash);
    let mut since_seq = anchor_seq;
    let mut next = anchor_seq + 1;
    loop {
        let page = store.list_audit_range(next, PAGE).await?;
        let Some(last) = page.last() else { break };
        next = last.seq + 1;
        for row in &page {
            match walker.check(row) {
                Ok(()) => report.rows_checked += 1,
                Err(chain::StepError::Problem(p)) => {
                    report.problem = Some(p);
                }
                Err(chain::StepError::BrokenLink) => {
                    let following = store.list_audit_range(row.seq + 1, LOOKAHEAD).await?;
                    report.problem = Some(walker.diagnose_link(row, &following));
                }
            }
            report.last_seq = walker.last_seq();
            if report.problem.is_some() {
                return Ok(report);
            }
            while let Some(cp) = pending.next_if(|c| c.seq_upto <= row.seq) {
                // Positions are contiguous here, so `seq_upto == row.seq`.
                if let Err(p) = check_checkpoint(cp, &row.hash, since_seq, public_keys) {
                    report.problem = Some(p);
                    return Ok(report);
                }
                report.checkpoints_checked += 1;
                since_seq = cp.seq_upto;
            }
        }
    }

    let head_after = store.audit_head().await?;
    let last_seq = walker.last_seq();
    report.problem = if pending.peek().is_some() || last_seq < head_before.seq {
        // A checkpoint or the head covers rows that are gone: the tail was deleted.
        Some(ChainProblem::Missing { seq: last_seq + 1 })
    } else if last_seq > head_after.seq {
        Some(ChainProblem::Inserted {
            seq: head_after.seq + 1,
        })
    } else if last_seq == head_after.seq && walker.last_hash() != head_after.hash {
        Some(ChainProblem::HeadMismatch { seq: last_seq })
    } else {
        None
    };
    Ok(report)
}
