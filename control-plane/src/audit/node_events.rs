//! What a node may put into the audit log, decided here and nowhere else.
//!
//! A node delivers its events over `Sync.PublishAudit`; a compromised node must not be able
//! to write rows that look like the control plane's own (`token.revoke`, `auth.admin`, …),
//! claim an admin or another node as the actor, hide rows from time-bounded queries with a
//! far-future or far-past timestamp, or flood the store. So every delivered event is held
//! to these rules:
//!
//! | action | allowed actors |
//! |---|---|
//! | `request` | the client credential kinds: `jwt:<sub>`, `vkey:<id>`, `-` (not authenticated) |
//! | `auth.client` | `fp:<fingerprint>` of what was presented, `-` (nothing presented, or a window's count of failures from one address) |
//! | `edge.*` (blocks, DLP: later issues add them) | the client credential kinds, `fp:…`, `-` |
//! | `node.*` (the node's own events: `node.audit_quarantine`, `node.dangerous_settings`, staleness) | `node:<id>`, `-` |
//! | `config.reload` (the node's SIGHUP reload) | `node:<id>`, `-` |
//!
//! except the `node.*` actions the control plane writes itself ([`RESERVED`]). An event
//! outside the rules refuses its whole batch with `InvalidArgument` naming the event id, so
//! that the node splits the batch and quarantines that one record; nothing of a refused
//! batch is stored. The details keys the control plane adds (`node`, `node_credential`,
//! `node_time_ms`) may not be set by the node.
//!
//! Timestamps are clamped into `[now − CLOCK_SKEW, now]` ([`clamp_timestamp`]); the node's
//! own time stays in the detail as `node_time_ms` when it was moved. Every row is therefore
//! stamped no later than it was appended and no more than [`CLOCK_SKEW_MS`] earlier, which
//! lets `audit query --until T` stop at the first row at or after `T + CLOCK_SKEW`
//! (`grpc::audit`). A spool replayed after an outage keeps its order (by `seq`, the order
//! of delivery) and its node times.
//!
//! [`IngestQuota`] limits how many events per second each node credential may deliver
//! (`[audit] node_ingest_rate`, `node_ingest_burst`); over it the node gets
//! `ResourceExhausted` and retries with backoff.

use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::domain::AuditRecord;

/// How far a node's clock may be from the control plane's (and how long a delivered event
/// may have waited in the node's spool) before its timestamp is moved.
pub const CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// `node.*` actions only the control plane writes.
pub const RESERVED: &[&str] = &["node.connect", "node.list", "node.event_refused"];

/// Detail keys the control plane adds to a node's event.
pub const CONTROL_PLANE_KEYS: &[&str] = &["node", "node_credential", "node_time_ms"];

/// Default events per second each node credential may deliver.
pub const DEFAULT_RATE: u32 = 5_000;
/// Default burst: a node's spool catching up after an outage sends at most this many
/// events at once before being held to the rate.
pub const DEFAULT_BURST: u32 = 20_000;
/// The largest batch a node may send (`Sync.PublishAudit`); the burst must admit one.
pub const MAX_BATCH: u32 = 1_000;

/// Why an event was refused (safe to return to the node: it names only the rule).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("action `{0}` may not be submitted by a node")]
    Action(String),
    #[error("actor `{actor}` is not a credential kind allowed for action `{action}`")]
    Actor { action: String, actor: String },
    #[error("detail sets `{0}`, which only the control plane writes")]
    DetailKey(String),
    #[error("malformed event id")]
    Id,
}

/// The actor kinds allowed for `action`, or why the action is refused.
fn actor_kinds(action: &str) -> Result<&'static [&'static str], Refusal> {
    const CLIENT: &[&str] = &["jwt:", "vkey:"];
    const PRESENTED: &[&str] = &["fp:"];
    const CLIENT_OR_PRESENTED: &[&str] = &["jwt:", "vkey:", "fp:"];
    const NODE: &[&str] = &["node:"];
    let family = |prefix: &str| {
        action.strip_prefix(prefix).is_some_and(|rest| {
            !rest.is_empty()
                && rest.split('.').all(|part| {
                    !part.is_empty()
                        && part
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                })
        })
    };
    match action {
        "request" => Ok(CLIENT),
        "auth.client" => Ok(PRESENTED),
        "config.reload" => Ok(NODE),
        a if RESERVED.contains(&a) => Err(Refusal::Action(a.to_owned())),
        _ if family("node.") => Ok(NODE),
        _ if family("edge.") => Ok(CLIENT_OR_PRESENTED),
        a => Err(Refusal::Action(a.chars().take(64).collect())),
    }
}

