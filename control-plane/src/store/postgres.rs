//! PostgreSQL: the production option when several control-plane replicas share one
//! database (migrations in `migrations/postgres/`). Connects a [`SqlStore`]; the
//! statements themselves are in `sql.rs`.
//!
//! The connection URL is a secret (it may carry a password) and comes from configuration;
//! TLS is chosen in the URL with libpq's `sslmode` (`require`, `verify-ca`, `verify-full`,
//! with `sslrootcert=…` for a private CA), served by rustls. Every connection gets a
//! `statement_timeout`, and the pool an acquire timeout, so a stuck database turns into an
//! error instead of a hung request.
//!
//! Audit appends lock the one-row chain head with `SELECT … FOR UPDATE` (`DIALECT`)
//! inside the transaction that inserts the rows, so appends from every task of every
//! replica form one chain. A batch's rows go in as one statement over arrays
//! (`UNNEST`), which advances the head too ([`ChainRows`]).

use std::collections::HashSet;
use std::str::FromStr as _;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use sqlx::PgConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::StoreError;
use super::rows::bigint;
use super::sql::{ChainRows, Dialect, Pool, SqlStore};
use crate::audit::chain::AuditLink;
use crate::domain::AuditRecord;

/// Pool and session settings; [`Default`] suits one control-plane replica.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// Upper bound of open connections.
    pub max_connections: u32,
    /// Connections kept open while idle.
    pub min_connections: u32,
    /// How long a caller waits for a connection, including establishing a new one.
    pub acquire_timeout: Duration,
    /// Idle connections above `min_connections` are closed after this.
    pub idle_timeout: Option<Duration>,
    /// Server-side `statement_timeout` of every session.
    pub statement_timeout: Duration,
    /// Schema to create and use (`search_path`) instead of the user's default; lowercase
    /// letters, digits and `_` only.
    pub schema: Option<String>,
    /// Connect to a server off loopback without a verified certificate (`[store]
    /// allow_unverified_tls`; see [`TlsVerdict`]).
    pub allow_unverified_tls: bool,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        Self {
            max_connections: 10,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(600)),
            statement_timeout: Duration::from_secs(30),
            schema: None,
            allow_unverified_tls: false,
        }
    }
}

/// How the link to PostgreSQL is protected, as far as starting goes: a server off
/// loopback must be reached with a verified certificate (`sslmode=verify-full` or
/// `verify-ca`), or a man in the middle could rewrite any row (a provider's `base_url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsVerdict {
    /// A unix socket or a loopback address: nothing crosses a network.
    Local,
    /// `verify-full` or `verify-ca`.
    Verified,
    /// Off loopback with TLS unverified or off (`sslmode` and `host` as resolved by the
    /// driver, environment defaults such as `PGSSLMODE` included).
    Unverified { host: String, sslmode: &'static str },
}

/// The [`TlsVerdict`] of a connection made with `options`.
pub fn tls_verdict(options: &PgConnectOptions) -> TlsVerdict {
    use sqlx::postgres::PgSslMode;
    let host = options.get_host();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let local = options.get_socket().is_some()
        || host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let sslmode = match options.get_ssl_mode() {
        PgSslMode::VerifyFull | PgSslMode::VerifyCa => return TlsVerdict::Verified,
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
    };
    if local {
        TlsVerdict::Local
    } else {
        TlsVerdict::Unverified {
            host: host.to_owned(),
            sslmode,
        }
    }
}

/// The connect options of `url`; the parse error never echoes the URL, which may hold a
/// password.
fn parse_url(url: &SecretString) -> Result<PgConnectOptions, StoreError> {
    PgConnectOptions::from_str(url.expose_secret())
        .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL: {e}")))
}

/// The [`TlsVerdict`] of `url`.
pub fn tls_verdict_of(url: &SecretString) -> Result<TlsVerdict, StoreError> {
    parse_url(url).map(|o| tls_verdict(&o))
}

/// Refuses an unverified link off loopback unless `allow` (then warns). Nothing has been
/// sent anywhere when this fails.
fn check_tls(verdict: &TlsVerdict, allow: bool) -> Result<(), StoreError> {
    let TlsVerdict::Unverified { host, sslmode } = verdict else {
        return Ok(());
    };
    if !allow {
        return Err(StoreError::Config(format!(
            "PostgreSQL at {host} is not on loopback and sslmode={sslmode} does not verify its certificate: \
             use sslmode=verify-full (or verify-ca, with sslrootcert=… for a private CA), \
             or accept the risk with [store] allow_unverified_tls = true (--allow-unverified-db-tls)"
        )));
    }
    tracing::warn!(%host, sslmode, "PostgreSQL off loopback without certificate verification (allow_unverified_tls): a man in the middle could read and rewrite the state store");
    Ok(())
}

