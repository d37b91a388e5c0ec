//! SIEM export formats for audit records: one record rendered as a line of JSON, as an
//! OCSF 1.3 *API Activity* event (class 6003) or as an ArcSight CEF line.
//!
//! Everything here is pure (no I/O) and works on [`ExportRecord`], a borrowed view that
//! both a stored [`ChainedAudit`] and a record received over gRPC (`wardenctl audit tail`)
//! can be turned into, so the control plane's syslog forwarder ([`super::syslog`]) and the
//! CLI render identical bytes. Start reading at [`render`].
//!
//! # How a record maps
//!
//! | record          | JSON           | OCSF                              | CEF                      |
//! |-----------------|----------------|-----------------------------------|--------------------------|
//! | `seq`           | `seq`          | `unmapped.seq`                    | `cn1` (`cn1Label=seq`)   |
//! | `id`            | `id`           | `metadata.uid`                    | `externalId`             |
//! | `timestamp_ms`  | `timestamp_ms` | `time` (ms)                       | `rt` (ms)                |
//! | `action`        | `action`       | `api.operation`, `activity_id`    | signature id, `act`      |
//! | `actor`         | `actor`        | `actor.user.name`                 | `suser`                  |
//! | `subject`       | `subject`      | `resources[0].name`               | `cs1` (`cs1Label=subject`)|
//! | `result`        | `result`       | `status_code`, `status_id`, `severity_id` | `cs2` (`cs2Label=result`), `outcome`, severity |
//! | `detail`        | `detail`       | `message`                         | `msg`                    |
//! | `prev_hash`     | `prev_hash`    | `unmapped.prev_hash`              | —                        |
//! | `hash`          | `hash`         | `unmapped.hash`                   | `cs3` (`cs3Label=hash`)  |
//! | client IP       | —              | `src_endpoint.ip`                 | `src` (IPv4) or `c6a2` (IPv6) |
//!
//! Records have no client-IP column: [`ExportRecord::client_ip`] is taken from a
//! `client_ip=<address>` pair in `detail` when there is one (no producer writes it yet).
//! OCSF requires `src_endpoint` and its object needs at least one of `ip`, `name`, …: a
//! record without an IP gets `{"name": "unknown"}`. The `cloud` attribute belongs to OCSF's
//! optional cloud profile, which these events do not declare, so it is left out.
//!
//! # Outcome and severity
//!
//! [`Outcome::of`] sorts the free-form `result` into success (`ok`, `success`, HTTP 1xx–3xx),
//! denied (`denied`, `unauthenticated`, `permission_denied`, `disabled`, HTTP 401/403),
//! unknown (empty) and failure (anything else: error labels, other HTTP statuses). Each
//! outcome has one severity per format ([`Outcome::ocsf_severity_id`],
//! [`Outcome::cef_severity`], [`Outcome::syslog_severity`]).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ChainedAudit;
use crate::domain::AuditRecord;

/// The OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.3.0";
/// Product and vendor name in OCSF metadata and the CEF header.
pub const PRODUCT: &str = "Warden";
/// The product version in OCSF metadata and the CEF header.
pub const PRODUCT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A SIEM format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// One JSON object per line with the record's own field names.
    #[default]
    Json,
    /// OCSF 1.3 API Activity (class 6003), one JSON object per line.
    Ocsf,
    /// ArcSight Common Event Format, version 0.
    Cef,
}

impl ExportFormat {
    /// The name accepted by [`FromStr`] and in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Ocsf => "ocsf",
            Self::Cef => "cef",
        }
    }
}

impl fmt::Display for ExportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A format name that is not `json`, `ocsf` or `cef`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown export format {0:?} (expected json, ocsf or cef)")]
pub struct UnknownFormat(pub String);

impl FromStr for ExportFormat {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "ocsf" => Ok(Self::Ocsf),
            "cef" => Ok(Self::Cef),
            _ => Err(UnknownFormat(s.to_owned())),
        }
    }
}