/// Checks one delivered event against the rules (module docs).
pub fn check(event: &AuditRecord) -> Result<(), Refusal> {
    if event.id.is_empty()
        || event.id.len() > 64
        || !event
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err(Refusal::Id);
    }
    if event.action.len() > 64 {
        return Err(Refusal::Action(event.action.chars().take(64).collect()));
    }
    let kinds = actor_kinds(&event.action)?;
    let actor = event.actor.as_str();
    let allowed = actor == "-"
        || kinds.iter().any(|kind| {
            // What follows the kind is the node's to fill (a JWT subject is any text an
            // admin chose); exports escape it.
            actor
                .strip_prefix(kind)
                .is_some_and(|rest| !rest.is_empty())
        });
    if !allowed || actor.len() > 256 {
        return Err(Refusal::Actor {
            action: event.action.clone(),
            actor: actor.chars().take(64).collect(),
        });
    }
    if may_set_control_plane_key(&event.detail) {
        let pairs = warden_core::audit_detail::parse(&event.detail);
        if let Some(key) = CONTROL_PLANE_KEYS.iter().find(|k| pairs.contains_key(**k)) {
            return Err(Refusal::DetailKey((*key).to_owned()));
        }
    }
    Ok(())
}

/// Cuts `s` to its first `max` characters, in place (no copy when it is shorter).
pub fn truncate_chars(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    if let Some((at, _)) = s.char_indices().nth(max) {
        s.truncate(at);
    }
}

/// Whether `detail` could hold one of [`CONTROL_PLANE_KEYS`]: a parsed key `k` is the text
/// before an `=`, so `k=` occurs in the detail. Most details hold none, and are then not
/// parsed at all (a parse builds a map of every pair: a tenth of the control plane's CPU
/// per node event).
fn may_set_control_plane_key(detail: &str) -> bool {
    CONTROL_PLANE_KEYS.iter().any(|key| {
        detail
            .match_indices(key)
            .any(|(at, _)| detail.as_bytes().get(at + key.len()) == Some(&b'='))
    })
}

/// `node_time_ms` moved into `[now_ms − CLOCK_SKEW_MS, now_ms]`; `None` when it is already
/// inside.
pub fn clamp_timestamp(node_time_ms: i64, now_ms: i64) -> Option<i64> {
    let clamped = node_time_ms.clamp(now_ms.saturating_sub(CLOCK_SKEW_MS), now_ms);
    (clamped != node_time_ms).then_some(clamped)
}

/// A bad `[audit] node_ingest_*` setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit.{field}: {message}")]
pub struct QuotaError {
    pub field: &'static str,
    pub message: String,
}

/// Events per second and burst per node credential (see the module docs).
pub struct IngestQuota {
    limiter: RwLock<Arc<DefaultKeyedRateLimiter<String>>>,
}

impl std::fmt::Debug for IngestQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestQuota").finish_non_exhaustive()
    }
}

/// Checks `[audit] node_ingest_rate` and `node_ingest_burst`.
pub fn validate_quota(rate: u32, burst: u32) -> Result<Quota, QuotaError> {
    let rate = NonZeroU32::new(rate).ok_or_else(|| QuotaError {
        field: "node_ingest_rate",
        message: "must be at least 1".to_owned(),
    })?;
    let burst = NonZeroU32::new(burst)
        .filter(|b| b.get() >= MAX_BATCH)
        .ok_or_else(|| QuotaError {
            field: "node_ingest_burst",
            message: format!("must be at least {MAX_BATCH} (one full batch)"),
        })?;
    Ok(Quota::per_second(rate).allow_burst(burst))
}

fn limiter(rate: u32, burst: u32) -> Result<DefaultKeyedRateLimiter<String>, QuotaError> {
    Ok(RateLimiter::keyed(validate_quota(rate, burst)?))
}

impl Default for IngestQuota {
    fn default() -> Self {
        let fallback = || RateLimiter::keyed(Quota::per_second(NonZeroU32::MIN));
        Self {
            limiter: RwLock::new(Arc::new(
                limiter(DEFAULT_RATE, DEFAULT_BURST).unwrap_or_else(|_| fallback()),
            )),
        }
    }
}

impl IngestQuota {
    /// Replaces the quota (every credential starts with a full burst).
    pub fn configure(&self, rate: u32, burst: u32) -> Result<(), QuotaError> {
        let fresh = Arc::new(limiter(rate, burst)?);
        if let Ok(mut l) = self.limiter.write() {
            *l = fresh;
        }
        Ok(())
    }

