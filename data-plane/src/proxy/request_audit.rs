//! The audit event of a model request: opened when the request arrives (who, from where,
//! what: [`RequestAudit::open`]) and written exactly once, with the outcome —
//!
//! - refused before any answer: [`RequestAudit::rejected`];
//! - answered: [`RequestAudit::answered`] records where the request went, and
//!   [`AnsweredRequest::finish`] writes the event when the body has ended (for a pumped
//!   body, with the usage as billed);
//! - the client went away before the answer began (which drops the handler's future): the
//!   [`RequestAudit`]'s `Drop`.
//!
//! All three go through one function, `write`. A failed authentication is not a request
//! event: it goes to the failed-login accounting ([`auth_failed`], [`super::failed_logins`]),
//! which audits an address's first failure at once and the rest as one `auth.client` event
//! per (address, reason) per window with the count ([`summarize_failed_logins`], and
//! [`flush_failed_logins`] at shutdown).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, header};
use tokio_util::sync::CancellationToken;
use warden_core::audit_detail::{self, Detail};

use super::Endpoint;
use super::failed_logins::{Recorded, Summary};
use super::pump::Settled;
use crate::auth::AuthFailure;
use crate::error::ApiError;
use crate::ip_block::NewBlock;
use crate::state::AppState;

/// Room made for a request's detail up front (a completed request's is some 300 bytes), so
/// that it is not grown pair by pair.
const DETAIL_CAPACITY: usize = 512;

/// A request's audit event until its outcome is known. Dropped before then, it records the
/// request as abandoned by the client.
pub struct RequestAudit {
    state: Arc<AppState>,
    /// `None` once handed on.
    detail: Option<Detail>,
    started: Instant,
}

/// Where an answered request went.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// The credential used, obfuscated.
    pub credential: &'a str,
    pub provider: &'a str,
    pub model_served: &'a str,
    pub fallback: bool,
    /// Fingerprint of the upstream key used; empty when none was.
    pub key_fingerprint: &'a str,
    pub status: StatusCode,
}

/// How an answer's body ended.
#[derive(Debug, Clone)]
pub enum BodyEnd {
    /// Handed over whole (the built-in echo provider).
    Whole,
    /// Pumped to its end: what it used and how it ended.
    Pumped(Settled),
    /// Pumped, but the pump ended without a report.
    Unreported,
}

impl RequestAudit {
    /// Opens the event of request `request_id`, received at `started`.
    pub fn open(
        state: &Arc<AppState>,
        request_id: &str,
        endpoint: Endpoint,
        peer: Option<IpAddr>,
        headers: &HeaderMap,
        started: Instant,
    ) -> Self {
        let user_agent = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(200).collect::<String>());
        let detail = Detail::with_capacity(DETAIL_CAPACITY)
            .with("request_id", request_id)
            .with("endpoint", endpoint.path())
            .with_opt(
                "client_ip",
                peer.map(|p| audit_detail::client_ip(p, state.audit_mask_client_ip)),
            )
            .with_opt("user_agent", user_agent);
        Self {
            state: Arc::clone(state),
            detail: Some(detail),
            started,
        }
    }

    /// Adds `key=value` to the event's detail (what the DLP rules found).
    pub fn note(&mut self, key: &str, value: impl std::fmt::Display) {
        if let Some(d) = self.detail.as_mut() {
            d.push(key, value);
        }
    }

    /// The request was refused with `error`. `principal` is empty before authentication
    /// succeeded, `model` before the body was parsed.
    pub fn rejected(mut self, principal: String, model: String, error: &ApiError) {
        let detail = self
            .detail
            .take()
            .unwrap_or_default()
            .with("status", error.status().as_u16())
            .with("error", error.metric_label());
        let actor = if principal.is_empty() {
            "-".to_owned()
        } else {
            principal
        };
        write(&self.state, actor, model, "failure", detail, self.started);
    }

    /// The answer began; the event is written when its body ends.
    pub fn answered(mut self, principal: String, model: String, a: Answer<'_>) -> AnsweredRequest {
        let detail = self
            .detail
            .take()
            .unwrap_or_default()
            .with("credential", a.credential)
            .with("provider", a.provider)
            .with("model_served", a.model_served)
            .with("fallback", a.fallback)
            .with_opt(
                "upstream_key_fp",
                (!a.key_fingerprint.is_empty()).then_some(a.key_fingerprint),
            )
            .with("status", a.status.as_u16());
        AnsweredRequest {
            _pending: self.state.audit.pending_event(),
            state: Arc::clone(&self.state),
            detail,
            started: self.started,
            principal,
            model,
            ok: a.status.is_success(),
        }
    }
}

impl RequestAudit {
    /// The request failed its authentication, or was refused before it: its event is the
    /// failed-login accounting's ([`auth_failed`]), not a request event.
    pub fn to_failed_logins(mut self) {
        self.detail = None;
    }
}

impl Drop for RequestAudit {
    fn drop(&mut self) {
        if let Some(detail) = self.detail.take() {
            write(
                &self.state,
                "-".to_owned(),
                String::new(),
                "incomplete",
                detail.with("outcome", "client_disconnected"),
                self.started,
            );
        }
    }
}

/// The event of a request whose answer began, until its body ends.
pub struct AnsweredRequest {
    state: Arc<AppState>,
    detail: Detail,
    started: Instant,
    principal: String,
    model: String,
    /// Whether the answer's status is a success.
    ok: bool,
    /// Keeps the shutdown's audit drain waiting until this event is written.
    _pending: crate::audit::PendingEvent,
}

