//! Group commit of the nodes' audit batches: batches that arrive while an append is in
//! flight wait for it, then go together in the next one ([`StateStore::append_audit_new`]:
//! one transaction, one multi-row insert, redeliveries left out).
//!
//! An append holds the audit chain's head until it commits, so appends run one after the
//! other however many nodes deliver; with a commit costing a WAL flush (milliseconds on a
//! busy disk), one transaction per node batch would cap the events per second at the
//! batch size over that flush. Here the flush is shared by every batch that queued
//! behind the previous append, so throughput grows with the number of delivering nodes.
//! A caller is answered only after the append holding its batch committed (or failed:
//! then every batch of that group fails and each node retries its own).
//!
//! There is no background task: the first caller to get the turn appends what is queued
//! (in a spawned task that keeps the turn, so that a caller that goes away mid-append
//! cannot strand the batches it took), and a caller whose batch is still queued after
//! that takes the next turn itself.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::domain::AuditRecord;
use crate::store::StateStore;

/// Most events one grouped append takes (a caller's batch always goes whole).
pub const MAX_GROUP_EVENTS: usize = 5_000;

/// What an append did for a caller's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The chain's `seq` after the group's append; `None` when it appended nothing (every
    /// event of the group was stored already).
    pub last_seq: Option<u64>,
    /// Whether this caller's batch was the group's first: that caller tells the other
    /// replicas (one notification per group).
    pub first_in_group: bool,
}

type Outcome = Result<Appended, String>;

struct Queued {
    records: Vec<AuditRecord>,
    done: oneshot::Sender<Outcome>,
}

/// The queue of batches waiting for the next append, and the turn to run it.
#[derive(Default)]
pub struct GroupCommit {
    queued: Mutex<Vec<Queued>>,
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// Appends `records` (in order, ids already stored left out) in the next grouped
    /// append to `store`, and returns once it committed; `Err` (the store's error, in
    /// words) when it did not.
    pub async fn append(
        &self,
        store: &Arc<dyn StateStore>,
        records: Vec<AuditRecord>,
    ) -> Result<Appended, String> {
        let (done, mut outcome) = oneshot::channel();
        self.lock_queue().push(Queued { records, done });
        loop {
            let turn = Arc::clone(&self.turn).lock_owned().await;
            // No append is in flight now: ours has run, or it is still queued.
            match outcome.try_recv() {
                Ok(result) => return result,
                Err(oneshot::error::TryRecvError::Closed) => {
                    return Err("the audit append ended without an answer".to_owned());
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let group = self.take_group();
            let store = Arc::clone(store);
            tokio::spawn(async move {
                let _turn = turn;
                run_group(store.as_ref(), group).await;
            });
        }
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Vec<Queued>> {
        self.queued.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The oldest queued batches, up to [`MAX_GROUP_EVENTS`] (at least one batch).
    fn take_group(&self) -> Vec<Queued> {
        let mut queued = self.lock_queue();
        let mut events = 0;
        let mut n = 0;
        for q in queued.iter() {
            if n > 0 && events + q.records.len() > MAX_GROUP_EVENTS {
                break;
            }
            events += q.records.len();
            n += 1;
        }
        queued.drain(..n).collect()
    }
}

/// Appends `group`'s batches as one and answers each caller.
async fn run_group(store: &dyn StateStore, group: Vec<Queued>) {
    let mut records = Vec::with_capacity(group.iter().map(|q| q.records.len()).sum());
    let mut callers = Vec::with_capacity(group.len());
    for q in group {
        records.extend(q.records);
        callers.push(q.done);
    }
    let outcome = match store.append_audit_new(&records).await {
        Ok(links) => Ok(links.last().map(|l| l.seq)),
        Err(e) => {
            tracing::error!(error = %e, events = records.len(), batches = callers.len(), "could not append node audit events; the nodes retry");
            Err(e.to_string())
        }
    };
    for (i, done) in callers.into_iter().enumerate() {
        // A caller that went away needs no answer.
        let _ = done.send(outcome.clone().map(|last_seq| Appended {
            last_seq,
            first_in_group: i == 0,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(n: usize) -> Queued {
        Queued {
            records: vec![
                AuditRecord {
                    id: String::new(),
                    timestamp_ms: 0,
                    action: String::new(),
                    actor: String::new(),
                    subject: String::new(),
                    result: String::new(),
                    detail: String::new(),
                };
                n
            ],
            done: oneshot::channel().0,
        }
    }

    #[test]
    fn a_group_takes_the_oldest_batches_up_to_the_cap_and_always_one() {
        let g = GroupCommit::default();
        g.lock_queue()
            .extend([queued(3000), queued(1500), queued(1000), queued(6000)]);
        let sizes = |v: Vec<Queued>| v.iter().map(|q| q.records.len()).collect::<Vec<_>>();
        assert_eq!(sizes(g.take_group()), [3000, 1500]);
        assert_eq!(sizes(g.take_group()), [1000]);
        assert_eq!(
            sizes(g.take_group()),
            [6000],
            "a batch over the cap goes alone"
        );
        assert!(g.take_group().is_empty());
    }
}