    /// Takes `events` from `credential_id`'s allowance; false when over the quota.
    pub fn take(&self, credential_id: &str, events: usize) -> bool {
        let Some(n) = u32::try_from(events).ok().and_then(NonZeroU32::new) else {
            return true;
        };
        let Ok(limiter) = self.limiter.read().map(|l| Arc::clone(&l)) else {
            return false;
        };
        let key = credential_id.to_owned();
        let allowed = matches!(limiter.check_key_n(&key, n), Ok(Ok(())));
        if limiter.len() > 10_000 {
            limiter.retain_recent();
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: &str, actor: &str, detail: &str) -> AuditRecord {
        AuditRecord {
            id: "0193-abc".into(),
            timestamp_ms: 0,
            action: action.into(),
            actor: actor.into(),
            subject: String::new(),
            result: "ok".into(),
            detail: detail.into(),
        }
    }

    #[test]
    fn what_nodes_emit_today_passes() {
        for (action, actor) in [
            ("request", "jwt:svc"),
            ("request", "jwt:user@example.com"),
            ("request", "vkey:vk_1234****cdef"),
            ("request", "-"),
            ("auth.client", "fp:0123456789ab"),
            ("auth.client", "-"),
            ("node.audit_quarantine", "node:node-a"),
            ("node.dangerous_settings", "-"),
            ("node.stale", "node:n1"),
            ("config.reload", "node:n1"),
            ("edge.block", "vkey:vk_1234****cdef"),
            ("edge.dlp.redacted", "jwt:svc"),
        ] {
            assert_eq!(
                check(&event(action, actor, "status=200")),
                Ok(()),
                "{action} {actor}"
            );
        }
    }

    #[test]
    fn failed_login_counts_pass() {
        let count = "reason=jwt_malformed client_ip=192.0.2.7 count=99 throttled=80 window=1m";
        assert_eq!(check(&event("auth.client", "-", count)), Ok(()));
        let first = "reason=jwt_malformed request_id=0193-abc client_ip=192.0.2.7";
        assert_eq!(
            check(&event("auth.client", "fp:0123456789ab", first)),
            Ok(())
        );
    }

    #[test]
    fn admin_actions_and_forged_actors_are_refused() {
        for (action, actor) in [
            ("token.revoke", "admin:wa_x"),
            ("token.revoke", "jwt:svc"),
            ("auth.admin", "-"),
            ("node.connect", "node:x"),
            ("node.event_refused", "-"),
            ("node.", "-"),
            ("node.Bad", "-"),
            ("edge..x", "-"),
            (&format!("node.{}", "a".repeat(64)), "-"),
            ("request", "admin:wa_1234"),
            ("request", "system:config"),
            ("request", "node:n1"),
            ("request", "jwt:"),
            ("auth.client", "jwt:svc"),
            ("node.stale", "jwt:svc"),
        ] {
            assert!(
                check(&event(action, actor, "")).is_err(),
                "{action} {actor}"
            );
        }
    }

    #[test]
    fn control_plane_detail_keys_are_refused() {
        assert_eq!(
            check(&event("request", "-", "status=200 node=other")),
            Err(Refusal::DetailKey("node".into()))
        );
        assert!(check(&event("request", "-", "node_time_ms=1")).is_err());
        assert_eq!(
            check(&event("request", "-", "a=1  node_credential=\"x y\"")),
            Err(Refusal::DetailKey("node_credential".into()))
        );
        // The text `node=` inside a quoted value is no key; free text is one `message`.
        assert_eq!(
            check(&event("request", "-", "msg=\"node=x\" status=200")),
            Ok(())
        );
        assert_eq!(check(&event("request", "-", "free text, node=x")), Ok(()));
        assert_eq!(
            check(&event("request", "-", "nodes=3 node_x=1 status=200")),
            Ok(())
        );
    }

    #[test]
    fn truncation_counts_characters_not_bytes() {
        let cut = |s: &str, n| {
            let mut s = s.to_owned();
            truncate_chars(&mut s, n);
            s
        };
        assert_eq!(cut("abc", 2), "ab");
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("", 0), "");
        assert_eq!(cut("héé", 2), "hé");
        assert_eq!(cut("ééé", 2), "éé");
        assert_eq!(cut("ééé", 3), "ééé");
        let long = "é".repeat(3000);
        assert_eq!(
            cut(&long, 2048),
            long.chars().take(2048).collect::<String>()
        );
    }

    #[test]
    fn the_pre_filter_misses_no_key_the_parse_finds() {
        for detail in [
            "node=a",
            "x=1 node=a",
            "node_time_ms=1 x=2",
            "x=\"node=\" node_credential=c",
            "request_id=r status=200 provider=mock",
            "",
        ] {
            let parsed = warden_core::audit_detail::parse(detail);
            let has = CONTROL_PLANE_KEYS.iter().any(|k| parsed.contains_key(*k));
            assert!(!has || may_set_control_plane_key(detail), "{detail}");
        }
        assert!(!may_set_control_plane_key(
            "request_id=r endpoint=/v1/chat/completions status=200 nodes=2"
        ));
    }

    #[test]
    fn timestamps_are_clamped_into_the_window() {
        let now = 1_000_000_000;
        assert_eq!(clamp_timestamp(now - 1000, now), None);
        assert_eq!(clamp_timestamp(now + 86_400_000, now), Some(now));
        assert_eq!(clamp_timestamp(0, now), Some(now - CLOCK_SKEW_MS));
        assert_eq!(clamp_timestamp(i64::MIN, now), Some(now - CLOCK_SKEW_MS));
    }

    #[test]
    fn quota_is_per_credential_and_refuses_bad_settings() {
        let q = IngestQuota::default();
        q.configure(1, 1000).unwrap();
        assert!(q.take("a", 1000));
        assert!(!q.take("a", 1));
        assert!(q.take("b", 1000));
        assert!(q.configure(0, 1000).is_err());
        assert!(q.configure(10, 999).is_err());
    }
}