fn valid_schema(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// Connects to PostgreSQL; what it connects is a [`SqlStore`].
#[derive(Debug)]
pub enum PostgresStore {}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:5432/db?sslmode=verify-full`),
    /// runs the migrations and the one-time chaining of pre-chain audit rows.
    pub async fn connect(
        url: &SecretString,
        settings: &PostgresSettings,
    ) -> Result<SqlStore, StoreError> {
        let mut options = parse_url(url)?.application_name("warden-cp");
        check_tls(&tls_verdict(&options), settings.allow_unverified_tls)?;
        let timeout_ms = settings.statement_timeout.as_millis().to_string();
        options = options.options([("statement_timeout", timeout_ms.as_str())]);
        if let Some(schema) = &settings.schema {
            if !valid_schema(schema) {
                return Err(StoreError::Config(format!(
                    "schema {schema:?}: use lowercase letters, digits and _ only"
                )));
            }
            options = options.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .min_connections(settings.min_connections)
            .acquire_timeout(settings.acquire_timeout)
            .idle_timeout(settings.idle_timeout)
            .connect_with(options)
            .await?;
        if let Some(schema) = &settings.schema {
            // Checked above: a plain identifier, so quoting it is enough.
            // Replicas starting together race on IF NOT EXISTS: the loser's unique
            // violation means the schema is there.
            let created = sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
            )))
            .execute(&pool)
            .await;
            match created {
                Ok(_) => {}
                Err(sqlx::Error::Database(e))
                    if matches!(e.code().as_deref(), Some("23505" | "42P06")) => {}
                Err(e) => return Err(e.into()),
            }
        }
        SqlStore::open(Pool::Postgres(pool), &DIALECT).await
    }
}

/// Appends lock the head's row (`SELECT … FOR UPDATE`); one statement inserts the rows and
/// advances the head ([`ChainRows`]).
static DIALECT: Dialect = Dialect {
    migrator: sqlx::migrate!("./migrations/postgres"),
    begin: "BEGIN",
    head: "SELECT seq, hash FROM audit_chain_head WHERE id = 1 FOR UPDATE",
    legacy_exists: "SELECT to_regclass('audit_legacy') IS NOT NULL",
};

/// Inserts a batch's rows from ten parallel arrays and advances the head to `$11`, `$12`
/// (the last row's `seq` and `hash`): one round trip and one fixed statement for any
/// batch size.
const INSERT_CHAINED: &str = "WITH inserted AS (
         INSERT INTO audit (id, seq, timestamp_ms, action, actor, subject, result, detail, prev_hash, hash)
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[],
                              $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])
     )
     UPDATE audit_chain_head SET seq = $11, hash = $12 WHERE id = 1";

impl ChainRows for PgConnection {
    async fn stored_ids(&mut self, ids: &[&str]) -> Result<HashSet<String>, StoreError> {
        let stored: Vec<String> = sqlx::query_scalar("SELECT id FROM audit WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&mut *self)
            .await?;
        Ok(stored.into_iter().collect())
    }

    async fn insert_chained(
        &mut self,
        records: &[&AuditRecord],
        links: &[AuditLink],
    ) -> Result<(), StoreError> {
        let Some(last) = links.last() else {
            return Ok(());
        };
        let texts = |f: fn(&AuditRecord) -> &str| records.iter().map(|r| f(r)).collect::<Vec<_>>();
        let seqs: Vec<i64> = links.iter().map(|l| bigint(l.seq)).collect();
        let times: Vec<i64> = records.iter().map(|r| r.timestamp_ms).collect();
        let prev: Vec<&str> = links.iter().map(|l| l.prev_hash.as_str()).collect();
        let hashes: Vec<&str> = links.iter().map(|l| l.hash.as_str()).collect();
        sqlx::query(INSERT_CHAINED)
            .bind(texts(|r| r.id.as_str()))
            .bind(seqs)
            .bind(times)
            .bind(texts(|r| r.action.as_str()))
            .bind(texts(|r| r.actor.as_str()))
            .bind(texts(|r| r.subject.as_str()))
            .bind(texts(|r| r.result.as_str()))
            .bind(texts(|r| r.detail.as_str()))
            .bind(prev)
            .bind(hashes)
            .bind(bigint(last.seq))
            .bind(last.hash.as_str())
            .execute(&mut *self)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(url: &str) -> TlsVerdict {
        tls_verdict_of(&SecretString::from(url.to_owned())).unwrap()
    }

    #[test]
    fn off_loopback_the_link_must_be_verified() {
        for url in [
            "postgres://u@127.0.0.1/db",
            "postgres://u@localhost:5433/db?sslmode=disable",
            "postgres://u@[::1]/db",
            "postgres://u@%2Fvar%2Frun%2Fpostgresql/db",
            "postgres://u@db.invalid/db?host=/tmp",
        ] {
            assert_eq!(verdict(url), TlsVerdict::Local, "{url}");
        }
        for url in [
            "postgres://u@db.invalid/db?sslmode=verify-full",
            "postgres://u@10.0.0.1/db?sslmode=verify-ca",
        ] {
            assert_eq!(verdict(url), TlsVerdict::Verified, "{url}");
        }
        let v = verdict("postgres://u:pw@db.invalid/db?sslmode=require");
        assert_eq!(
            v,
            TlsVerdict::Unverified {
                host: "db.invalid".into(),
                sslmode: "require"
            }
        );
        let err = check_tls(&v, false).unwrap_err().to_string();
        assert!(err.contains("verify-full") && !err.contains("pw"), "{err}");
        assert!(check_tls(&v, true).is_ok());
        assert!(matches!(
            verdict("postgres://u@127.0.0.2.nip.invalid/db"),
            TlsVerdict::Unverified { .. }
        ));
    }
}
