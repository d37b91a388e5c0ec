//! Rows to domain values, written once for both backends.
//!
//! Each mapping names the columns a domain type reads as they are, then the fields it
//! computes from the row; [`from_stored!`] implements [`FromStored`] with it for SQLite's
//! and PostgreSQL's row types, so a query in `sql.rs` maps its rows with
//! `T::from_stored` whichever pool ran it. Stored values that do not fit the domain (an
//! unknown provider format or policy target, a negative audit position, a list column that
//! is not a JSON array) are [`StoreError::Malformed`]. Lists of names (`scopes`, `models`,
//! `fallbacks`, `drop_params`) are JSON arrays in `TEXT` columns on both backends.

use sqlx::Row as _;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

use super::StoreError;
use crate::audit::chain::{AuditCheckpoint, ChainHead, ChainedAudit};
use crate::domain::{
    AccessRecord, ApiFormat, AuditRecord, CredentialRecord, Deployment, DlpRuleRecord,
    IpBlockRecord, Limits, Model, NodeRecord, PolicyRecord, PolicyTarget, Price, Provider,
    ProviderKey, SigningKey, Source, TokenRecord, VirtualKeyRecord,
};

/// A domain value read from one row of a backend's row type `R`.
pub(super) trait FromStored<R>: Sized {
    fn from_stored(row: &R) -> Result<Self, StoreError>;
}

/// Implements [`FromStored`] for both backends' rows with one mapping: a struct's columns
/// read as they are (by field name), then `; field: expression` for the rest; or any body
/// that returns `Result<Self, StoreError>`.
macro_rules! from_stored {
    ($ty:ident, |$row:ident| { $($col:ident),* $(; $($field:ident: $value:expr),+ $(,)?)? }) => {
        from_stored!($ty, |$row| Ok($ty {
            $($col: $row.try_get(stringify!($col))?,)*
            $($($field: $value,)+)?
        }));
    };
    ($ty:ty, |$row:ident| $body:expr) => {
        impl FromStored<SqliteRow> for $ty {
            fn from_stored($row: &SqliteRow) -> Result<Self, StoreError> {
                $body
            }
        }
        impl FromStored<PgRow> for $ty {
            fn from_stored($row: &PgRow) -> Result<Self, StoreError> {
                $body
            }
        }
    };
}

/// A list column's value: a JSON array of strings.
pub(super) fn list_to_text(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".to_owned())
}

fn list(s: String) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(&s).map_err(|e| StoreError::Malformed(format!("list column: {e}")))
}

/// A `u64` (a count, a version, an audit position) as a `BIGINT`, saturating.
pub(super) fn bigint(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A `BIGINT` that holds an unsigned count; negative values read as 0.
fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A deployment's weight; out of range reads as 1.
fn weight(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(1)
}

/// An audit position; negative values are malformed.
fn seq(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Malformed(format!("negative audit position {v}")))
}

fn source(s: String) -> Source {
    Source::parse(&s)
}

fn api_format(s: String) -> Result<ApiFormat, StoreError> {
    ApiFormat::parse(&s).ok_or_else(|| StoreError::Malformed(format!("provider format {s}")))
}

fn policy_target(kind: String, id: String) -> Result<PolicyTarget, StoreError> {
    PolicyTarget::from_parts(&kind, &id)
        .ok_or_else(|| StoreError::Malformed(format!("policy target kind {kind}")))
}

from_stored!(Provider, |row| {
    name, base_url, created_at, passthrough, ca_pem;
    format: api_format(row.try_get("format")?)?,
    source: source(row.try_get("source")?),
    drop_params: list(row.try_get("drop_params")?)?,
});

from_stored!(ProviderKey, |row| {
    id, provider, secret_name, fingerprint, created_at, disabled_reason, disabled_at;
    health_epoch: unsigned(row.try_get("health_epoch")?),
});

from_stored!(Model, |row| {
    alias, provider, upstream_model, created_at;
    source: source(row.try_get("source")?),
    fallbacks: list(row.try_get("fallbacks")?)?,
    weight: weight(row.try_get("weight")?),
});