impl AnsweredRequest {
    /// Writes the event: `ok` when a successful answer completed, `incomplete` when it was
    /// cut short, `failure` for an error answer.
    pub fn finish(self, end: BodyEnd) {
        let (detail, completed) = match end {
            BodyEnd::Whole => (self.detail, true),
            BodyEnd::Pumped(s) => (
                self.detail
                    .with("tokens_in", s.prompt_tokens)
                    .with("tokens_out", s.completion_tokens)
                    .with("cost_usd", format_usd(s.cost_micros))
                    .with("outcome", s.outcome)
                    .with_opt(
                        "dlp_response",
                        s.dlp.as_ref().filter(|f| !f.is_empty()).map(|f| f.counts()),
                    ),
                s.outcome == "completed",
            ),
            BodyEnd::Unreported => (self.detail.with("outcome", "unknown"), false),
        };
        let result = match (self.ok, completed) {
            (true, true) => "ok",
            (true, false) => "incomplete",
            (false, _) => "failure",
        };
        write(
            &self.state,
            self.principal,
            self.model,
            result,
            detail,
            self.started,
        );
    }
}

/// Writes a request's event: the one place it is emitted.
fn write(
    state: &AppState,
    actor: String,
    subject: String,
    result: &'static str,
    detail: Detail,
    started: Instant,
) {
    state.audit.emit(
        "request",
        actor,
        subject,
        result.to_owned(),
        detail
            .with("latency_ms", started.elapsed().as_millis())
            .build(),
    );
}

/// Records a failed authentication of request `request_id` at `endpoint` from `peer` (the
/// reason and a fingerprint of what was presented, never the credential) in the failed-login
/// accounting; the address's first failure is audited at once, with the request's id and
/// the client's address (a request without a known address, every time).
pub fn auth_failed(
    state: &AppState,
    failure: AuthFailure,
    endpoint: &str,
    request_id: &str,
    peer: Option<IpAddr>,
) {
    let first = match peer {
        Some(peer) => {
            let (recorded, closed) =
                state
                    .failed_logins
                    .record(peer, failure.reason, Instant::now());
            failed_login_summaries(state, closed);
            ip_failure(state, peer);
            recorded == Recorded::First
        }
        None => true,
    };
    if !first {
        return;
    }
    let detail = Detail::new()
        .with("reason", failure.reason)
        .with("request_id", request_id)
        .with_opt(
            "client_ip",
            peer.map(|p| audit_detail::client_ip(p, state.audit_mask_client_ip)),
        );
    state.audit.emit(
        "auth.client",
        failure.presented,
        endpoint.to_owned(),
        "denied".to_owned(),
        detail.build(),
    );
}

/// Counts a failed login (or a refusal of the throttle) from `addr` towards an automatic
/// block, and audits the block it sets on this node, if any.
pub fn ip_failure(state: &AppState, addr: std::net::IpAddr) {
    let healthy = state.redis.as_ref().is_some_and(|l| l.is_healthy());
    if let Some(block) = state.ip_blocks.failure(addr, healthy) {
        ip_blocked(state, &block);
    }
}

/// Audits the summaries of closed failed-login windows: one `auth.client` event per
/// (address, reason), actor `-` (many credentials may have been presented), with `count`
/// (failed logins after the address's first, the refused ones included) and `throttled`
/// (of them, refused with 429 before any lookup).
pub fn failed_login_summaries(state: &AppState, summaries: Vec<Summary>) {
    for s in summaries {
        let detail = Detail::new()
            .with("reason", s.reason)
            .with("client_ip", s.client_ip)
            .with("count", s.count)
            .with("throttled", s.throttled)
            .with("window", humantime::format_duration(s.window));
        state.audit.emit(
            "auth.client",
            "-".to_owned(),
            String::new(),
            "denied".to_owned(),
            detail.build(),
        );
    }
}

/// Audits an automatic block this node set: one `edge.ip_blocked` event (actor `-`), with
/// the address (masked per `--audit-mask-client-ip`; an IPv6 block is its /64), the failed
/// logins counted, the window, the expiry, and whether the count was shared through Redis.
/// Requests refused while blocked are only counted (a metric), never audited one by one.
pub fn ip_blocked(state: &AppState, block: &NewBlock) {
    metrics::counter!(crate::metrics::IP_BLOCKS).increment(1);
    let client_ip = match block.addr {
        std::net::IpAddr::V6(_) if !state.audit_mask_client_ip => format!("{}/64", block.addr),
        addr => audit_detail::client_ip(addr, state.audit_mask_client_ip),
    };
    let expires_at = std::time::UNIX_EPOCH + Duration::from_millis(block.expires_at_ms);
    tracing::warn!(client_ip = %client_ip, count = block.count, "client address blocked after failed logins");
    let detail = Detail::new()
        .with("client_ip", client_ip.as_str())
        .with("count", block.count)
        .with("window", humantime::format_duration(block.window))
        .with(
            "expires_at",
            humantime::format_rfc3339_seconds(expires_at).to_string(),
        )
        .with("shared", if block.shared { "redis" } else { "node" });
    state.audit.emit(
        "edge.ip_blocked",
        "-".to_owned(),
        client_ip,
        "blocked".to_owned(),
        detail.build(),
    );
}

/// Closes the failed-login windows as they end, until `shutdown`.
pub async fn summarize_failed_logins(state: Arc<AppState>, shutdown: CancellationToken) {
    let every = (state.failed_logins.window() / 10)
        .clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                failed_login_summaries(&state, state.failed_logins.close_due(Instant::now()));
            }
        }
    }
}

/// Audits the counts of every open failed-login window (at shutdown, once no request is
/// served any more, before the audit queue is drained).
pub fn flush_failed_logins(state: &AppState) {
    failed_login_summaries(state, state.failed_logins.flush());
}

/// Micro-USD as a decimal USD amount (`0.000123`).
fn format_usd(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}