/// The fields of one audit record as the export formats see them. `seq`, `prev_hash` and
/// `hash` are `None` for a record that is not (or not known to be) in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportRecord<'a> {
    pub seq: Option<u64>,
    pub id: &'a str,
    pub timestamp_ms: i64,
    pub action: &'a str,
    pub actor: &'a str,
    pub subject: &'a str,
    pub result: &'a str,
    pub detail: &'a str,
    pub prev_hash: Option<&'a str>,
    pub hash: Option<&'a str>,
    /// The client's address, when the event knows it.
    pub client_ip: Option<IpAddr>,
}

impl<'a> ExportRecord<'a> {
    /// A record without its chain position; the client IP is read from `detail`.
    pub fn unchained(r: &'a AuditRecord) -> Self {
        Self {
            seq: None,
            id: &r.id,
            timestamp_ms: r.timestamp_ms,
            action: &r.action,
            actor: &r.actor,
            subject: &r.subject,
            result: &r.result,
            detail: &r.detail,
            prev_hash: None,
            hash: None,
            client_ip: client_ip_in(&r.detail),
        }
    }
}

impl<'a> From<&'a ChainedAudit> for ExportRecord<'a> {
    fn from(c: &'a ChainedAudit) -> Self {
        Self {
            seq: Some(c.seq),
            prev_hash: Some(&c.prev_hash),
            hash: Some(&c.hash),
            ..Self::unchained(&c.record)
        }
    }
}

impl<'a> From<&'a AuditRecord> for ExportRecord<'a> {
    fn from(r: &'a AuditRecord) -> Self {
        Self::unchained(r)
    }
}

/// The address in a `client_ip=<address>` pair of a `key=value` detail string.
pub fn client_ip_in(detail: &str) -> Option<IpAddr> {
    warden_core::audit_detail::parse(detail)
        .get("client_ip")
        .and_then(|v| v.parse().ok())
        // Free text that mentions one.
        .or_else(|| {
            detail
                .split_whitespace()
                .find_map(|pair| pair.strip_prefix("client_ip="))
                .and_then(|v| v.parse().ok())
        })
}

/// How an audited operation ended, from the record's free-form `result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Refused for want of authentication or authorization, or a credential was rejected.
    Denied,
    /// Any other failure (invalid input, not found, rate limited, upstream error, …).
    Failure,
    /// No result recorded.
    Unknown,
}

impl Outcome {
    /// Sorts a `result` value (see the module docs).
    pub fn of(result: &str) -> Self {
        let r = result.trim();
        if r.is_empty() {
            return Self::Unknown;
        }
        if r.len() == 3
            && let Ok(status) = r.parse::<u16>()
        {
            return match status {
                100..=399 => Self::Success,
                401 | 403 => Self::Denied,
                _ => Self::Failure,
            };
        }
        match r.to_ascii_lowercase().as_str() {
            "ok" | "success" | "succeeded" | "allowed" => Self::Success,
            "denied" | "unauthenticated" | "permission_denied" | "forbidden" | "disabled" => {
                Self::Denied
            }
            _ => Self::Failure,
        }
    }

    /// OCSF `status_id`: 0 unknown, 1 success, 2 failure.
    pub fn ocsf_status_id(self) -> u8 {
        match self {
            Self::Unknown => 0,
            Self::Success => 1,
            Self::Denied | Self::Failure => 2,
        }
    }