from_stored!(Deployment, |row| {
    alias, provider, upstream_model;
    weight: weight(row.try_get("weight")?),
});

from_stored!(AccessRecord, |row| {
    updated_at;
    target: policy_target(row.try_get("target_kind")?, row.try_get("target_id")?)?,
    access: serde_json::from_str(&row.try_get::<String, _>("body")?)
        .map_err(|e| StoreError::Malformed(format!("access policy: {e}")))?,
    source: source(row.try_get("source")?),
});

from_stored!(PolicyRecord, |row| {
    updated_at;
    target: policy_target(row.try_get("target_kind")?, row.try_get("target_id")?)?,
    limits: Limits {
        rpm: unsigned(row.try_get("rpm")?),
        tpm: unsigned(row.try_get("tpm")?),
        max_parallel: u32::try_from(row.try_get::<i64, _>("max_parallel")?).unwrap_or(0),
        max_budget_micros: unsigned(row.try_get("max_budget_micros")?),
        budget_period_secs: unsigned(row.try_get("budget_period_secs")?),
        max_tokens: unsigned(row.try_get("max_tokens")?),
    },
    source: source(row.try_get("source")?),
});

// A model alias with its price.
from_stored!((String, Price), |row| {
    let price = Price {
        input_per_mtok: row.try_get("input_per_mtok")?,
        output_per_mtok: row.try_get("output_per_mtok")?,
    };
    Ok((row.try_get("alias")?, price))
});

from_stored!(DlpRuleRecord, |row| {
    use warden_core::dlp::{Action, Detector, RuleSpec, Scope};
    let text = |c: &str| -> Result<String, StoreError> { Ok(row.try_get(c)?) };
    let (detector, action) = (text("detector")?, text("action")?);
    let (kind, id) = (text("scope_kind")?, text("scope_id")?);
    Ok(DlpRuleRecord {
        spec: RuleSpec {
            name: text("name")?,
            detector: Detector::parse(&detector)
                .ok_or_else(|| StoreError::Malformed(format!("dlp detector {detector}")))?,
            pattern: text("pattern")?,
            action: Action::parse(&action)
                .ok_or_else(|| StoreError::Malformed(format!("dlp action {action}")))?,
            scope: Scope::from_parts(&kind, &id)
                .ok_or_else(|| StoreError::Malformed(format!("dlp scope kind {kind}")))?,
        },
        source: source(text("source")?),
        updated_at: row.try_get("updated_at")?,
    })
});

from_stored!(SigningKey, |row| { kid, algorithm, secret_name, created_at });
from_stored!(IpBlockRecord, |row| { cidr, reason, created_by, created_at, expires_at });

from_stored!(TokenRecord, |row| {
    jti, subject, kid, issued_at, expires_at, revoked_at;
    scopes: list(row.try_get("scopes")?)?,
    models: list(row.try_get("models")?)?,
});

from_stored!(VirtualKeyRecord, |row| {
    id, hash, name, owner, created_at, expires_at, revoked_at, previous_hash,
    previous_expires_at;
    scopes: list(row.try_get("scopes")?)?,
    models: list(row.try_get("models")?)?,
});

from_stored!(CredentialRecord, |row| {
    id, hash, name, created_at, revoked_at, role, expires_at, cert_spki_sha256
});

from_stored!(NodeRecord, |row| {
    node_id, credential_id, last_seen, software_version, replica_id;
    acked_version: unsigned(row.try_get("acked_version")?),
});

from_stored!(AuditRecord, |row| {
    id, timestamp_ms, action, actor, subject, result, detail
});

from_stored!(ChainedAudit, |row| {
    prev_hash, hash;
    seq: seq(row.try_get("seq")?)?,
    record: AuditRecord::from_stored(row)?,
});

from_stored!(ChainHead, |row| {
    hash;
    seq: seq(row.try_get("seq")?)?,
});

from_stored!(AuditCheckpoint, |row| {
    hash, signature, key_id, created_at_ms;
    seq_upto: seq(row.try_get("seq_upto")?)?,
});
