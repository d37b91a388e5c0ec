//! What JWT access tokens (`token …`) and virtual keys (`vkey …`) have in common: both grant
//! a client access, to some models with some scopes ([`GrantArgs`]), until they expire or
//! are revoked ([`status`]), under the policy of a target (the token's subject, the key
//! itself).
//!
//! [`Grant`] is what each kind tells this module about its records; [`table`], [`info`] and
//! [`revoked`] are the listing, the one-record view with policy and usage, and the
//! revocation notice, written once for both.

use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};
use warden_proto::admin::v1 as pb;

use crate::commands::policies;
use crate::flags::list_item;
use crate::output::{Fields, Printer, Rows};
use crate::session::Session;

/// What a token or virtual key may do.
#[derive(Debug, Args)]
pub struct GrantArgs {
    /// Model aliases allowed, comma-separated [default: all aliases]; `provider:model`,
    /// `provider:*` or `*:*` for addressing a provider's models directly.
    #[arg(long, value_delimiter = ',', value_parser = list_item, num_args = 1)]
    pub models: Vec<String>,
    /// Scopes (`read`, `write`, `admin`, `audit`, `responses_state`), comma-separated
    /// [default: read,write].
    #[arg(long, value_delimiter = ',', value_parser = list_item, num_args = 1)]
    pub scopes: Vec<String>,
}

/// A record that grants access: a token or a virtual key as the control plane lists it.
pub trait Grant {
    /// What one record is called in messages: `token`, `virtual key`.
    const NOUN: &'static str;
    /// The JSON field that holds the id in a revocation notice: `jti`, `id`.
    const ID_FIELD: &'static str;
    /// Labels of [`Grant::cells`], lower case; the table header is their upper case.
    const COLUMNS: &'static [&'static str];

    fn id(&self) -> &str;
    fn revoked_at(&self) -> i64;
    fn expires_at(&self) -> i64;
    /// Whose policy limits this record.
    fn policy_target(&self) -> pb::policy_target::Target;
    /// One formatted value per [`Grant::COLUMNS`] entry (the status comes after them).
    fn cells(&self) -> Vec<String>;
    /// The record in JSON, with the proto's field names.
    fn json(&self) -> Value;
}

/// `revoked`, `expired` or `active`.
pub fn status(revoked_at: i64, expires_at: i64, now: i64) -> &'static str {
    if revoked_at != 0 {
        "revoked"
    } else if expires_at != 0 && expires_at <= now {
        "expired"
    } else {
        "active"
    }
}

/// `token list`, `vkey list`: one row per record, its status last.
pub fn table<G: Grant>(out: Printer, records: &[G]) -> anyhow::Result<()> {
    let now = warden_core::unix_now();
    let header: Vec<String> = G::COLUMNS
        .iter()
        .chain(&["status"])
        .map(|label| label.to_uppercase())
        .collect();
    let mut rows = Rows::new(header.as_slice());
    for record in records {
        let mut cells = record.cells();
        cells.push(status(record.revoked_at(), record.expires_at(), now).to_owned());
        rows.push(cells);
    }
    let json = records.iter().map(Grant::json).collect();
    out.table(&rows, &Value::Array(json))?;
    Ok(())
}

/// `token info`, `vkey info`: the record with id `id` among `records`, its status, and the
/// policy and usage of its target.
pub async fn info<G: Grant>(
    session: &Session,
    out: Printer,
    records: Vec<G>,
    id: &str,
) -> anyhow::Result<()> {
    let record = records
        .into_iter()
        .find(|r| r.id() == id)
        .ok_or_else(|| anyhow::anyhow!("no {} with id {id:?}", G::NOUN))?;
    let target = pb::PolicyTarget {
        target: Some(record.policy_target()),
    };
    let policy = policies::get(session, &target).await?;
    let state = status(
        record.revoked_at(),
        record.expires_at(),
        warden_core::unix_now(),
    );
    let mut fields = Fields::new();
    for (label, value) in G::COLUMNS.iter().zip(record.cells()) {
        fields.push(label, value);
    }
    fields.push("status", state);
    policies::policy_fields(&mut fields, &policy, &target);
    let mut json = record.json();
    merge(&mut json, json!({ "status": state }));
    merge(&mut json, policies::policy_json(&policy, &target));
    out.fields(&fields, &json)?;
    Ok(())
}

/// `token revoke`, `vkey revoke`: the notice once the control plane has revoked `id`.
pub fn revoked<G: Grant>(out: Printer, id: &str) -> anyhow::Result<()> {
    out.done(
        &format!("{} {id:?} revoked", G::NOUN),
        &json!({ G::ID_FIELD: id, "revoked": true }),
    )?;
    Ok(())
}

/// Adds the fields of `extra` (an object) to `json` (an object).
fn merge(json: &mut Value, extra: Value) {
    if let (Value::Object(fields), Value::Object(extra)) = (json, extra) {
        fields.extend(extra);
    }
}

/// `--ttl`: a humantime duration of at least one second (`0` would mean "the default" to the
/// control plane, or "never expires" for a virtual key).
pub fn parse_ttl(raw: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(raw).map_err(|e| e.to_string())?;
    if ttl < Duration::from_secs(1) {
        return Err("the ttl must be at least 1s; leave --ttl out for the default".to_owned());
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::probe;

    fn grant(args: &[&str]) -> Result<GrantArgs, clap::Error> {
        probe::flags(args)
    }

    #[test]
    fn parses_comma_separated_lists() {
        let g = grant(&["--models", "a,b", "--scopes", "read, write"]).unwrap();
        assert_eq!(g.models, ["a", "b"]);
        assert_eq!(g.scopes, ["read", "write"]);
        let g = grant(&["--models", "a", "--models", "b,c"]).unwrap();
        assert_eq!(g.models, ["a", "b", "c"]);
        let g = grant(&[]).unwrap();
        assert!(g.models.is_empty() && g.scopes.is_empty());
        assert!(grant(&["--models", "a,,b"]).is_err());
    }

    #[test]
    fn parses_ttls() {
        assert_eq!(parse_ttl("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert_eq!(parse_ttl("1h 30m").unwrap(), Duration::from_secs(5_400));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("500ms").is_err());
        assert!(parse_ttl("soon").is_err());
    }

    #[test]
    fn derives_status() {
        assert_eq!(status(0, 0, 100), "active");
        assert_eq!(status(0, 200, 100), "active");
        assert_eq!(status(0, 50, 100), "expired");
        assert_eq!(status(10, 200, 100), "revoked");
    }

    #[test]
    fn merges_objects() {
        let mut merged = json!({ "id": "vk_1" });
        merge(&mut merged, json!({ "policy": { "rpm": 60 } }));
        assert_eq!(merged["id"], "vk_1");
        assert_eq!(merged["policy"]["rpm"], 60);
    }
}