    /// OCSF `status`, the caption of [`Self::ocsf_status_id`].
    pub fn ocsf_status(self) -> &'static str {
        match self {
            Self::Unknown => "Unknown",
            Self::Success => "Success",
            Self::Denied | Self::Failure => "Failure",
        }
    }

    /// OCSF `severity_id`: 1 informational, 2 low, 3 medium.
    pub fn ocsf_severity_id(self) -> u8 {
        match self {
            Self::Success | Self::Unknown => 1,
            Self::Failure => 2,
            Self::Denied => 3,
        }
    }

    /// OCSF `severity`, the caption of [`Self::ocsf_severity_id`].
    pub fn ocsf_severity(self) -> &'static str {
        match self {
            Self::Success | Self::Unknown => "Informational",
            Self::Failure => "Low",
            Self::Denied => "Medium",
        }
    }

    /// CEF severity, 0–10 (0–3 low, 4–6 medium, 7–8 high).
    pub fn cef_severity(self) -> u8 {
        match self {
            Self::Success | Self::Unknown => 3,
            Self::Failure => 5,
            Self::Denied => 7,
        }
    }

    /// CEF `outcome`.
    pub fn cef_outcome(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Denied | Self::Failure => "failure",
            Self::Unknown => "unknown",
        }
    }

    /// RFC 5424 severity: 6 informational, 5 notice, 4 warning.
    pub fn syslog_severity(self) -> u8 {
        match self {
            Self::Success | Self::Unknown => 6,
            Self::Failure => 5,
            Self::Denied => 4,
        }
    }
}

/// Renders `record` in `format`, as one line without a trailing newline (JSON escapes
/// newlines; CEF encodes them as `\n`).
pub fn render(record: &ExportRecord<'_>, format: ExportFormat) -> String {
    match format {
        ExportFormat::Json => to_json(&JsonRecord::from(record)),
        ExportFormat::Ocsf => to_json(&ocsf(record)),
        ExportFormat::Cef => cef(record),
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Serializing these plain structs (strings and integers only) cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

// ---- JSON -------------------------------------------------------------------------------

/// Field order is the declaration order, whatever serde_json's features.
#[derive(Serialize)]
struct JsonRecord<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    id: &'a str,
    timestamp_ms: i64,
    action: &'a str,
    actor: &'a str,
    subject: &'a str,
    result: &'a str,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_hash: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<&'a str>,
}

impl<'a> From<&ExportRecord<'a>> for JsonRecord<'a> {
    fn from(r: &ExportRecord<'a>) -> Self {
        Self {
            seq: r.seq,
            id: r.id,
            timestamp_ms: r.timestamp_ms,
            action: r.action,
            actor: r.actor,
            subject: r.subject,
            result: r.result,
            detail: r.detail,
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

// ---- OCSF -------------------------------------------------------------------------------

/// OCSF API Activity `activity_id` from the action's last dot-separated word: 1 create,
/// 2 read, 3 update, 4 delete, 99 other, 0 unknown (no action).
pub fn ocsf_activity_id(action: &str) -> u8 {
    if action.trim().is_empty() {
        return 0;
    }
    let verb = action.rsplit('.').next().unwrap_or(action);
    match verb.to_ascii_lowercase().as_str() {
        "create" | "add" | "issue" | "register" => 1,
        "read" | "get" | "list" | "view" | "verify" | "export" => 2,
        "update" | "set" | "edit" | "enable" | "disable" | "quarantine" | "rotate" => 3,
        "delete" | "remove" | "revoke" => 4,
        _ => 99,
    }
}

fn ocsf_activity_caption(activity_id: u8) -> &'static str {
    match activity_id {
        0 => "Unknown",
        1 => "Create",
        2 => "Read",
        3 => "Update",
        4 => "Delete",
        _ => "Other",
    }
}

const OCSF_CATEGORY_UID: u32 = 6;
const OCSF_CLASS_UID: u32 = 6003;

#[derive(Serialize)]
struct Ocsf<'a> {
    activity_id: u8,
    activity_name: &'a str,
    actor: OcsfActor<'a>,
    api: OcsfApi<'a>,
    category_name: &'static str,
    category_uid: u32,
    class_name: &'static str,
    class_uid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    metadata: OcsfMetadata<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    resources: Vec<OcsfResource<'a>>,
    severity: &'static str,
    severity_id: u8,
    src_endpoint: OcsfEndpoint,
    status: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    status_code: &'a str,
    status_id: u8,
    time: i64,
    type_name: String,
    type_uid: u32,
    unmapped: OcsfUnmapped<'a>,
}

#[derive(Serialize)]
struct OcsfActor<'a> {
    user: OcsfUser<'a>,
}

