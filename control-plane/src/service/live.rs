//! The long-lived streams each credential holds open (`Sync.Watch`, `AuditStream.Subscribe`)
//! and the credentials this process has seen revoked. Revoking a credential cancels every
//! stream it opened at once; a stream checks [`LiveCredentials::is_revoked`] (a set
//! lookup, no store read) before each message it sends.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

/// Streams by credential id, and the ids revoked since this process started.
#[derive(Debug, Default)]
pub(super) struct LiveCredentials {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// One parent token per credential; each stream holds a child of it.
    streams: HashMap<String, CancellationToken>,
    revoked: HashSet<String>,
}

impl LiveCredentials {
    /// A token that is cancelled when `credential_id` is revoked; `None` when it already is.
    pub(super) fn open(&self, credential_id: &str) -> Option<CancellationToken> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.revoked.contains(credential_id) {
            return None;
        }
        // One entry per credential that ever opened a stream: bounded by the credentials.
        Some(
            inner
                .streams
                .entry(credential_id.to_owned())
                .or_default()
                .child_token(),
        )
    }

    /// Records `credential_id` revoked and cancels every stream it opened.
    pub(super) fn revoke(&self, credential_id: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.revoked.insert(credential_id.to_owned());
        if let Some(token) = inner.streams.remove(credential_id) {
            token.cancel();
        }
    }

    /// Whether `credential_id` was revoked through this process.
    pub(super) fn is_revoked(&self, credential_id: &str) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .revoked
            .contains(credential_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoking_cancels_every_stream_of_that_credential_only() {
        let live = LiveCredentials::default();
        let a1 = live.open("a").expect("live");
        let a2 = live.open("a").expect("live");
        let b = live.open("b").expect("live");
        live.revoke("a");
        assert!(a1.is_cancelled() && a2.is_cancelled());
        assert!(!b.is_cancelled());
        assert!(live.is_revoked("a") && !live.is_revoked("b"));
        assert!(
            live.open("a").is_none(),
            "a revoked credential opens no stream"
        );
    }
}