#[derive(Serialize)]
struct OcsfUser<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct OcsfApi<'a> {
    operation: &'a str,
}

#[derive(Serialize)]
struct OcsfMetadata<'a> {
    product: OcsfProduct,
    uid: &'a str,
    version: &'static str,
}

#[derive(Serialize)]
struct OcsfProduct {
    name: &'static str,
    vendor_name: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
struct OcsfResource<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct OcsfEndpoint {
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'static str>,
}

#[derive(Serialize)]
struct OcsfUnmapped<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_hash: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<&'a str>,
}

fn ocsf<'a>(r: &ExportRecord<'a>) -> Ocsf<'a> {
    let outcome = Outcome::of(r.result);
    let activity_id = ocsf_activity_id(r.action);
    // For "Other", `activity_name` carries the source's own activity.
    let activity_name = if activity_id == 99 {
        r.action
    } else {
        ocsf_activity_caption(activity_id)
    };
    Ocsf {
        activity_id,
        activity_name,
        actor: OcsfActor {
            user: OcsfUser { name: r.actor },
        },
        api: OcsfApi {
            operation: r.action,
        },
        category_name: "Application Activity",
        category_uid: OCSF_CATEGORY_UID,
        class_name: "API Activity",
        class_uid: OCSF_CLASS_UID,
        message: (!r.detail.is_empty()).then_some(r.detail),
        metadata: OcsfMetadata {
            product: OcsfProduct {
                name: PRODUCT,
                vendor_name: PRODUCT,
                version: PRODUCT_VERSION,
            },
            uid: r.id,
            version: OCSF_VERSION,
        },
        resources: if r.subject.is_empty() {
            Vec::new()
        } else {
            vec![OcsfResource { name: r.subject }]
        },
        severity: outcome.ocsf_severity(),
        severity_id: outcome.ocsf_severity_id(),
        src_endpoint: match r.client_ip {
            Some(ip) => OcsfEndpoint {
                ip: Some(ip.to_string()),
                name: None,
            },
            None => OcsfEndpoint {
                ip: None,
                name: Some("unknown"),
            },
        },
        status: outcome.ocsf_status(),
        status_code: r.result,
        status_id: outcome.ocsf_status_id(),
        time: r.timestamp_ms,
        type_name: format!("API Activity: {}", ocsf_activity_caption(activity_id)),
        type_uid: OCSF_CLASS_UID * 100 + u32::from(activity_id),
        unmapped: OcsfUnmapped {
            seq: r.seq,
            prev_hash: r.prev_hash,
            hash: r.hash,
        },
    }
}

// ---- CEF --------------------------------------------------------------------------------

/// A CEF header field: `\` and `|` escaped with a backslash. Line breaks are not allowed in
/// the header (only extension values may span lines), so they become spaces.
pub fn cef_header_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A CEF extension value: `\` and `=` escaped with a backslash, line feed as `\n`, carriage
/// return as `\r`. `|` needs no escape here.
pub fn cef_extension_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

fn cef(r: &ExportRecord<'_>) -> String {
    use std::fmt::Write as _;

    let outcome = Outcome::of(r.result);
    let name = if r.result.is_empty() {
        r.action.to_owned()
    } else {
        format!("{} {}", r.action, r.result)
    };
    let mut out = format!(
        "CEF:0|{}|{}|{}|{}|{}|{}|",
        cef_header_escape(PRODUCT),
        cef_header_escape(PRODUCT),
        cef_header_escape(PRODUCT_VERSION),
        cef_header_escape(r.action),
        cef_header_escape(&name),
        outcome.cef_severity(),
    );
    let mut ext: Vec<(&str, String)> = vec![
        ("rt", r.timestamp_ms.to_string()),
        ("externalId", r.id.to_owned()),
        ("act", r.action.to_owned()),
        ("outcome", outcome.cef_outcome().to_owned()),
    ];
    if !r.actor.is_empty() {
        ext.push(("suser", r.actor.to_owned()));
    }
    match r.client_ip {
        Some(IpAddr::V4(ip)) => ext.push(("src", ip.to_string())),
        Some(IpAddr::V6(ip)) => {
            ext.push(("c6a2", ip.to_string()));
            ext.push(("c6a2Label", "Source IPv6 Address".to_owned()));
        }
        None => {}
    }
    if !r.subject.is_empty() {
        ext.push(("cs1", r.subject.to_owned()));
        ext.push(("cs1Label", "subject".to_owned()));
    }
    if !r.result.is_empty() {
        ext.push(("cs2", r.result.to_owned()));
        ext.push(("cs2Label", "result".to_owned()));
    }
    if let Some(hash) = r.hash {
        ext.push(("cs3", hash.to_owned()));
        ext.push(("cs3Label", "hash".to_owned()));
    }
    if let Some(seq) = r.seq {
        ext.push(("cn1", seq.to_string()));
        ext.push(("cn1Label", "seq".to_owned()));
    }
    if !r.detail.is_empty() {
        ext.push(("msg", r.detail.to_owned()));
    }
    for (i, (key, value)) in ext.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let _ = write!(out, "{key}={}", cef_extension_escape(value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    /// A record whose fields hold every character some format must escape.
    fn nasty() -> AuditRecord {
        AuditRecord {
            id: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
            timestamp_ms: 1_717_243_200_123,
            action: "provider|key.add".into(),
            actor: "admin \"root\" \\ Zoë".into(),
            subject: "a=b|c]d".into(),
            result: "denied".into(),
            detail: "line1\nline2\r\\path=x \"q\" 日本 client_ip=10.1.2.3".into(),
        }
    }

    fn chained(r: AuditRecord) -> ChainedAudit {
        ChainedAudit {
            seq: 42,
            record: r,
            prev_hash: PREV.into(),
            hash: HASH.into(),
        }
    }

    #[test]
    fn format_names_parse_and_unknown_ones_are_refused() {
        assert_eq!("json".parse::<ExportFormat>(), Ok(ExportFormat::Json));
        assert_eq!("OCSF".parse::<ExportFormat>(), Ok(ExportFormat::Ocsf));
        assert_eq!(" cef ".parse::<ExportFormat>(), Ok(ExportFormat::Cef));
        let err = "leef".parse::<ExportFormat>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown export format \"leef\" (expected json, ocsf or cef)"
        );
        for f in [ExportFormat::Json, ExportFormat::Ocsf, ExportFormat::Cef] {
            assert_eq!(f.to_string().parse::<ExportFormat>(), Ok(f));
        }
    }

    #[test]
    fn outcomes_from_results() {
        assert_eq!(Outcome::of("ok"), Outcome::Success);
        assert_eq!(Outcome::of("200"), Outcome::Success);
        assert_eq!(Outcome::of("denied"), Outcome::Denied);
        assert_eq!(Outcome::of("401"), Outcome::Denied);
        assert_eq!(Outcome::of("403"), Outcome::Denied);
        assert_eq!(Outcome::of("disabled"), Outcome::Denied);
        assert_eq!(Outcome::of("permission_denied"), Outcome::Denied);
        assert_eq!(Outcome::of("429"), Outcome::Failure);
        assert_eq!(Outcome::of("502"), Outcome::Failure);
        assert_eq!(Outcome::of("invalid_argument"), Outcome::Failure);
        assert_eq!(Outcome::of(""), Outcome::Unknown);
    }

    #[test]
    fn activity_ids_from_actions() {
        assert_eq!(ocsf_activity_id("provider.add"), 1);
        assert_eq!(ocsf_activity_id("token.issue"), 1);
        assert_eq!(ocsf_activity_id("admin_credential.create"), 1);
        assert_eq!(ocsf_activity_id("policy.set"), 3);
        assert_eq!(ocsf_activity_id("provider.key.quarantine"), 3);
        assert_eq!(ocsf_activity_id("model.deployment.remove"), 4);
        assert_eq!(ocsf_activity_id("vkey.revoke"), 4);
        assert_eq!(ocsf_activity_id("auth.admin"), 99);
        assert_eq!(ocsf_activity_id("request"), 99);
        assert_eq!(ocsf_activity_id(""), 0);
    }

    #[test]
    fn client_ip_comes_from_a_detail_pair() {
        assert_eq!(
            client_ip_in("a=1 client_ip=10.1.2.3 b=2"),
            Some("10.1.2.3".parse().unwrap())
        );
        assert_eq!(client_ip_in("client_ip=::1"), Some("::1".parse().unwrap()));
        assert_eq!(client_ip_in("client_ip=nope"), None);
        assert_eq!(client_ip_in("status 401: no"), None);
    }

    #[test]
    fn json_keeps_every_field_and_escapes() {
        let row = chained(nasty());
        let line = render(&ExportRecord::from(&row), ExportFormat::Json);
        assert_eq!(
            line,
            concat!(
                r#"{"seq":42,"id":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","timestamp_ms":1717243200123,"#,
                r#""action":"provider|key.add","actor":"admin \"root\" \\ Zoë","subject":"a=b|c]d","#,
                r#""result":"denied","detail":"line1\nline2\r\\path=x \"q\" 日本 client_ip=10.1.2.3","#,
                r#""prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","#,
                r#""hash":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}"#
            )
        );
        assert!(!line.contains('\n'));
        // It reads back as the same record.
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["actor"], "admin \"root\" \\ Zoë");
        assert_eq!(v["detail"], nasty().detail);
    }

    #[test]
    fn json_of_an_unchained_record_has_no_chain_fields() {
        let r = nasty();
        let line = render(&ExportRecord::from(&r), ExportFormat::Json);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(v.get("seq").is_none() && v.get("hash").is_none());
        assert!(v.get("prev_hash").is_none());
        assert_eq!(v["id"], r.id.as_str());
    }

    #[test]
    fn ocsf_is_an_api_activity_with_its_required_fields() {
        let row = chained(nasty());
        let line = render(&ExportRecord::from(&row), ExportFormat::Ocsf);
        assert_eq!(
            line,
            concat!(
                r#"{"activity_id":1,"activity_name":"Create","#,
                r#""actor":{"user":{"name":"admin \"root\" \\ Zoë"}},"#,
                r#""api":{"operation":"provider|key.add"},"#,
                r#""category_name":"Application Activity","category_uid":6,"#,
                r#""class_name":"API Activity","class_uid":6003,"#,
                r#""message":"line1\nline2\r\\path=x \"q\" 日本 client_ip=10.1.2.3","#,
                r#""metadata":{"product":{"name":"Warden","vendor_name":"Warden","version":""#,
                env!("CARGO_PKG_VERSION"),
                r#""},"uid":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","version":"1.3.0"},"#,
                r#""resources":[{"name":"a=b|c]d"}],"#,
                r#""severity":"Medium","severity_id":3,"#,
                r#""src_endpoint":{"ip":"10.1.2.3"},"#,
                r#""status":"Failure","status_code":"denied","status_id":2,"#,
                r#""time":1717243200123,"type_name":"API Activity: Create","type_uid":600301,"#,
                r#""unmapped":{"seq":42,"#,
                r#""prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","#,
                r#""hash":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}}"#
            )
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        // Required by OCSF 1.3 for class 6003 (base event plus the class's own).
        for field in [
            "activity_id",
            "actor",
            "api",
            "category_uid",
            "class_uid",
            "metadata",
            "severity_id",
            "src_endpoint",
            "time",
            "type_uid",
        ] {
            assert!(v.get(field).is_some(), "missing required {field}");
        }
        assert_eq!(v["class_uid"], 6003);
        assert_eq!(v["category_uid"], 6);
        assert_eq!(
            v["type_uid"].as_u64(),
            Some(v["class_uid"].as_u64().unwrap() * 100 + v["activity_id"].as_u64().unwrap())
        );
        assert_eq!(v["api"]["operation"], "provider|key.add");
        assert_eq!(v["actor"]["user"]["name"], "admin \"root\" \\ Zoë");
        assert_eq!(v["metadata"]["product"]["name"], "Warden");
        assert_eq!(v["metadata"]["product"]["vendor_name"], "Warden");
        assert_eq!(v["metadata"]["version"], OCSF_VERSION);
        assert_eq!(v["metadata"]["uid"], row.record.id.as_str());
        assert_eq!(v["status_id"], 2);
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["time"], 1_717_243_200_123_i64);
        assert_eq!(v["message"], nasty().detail);
        assert_eq!(v["unmapped"]["seq"], 42);
    }

    #[test]
    fn ocsf_success_create_without_ip() {
        let mut r = nasty();
        r.action = "provider.add".into();
        r.result = "ok".into();
        r.detail = String::new();
        let line = render(&ExportRecord::from(&r), ExportFormat::Ocsf);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["activity_id"], 1);
        assert_eq!(v["activity_name"], "Create");
        assert_eq!(v["type_uid"], 600_301);
        assert_eq!(v["type_name"], "API Activity: Create");
        assert_eq!(v["status_id"], 1);
        assert_eq!(v["status"], "Success");
        assert_eq!(v["severity_id"], 1);
        assert_eq!(v["src_endpoint"], serde_json::json!({"name": "unknown"}));
        assert!(v.get("message").is_none());
        assert_eq!(v["unmapped"], serde_json::json!({}));

        // An action that is no CRUD verb is "Other", named by the action itself.
        r.action = "auth.admin".into();
        let line = render(&ExportRecord::from(&r), ExportFormat::Ocsf);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["activity_id"], 99);
        assert_eq!(v["activity_name"], "auth.admin");
        assert_eq!(v["type_uid"], 600_399);
        assert_eq!(v["type_name"], "API Activity: Other");
    }

    #[test]
    fn cef_escapes_header_and_extension() {
        let row = chained(nasty());
        let line = render(&ExportRecord::from(&row), ExportFormat::Cef);
        assert_eq!(
            line,
            format!(
                concat!(
                    r"CEF:0|Warden|Warden|{v}|provider\|key.add|provider\|key.add denied|7|",
                    r"rt=1717243200123 externalId=0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b ",
                    r"act=provider|key.add outcome=failure ",
                    r#"suser=admin "root" \\ Zoë src=10.1.2.3 "#,
                    r"cs1=a\=b|c]d cs1Label=subject cs2=denied cs2Label=result ",
                    r"cs3=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 cs3Label=hash ",
                    r"cn1=42 cn1Label=seq ",
                    r#"msg=line1\nline2\r\\path\=x "q" 日本 client_ip\=10.1.2.3"#
                ),
                v = env!("CARGO_PKG_VERSION")
            )
        );
        assert!(!line.contains('\n') && !line.contains('\r'));
    }

    #[test]
    fn cef_header_takes_no_line_breaks_and_ipv6_goes_to_c6a2() {
        let r = AuditRecord {
            id: "id-1".into(),
            timestamp_ms: 5,
            action: "auth\\admin\nx".into(),
            actor: String::new(),
            subject: String::new(),
            result: String::new(),
            detail: "client_ip=2001:db8::1".into(),
        };
        let line = render(&ExportRecord::from(&r), ExportFormat::Cef);
        assert_eq!(
            line,
            format!(
                concat!(
                    r"CEF:0|Warden|Warden|{v}|auth\\admin x|auth\\admin x|3|",
                    r"rt=5 externalId=id-1 act=auth\\admin\nx outcome=unknown ",
                    r"c6a2=2001:db8::1 c6a2Label=Source IPv6 Address msg=client_ip\=2001:db8::1"
                ),
                v = env!("CARGO_PKG_VERSION")
            )
        );
    }
}
