//! The one [`StateStore`] implementation, [`SqlStore`], over either backend's pool.
//!
//! Every statement both backends run is written here once: sqlx's SQLite driver binds
//! `$N` placeholders like PostgreSQL, and the schemas have the same tables, columns and
//! column meanings (`BIGINT`/`INTEGER`, `DOUBLE PRECISION`/`REAL`, JSON lists as `TEXT`).
//! [`on_pool!`] runs a body against whichever pool the store holds; [`fetch_all!`] and
//! [`execute!`] are its common shapes: a query with its binds goes in, domain values
//! ([`super::rows`]) or the number of rows affected come out. What differs by backend is a
//! [`Dialect`] that the dialect modules (`sqlite`, `postgres`) hand to [`SqlStore::open`]
//! with their pool: the migrations, and how an audit append holds the chain head; and the
//! [`ChainRows`] they implement on their connection: how an append's rows are
//! de-duplicated and inserted (PostgreSQL arrays, SQLite multi-row `VALUES`).
//!
//! Where to start reading: [`StateStore`] for what each method promises, then any method
//! below with its SQL in view.

use std::sync::Arc;

use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;

use super::rows::{FromStored, bigint, list_to_text};
use super::{StateStore, StoreError};
use crate::audit::chain::{AuditCheckpoint, AuditLink, ChainHead, ChainedAudit};
use crate::domain::{
    AuditRecord, CredentialRecord, CredentialTable, Deployment, Model, NodeRecord, PolicyRecord,
    PolicyTarget, Price, Provider, ProviderKey, SigningKey, TokenRecord, VirtualKeyRecord,
};

/// The connection pool of one backend.
#[derive(Debug, Clone)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$p` bound to the pool, whichever backend it is. The body is compiled
/// once per backend, so it must produce the same type for both.
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            Pool::Sqlite($p) => $body,
            Pool::Postgres($p) => $body,
        }
    };
}

/// Every row of `$query`, run on `$store`'s pool, as domain values ([`FromStored`]).
macro_rules! fetch_all {
    ($store:expr, $query:expr) => {
        on_pool!(&$store.pool, p => {
            let rows = $query.fetch_all(p).await?;
            rows.iter().map(FromStored::from_stored).collect()
        })
    };
}

/// Runs `$query` (returning early on an error) and gives the number of rows it affected.
macro_rules! execute {
    ($store:expr, $query:expr) => {
        on_pool!(&$store.pool, p => $query.execute(p).await?.rows_affected())
    };
}

mod chain;
mod client_controls;
mod cluster;
mod incident;
mod page;
mod warden_secrets;

pub use cluster::{LeaseRow, ReplicaRow};

use chain::Batch;
pub(in crate::store) use chain::{CHAINED_COLUMNS, ChainRows, Dialect, SELECT_HEAD};

/// The state store on SQLite or PostgreSQL; open one with `SqliteStore::open` or
/// `PostgresStore::connect`.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: Pool,
    dialect: &'static Dialect,
    /// Serialises this process's SQLite audit appends, so that its tasks queue here instead
    /// of spinning on SQLite's busy handler; PostgreSQL appends queue on the chain head's
    /// row lock alone.
    append_lock: Arc<tokio::sync::Mutex<()>>,
    /// The leader's fencing token when this copy does leader-only work
    /// ([`SqlStore::fenced`]): its checkpoint, retention and cursor writes are refused
    /// once the token no longer holds the lease.
    fence: Option<i64>,
}

impl SqlStore {
    /// Brings `pool`'s schema up to date with the dialect's migrations and the one-time
    /// chaining of pre-chain audit rows, and opens the store on it.
    pub(super) async fn open(pool: Pool, dialect: &'static Dialect) -> Result<Self, StoreError> {
        on_pool!(&pool, p => dialect.migrator.run(p).await?);
        let store = Self {
            pool,
            dialect,
            append_lock: Arc::new(tokio::sync::Mutex::new(())),
            fence: None,
        };
        store.chain_legacy_audit().await?;
        Ok(store)
    }

    /// The connection pool, for tools and tests that need raw SQL.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

/// Table names come from this closed match only, so the formatted SQL below is safe.
fn credential_table(t: CredentialTable) -> &'static str {
    match t {
        CredentialTable::Admin => "admin_credentials",
        CredentialTable::Node => "node_credentials",
    }
}

#[async_trait::async_trait]
impl StateStore for SqlStore {
    async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(on_pool!(&self.pool, p => {
            sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
                .bind(key)
                .fetch_optional(p)
                .await?
        }))
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        if let Some(token) = self.fence {
            let write = sqlx::query(
                "INSERT INTO meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            );
            self.fenced_execute(token, write.bind(key).bind(value))
                .await?;
            return Ok(());
        }
        execute!(
            self,
            sqlx::query(
                "INSERT INTO meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            )
            .bind(key)
            .bind(value)
        );
        Ok(())
    }

    async fn next_snapshot_version(&self) -> Result<u64, StoreError> {
        self.allocate_snapshot_version().await
    }

    async fn snapshot_version(&self) -> Result<u64, StoreError> {
        self.read_snapshot_version().await
    }

    async fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        self.send_notify(channel, payload).await
    }

    async fn record_secret_version(
        &self,
        reference: &str,
        fingerprint: &str,
    ) -> Result<u64, StoreError> {
        match self.pool {
            Pool::Postgres(_) => self.record_secret_version_pg(reference, fingerprint).await,
            Pool::Sqlite(_) => Ok(0),
        }
    }

    async fn list_secret_versions(&self) -> Result<Vec<(String, String)>, StoreError> {
        match self.pool {
            Pool::Postgres(_) => self.list_secret_versions_pg().await,
            Pool::Sqlite(_) => Ok(Vec::new()),
        }
    }

    async fn upsert_provider(&self, v: &Provider) -> Result<(), StoreError> {
        execute!(
            self,
            sqlx::query(
                "INSERT INTO providers (name, format, base_url, source, created_at, passthrough, drop_params, ca_pem)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (name) DO UPDATE SET format = EXCLUDED.format, base_url = EXCLUDED.base_url,
                 source = EXCLUDED.source, passthrough = EXCLUDED.passthrough, drop_params = EXCLUDED.drop_params,
                 ca_pem = EXCLUDED.ca_pem",
            )
            .bind(&v.name)
            .bind(v.format.as_str())
            .bind(&v.base_url)
            .bind(v.source.as_str())
            .bind(v.created_at)
            .bind(v.passthrough)
            .bind(list_to_text(&v.drop_params))
            .bind(v.ca_pem.as_deref())
        );
        Ok(())
    }

    async fn list_providers(&self) -> Result<Vec<Provider>, StoreError> {
        fetch_all!(self, sqlx::query("SELECT * FROM providers ORDER BY name"))
    }

    async fn delete_provider(&self, name: &str) -> Result<bool, StoreError> {
        let n = execute!(
            self,
            sqlx::query("DELETE FROM providers WHERE name = $1").bind(name)
        );
        Ok(n > 0)
    }

    async fn insert_provider_key(&self, k: &ProviderKey) -> Result<(), StoreError> {
        execute!(
            self,
            sqlx::query(
                "INSERT INTO provider_keys (id, provider, secret_name, fingerprint, created_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&k.id)
            .bind(&k.provider)
            .bind(&k.secret_name)
            .bind(&k.fingerprint)
            .bind(k.created_at)
        );
        Ok(())
    }

    async fn list_provider_keys(&self) -> Result<Vec<ProviderKey>, StoreError> {
        fetch_all!(
            self,
            sqlx::query("SELECT * FROM provider_keys ORDER BY provider, created_at, id")
        )
    }

    async fn delete_provider_key(&self, provider: &str, id: &str) -> Result<bool, StoreError> {
        let n = execute!(
            self,
            sqlx::query("DELETE FROM provider_keys WHERE provider = $1 AND id = $2")
                .bind(provider)
                .bind(id)
        );
        Ok(n > 0)
    }

    async fn upsert_model(&self, m: &Model) -> Result<(), StoreError> {
        execute!(
            self,
            sqlx::query(
                "INSERT INTO models (alias, provider, upstream_model, source, created_at, fallbacks, weight)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (alias) DO UPDATE SET provider = EXCLUDED.provider,
                 upstream_model = EXCLUDED.upstream_model, source = EXCLUDED.source,
                 fallbacks = EXCLUDED.fallbacks, weight = EXCLUDED.weight",
            )
            .bind(&m.alias)
            .bind(&m.provider)
            .bind(&m.upstream_model)
            .bind(m.source.as_str())
            .bind(m.created_at)
            .bind(list_to_text(&m.fallbacks))
            .bind(i64::from(m.weight))
        );
        Ok(())
    }

    async fn upsert_deployment(&self, d: &Deployment) -> Result<(), StoreError> {
        execute!(
            self,
            sqlx::query(
                "INSERT INTO deployments (alias, provider, upstream_model, weight) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (alias, provider, upstream_model) DO UPDATE SET weight = EXCLUDED.weight",
            )
            .bind(&d.alias)
            .bind(&d.provider)
            .bind(&d.upstream_model)
            .bind(i64::from(d.weight))
        );
        Ok(())
    }

    async fn delete_deployment(
        &self,
        alias: &str,
        provider: &str,
        upstream_model: &str,
    ) -> Result<bool, StoreError> {
        let n = execute!(
            self,
            sqlx::query(
                "DELETE FROM deployments WHERE alias = $1 AND provider = $2 AND upstream_model = $3",
            )
            .bind(alias)
            .bind(provider)
            .bind(upstream_model)
        );
        Ok(n > 0)
    }

    async fn list_deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        fetch_all!(
            self,
            sqlx::query("SELECT * FROM deployments ORDER BY alias, provider, upstream_model")
        )
    }

    async fn upsert_policy(&self, v: &PolicyRecord) -> Result<(), StoreError> {
        let (kind, id) = v.target.parts();
        let l = &v.limits;
        execute!(
            self,
            sqlx::query(
                "INSERT INTO policies (target_kind, target_id, rpm, tpm, max_parallel, max_budget_micros,
                     budget_period_secs, source, updated_at, max_tokens)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (target_kind, target_id) DO UPDATE SET rpm = EXCLUDED.rpm, tpm = EXCLUDED.tpm,
                 max_tokens = EXCLUDED.max_tokens, max_parallel = EXCLUDED.max_parallel,
                 max_budget_micros = EXCLUDED.max_budget_micros,
                 budget_period_secs = EXCLUDED.budget_period_secs, source = EXCLUDED.source,
                 updated_at = EXCLUDED.updated_at",
            )
            .bind(kind)
            .bind(id)
            .bind(bigint(l.rpm))
            .bind(bigint(l.tpm))
            .bind(i64::from(l.max_parallel))
            .bind(bigint(l.max_budget_micros))
            .bind(bigint(l.budget_period_secs))
            .bind(v.source.as_str())
            .bind(v.updated_at)
            .bind(bigint(l.max_tokens))
        );
        Ok(())
    }

    async fn delete_policy(&self, target: &PolicyTarget) -> Result<bool, StoreError> {
        let (kind, id) = target.parts();
        let n = execute!(
            self,
            sqlx::query("DELETE FROM policies WHERE target_kind = $1 AND target_id = $2")
                .bind(kind)
                .bind(id)
        );
        Ok(n > 0)
    }

    async fn list_policies(&self) -> Result<Vec<PolicyRecord>, StoreError> {
        fetch_all!(
            self,
            sqlx::query("SELECT * FROM policies ORDER BY target_kind, target_id")
        )
    }

    async fn upsert_price(&self, alias: &str, price: Price) -> Result<(), StoreError> {
        execute!(
            self,
            sqlx::query(
                "INSERT INTO prices (alias, input_per_mtok, output_per_mtok) VALUES ($1, $2, $3)
                 ON CONFLICT (alias) DO UPDATE SET input_per_mtok = EXCLUDED.input_per_mtok,
                 output_per_mtok = EXCLUDED.output_per_mtok",
            )
            .bind(alias)
            .bind(price.input_per_mtok)
            .bind(price.output_per_mtok)
        );
        Ok(())
    }

    async fn list_prices(&self) -> Result<Vec<(String, Price)>, StoreError> {
        fetch_all!(self, sqlx::query("SELECT * FROM prices ORDER BY alias"))
    }

    async fn set_provider_key_state(
        &self,
        provider: &str,
        id: &str,
        disabled_reason: Option<&str>,
        at: Option<i64>,
        bump_epoch: bool,
    ) -> Result<bool, StoreError> {
        let n = execute!(
            self,
            sqlx::query(
                "UPDATE provider_keys SET disabled_reason = $1, disabled_at = $2,
                 health_epoch = health_epoch + $3 WHERE provider = $4 AND id = $5",
            )
            .bind(disabled_reason)
            .bind(at)
            .bind(i64::from(bump_epoch))
            .bind(provider)
            .bind(id)
        );
        Ok(n > 0)
    }

    async fn set_provider_key_fingerprint(
        &self,
        provider: &str,
        id: &str,
        fingerprint: &str,
    ) -> Result<bool, StoreError> {
        let n = execute!(
            self,
            sqlx::query(
                "UPDATE provider_keys SET fingerprint = $1 WHERE provider = $2 AND id = $3"
            )
            .bind(fingerprint)
            .bind(provider)
            .bind(id)
        );
        Ok(n > 0)
    }

    async fn list_models(&self) -> Result<Vec<Model>, StoreError> {
        fetch_all!(self, sqlx::query("SELECT * FROM models ORDER BY alias"))
    }

    async fn delete_model(&self, alias: &str) -> Result<bool, StoreError> {
        let n = execute!(
            self,
            sqlx::query("DELETE FROM models WHERE alias = $1").bind(alias)
        );
        Ok(n > 0)
    }

    async fn insert_signing_key(&self, k: &SigningKey) -> Result<(), StoreError> {
        execute!(
            self,
            sqlx::query(
                "INSERT INTO signing_keys (kid, algorithm, secret_name, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(&k.kid)
            .bind(&k.algorithm)
            .bind(&k.secret_name)
            .bind(k.created_at)
        );
        Ok(())
    }

    async fn list_signing_keys(&self) -> Result<Vec<SigningKey>, StoreError> {
        fetch_all!(
            self,
            sqlx::query("SELECT * FROM signing_keys ORDER BY created_at, kid")
        )
    }

    async fn insert_token(&self, t: &TokenRecord) -> Result<(), StoreError> {
        execute!(
            self,
            sqlx::query(
                "INSERT INTO tokens (jti, subject, scopes, models, kid, issued_at, expires_at, revoked_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&t.jti)
            .bind(&t.subject)
            .bind(list_to_text(&t.scopes))
            .bind(list_to_text(&t.models))
            .bind(&t.kid)
            .bind(t.issued_at)
            .bind(t.expires_at)
            .bind(t.revoked_at)
        );
        Ok(())
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        fetch_all!(
            self,
            sqlx::query("SELECT * FROM tokens ORDER BY issued_at, jti")
        )
    }

    async fn get_token(&self, jti: &str) -> Result<Option<TokenRecord>, StoreError> {
        on_pool!(&self.pool, p => {
            let row = sqlx::query("SELECT * FROM tokens WHERE jti = $1")
                .bind(jti)
                .fetch_optional(p)
                .await?;
            row.as_ref().map(TokenRecord::from_stored).transpose()
        })
    }

    async fn revoke_token(&self, jti: &str, at: i64) -> Result<bool, StoreError> {
        let n = execute!(
            self,
            sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE jti = $2 AND revoked_at IS NULL")
                .bind(at)
                .bind(jti)
        );
        Ok(n > 0)
    }

    async fn insert_virtual_key(&self, k: &VirtualKeyRecord) -> Result<(), StoreError> {
        execute!(
            self,
            sqlx::query(
                "INSERT INTO virtual_keys (id, hash, name, owner, scopes, models, created_at, expires_at, revoked_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&k.id)
            .bind(&k.hash)
            .bind(&k.name)
            .bind(&k.owner)
            .bind(list_to_text(&k.scopes))
            .bind(list_to_text(&k.models))
            .bind(k.created_at)
            .bind(k.expires_at)
            .bind(k.revoked_at)
        );
        Ok(())
    }

    async fn list_virtual_keys(&self) -> Result<Vec<VirtualKeyRecord>, StoreError> {
        fetch_all!(
            self,
            sqlx::query("SELECT * FROM virtual_keys ORDER BY created_at, id")
        )
    }

    async fn revoke_virtual_key(&self, id: &str, at: i64) -> Result<bool, StoreError> {
        let n = execute!(
            self,
            sqlx::query(
                "UPDATE virtual_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL"
            )
            .bind(at)
            .bind(id)
        );
        Ok(n > 0)
    }

    async fn rotate_virtual_key(
        &self,
        id: &str,
        new_hash: &str,
        previous_expires_at: i64,
    ) -> Result<bool, StoreError> {
        let n = execute!(
            self,
            sqlx::query(
                "UPDATE virtual_keys SET previous_hash = hash, hash = $1, previous_expires_at = $2
                 WHERE id = $3 AND revoked_at IS NULL",
            )
            .bind(new_hash)
            .bind(previous_expires_at)
            .bind(id)
        );
        Ok(n > 0)
    }

    async fn insert_credential(
        &self,
        table: CredentialTable,
        c: &CredentialRecord,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO {} (id, hash, name, created_at, revoked_at, role, expires_at, cert_spki_sha256)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            credential_table(table)
        );
        execute!(
            self,
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&c.id)
                .bind(&c.hash)
                .bind(&c.name)
                .bind(c.created_at)
                .bind(c.revoked_at)
                .bind(&c.role)
                .bind(c.expires_at)
                .bind(&c.cert_spki_sha256)
        );
        Ok(())
    }

    async fn find_credential(
        &self,
        table: CredentialTable,
        hash: &str,
    ) -> Result<Option<CredentialRecord>, StoreError> {
        let sql = format!("SELECT * FROM {} WHERE hash = $1", credential_table(table));
        on_pool!(&self.pool, p => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(hash)
                .fetch_optional(p)
                .await?;
            row.as_ref().map(CredentialRecord::from_stored).transpose()
        })
    }

    async fn count_credentials(&self, table: CredentialTable) -> Result<u64, StoreError> {
        let sql = format!("SELECT COUNT(*) FROM {}", credential_table(table));
        let n: i64 = on_pool!(&self.pool, p => {
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(p).await?
        });
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn revoke_credentials_named(
        &self,
        table: CredentialTable,
        name: &str,
        at: i64,
    ) -> Result<u64, StoreError> {
        let sql = format!(
            "UPDATE {} SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL",
            credential_table(table)
        );
        Ok(execute!(
            self,
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(at).bind(name)
        ))
    }

    async fn insert_bootstrap_admin(&self, c: &CredentialRecord) -> Result<bool, StoreError> {
        on_pool!(&self.pool, p => {
            let mut tx = p.begin().await?;
            let won = sqlx::query(
                "INSERT INTO admin_bootstrap (id, credential_id, created_at) VALUES ('admin', $1, $2)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(&c.id)
            .bind(c.created_at)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !won {
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO admin_credentials (id, hash, name, created_at, revoked_at, role, expires_at, cert_spki_sha256)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&c.id)
            .bind(&c.hash)
            .bind(&c.name)
            .bind(c.created_at)
            .bind(c.revoked_at)
            .bind(&c.role)
            .bind(c.expires_at)
            .bind(&c.cert_spki_sha256)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    async fn list_credentials(
        &self,
        table: CredentialTable,
    ) -> Result<Vec<CredentialRecord>, StoreError> {
        let sql = format!(
            "SELECT * FROM {} ORDER BY created_at, id",
            credential_table(table)
        );
        fetch_all!(self, sqlx::query(sqlx::AssertSqlSafe(sql)))
    }

    async fn revoke_credential(
        &self,
        table: CredentialTable,
        id: &str,
        at: i64,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE {} SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
            credential_table(table)
        );
        let n = execute!(
            self,
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(at).bind(id)
        );
        Ok(n > 0)
    }

    async fn upsert_node(&self, n: &NodeRecord) -> Result<(), StoreError> {
        execute!(
            self,
            sqlx::query(
                "INSERT INTO nodes (node_id, credential_id, acked_version, last_seen, software_version, replica_id)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (node_id) DO UPDATE SET credential_id = EXCLUDED.credential_id,
                 acked_version = EXCLUDED.acked_version, last_seen = EXCLUDED.last_seen,
                 software_version = EXCLUDED.software_version, replica_id = EXCLUDED.replica_id",
            )
            .bind(&n.node_id)
            .bind(&n.credential_id)
            .bind(bigint(n.acked_version))
            .bind(n.last_seen)
            .bind(&n.software_version)
            .bind(&n.replica_id)
        );
        Ok(())
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        fetch_all!(self, sqlx::query("SELECT * FROM nodes ORDER BY node_id"))
    }

    async fn append_audit(&self, r: &AuditRecord) -> Result<AuditLink, StoreError> {
        let mut links = self.append_audit_batch(std::slice::from_ref(r)).await?;
        links
            .pop()
            .ok_or_else(|| StoreError::Malformed("append returned no link".into()))
    }

    async fn append_audit_batch(
        &self,
        records: &[AuditRecord],
    ) -> Result<Vec<AuditLink>, StoreError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let _serial = match self.pool {
            Pool::Sqlite(_) => Some(self.append_lock.lock().await),
            Pool::Postgres(_) => None,
        };
        self.append_chained(Batch::Records(records)).await
    }

    async fn append_audit_new(
        &self,
        records: &[AuditRecord],
    ) -> Result<Vec<AuditLink>, StoreError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let _serial = match self.pool {
            Pool::Sqlite(_) => Some(self.append_lock.lock().await),
            Pool::Postgres(_) => None,
        };
        self.append_chained(Batch::New(records)).await
    }

    async fn list_audit(
        &self,
        limit: u32,
        action: Option<&str>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let limit = i64::from(limit);
        match action {
            Some(a) => fetch_all!(
                self,
                sqlx::query(
                    "SELECT * FROM audit WHERE action = $1
                     ORDER BY timestamp_ms DESC, id DESC LIMIT $2",
                )
                .bind(a)
                .bind(limit)
            ),
            None => fetch_all!(
                self,
                sqlx::query("SELECT * FROM audit ORDER BY timestamp_ms DESC, id DESC LIMIT $1")
                    .bind(limit)
            ),
        }
    }

    async fn audit_head(&self) -> Result<ChainHead, StoreError> {
        on_pool!(&self.pool, p => {
            ChainHead::from_stored(&sqlx::query(SELECT_HEAD).fetch_one(p).await?)
        })
    }

    async fn list_audit_range(
        &self,
        from_seq: u64,
        limit: u32,
    ) -> Result<Vec<ChainedAudit>, StoreError> {
        fetch_all!(
            self,
            sqlx::query("SELECT * FROM audit WHERE seq >= $1 ORDER BY seq LIMIT $2")
                .bind(bigint(from_seq))
                .bind(i64::from(limit))
        )
    }

    async fn insert_checkpoint(&self, c: &AuditCheckpoint) -> Result<(), StoreError> {
        const SQL: &str =
            "INSERT INTO audit_checkpoints (seq_upto, hash, signature, key_id, created_at_ms)
             VALUES ($1, $2, $3, $4, $5)";
        macro_rules! bound {
            ($q:expr) => {
                $q.bind(bigint(c.seq_upto))
                    .bind(&c.hash)
                    .bind(&c.signature)
                    .bind(&c.key_id)
                    .bind(c.created_at_ms)
            };
        }
        if let Some(token) = self.fence {
            self.fenced_execute(token, bound!(sqlx::query(SQL))).await?;
            return Ok(());
        }
        execute!(self, bound!(sqlx::query(SQL)));
        Ok(())
    }

    async fn list_checkpoints(&self, from_seq: u64) -> Result<Vec<AuditCheckpoint>, StoreError> {
        fetch_all!(
            self,
            sqlx::query(
                "SELECT * FROM audit_checkpoints WHERE seq_upto >= $1 ORDER BY seq_upto, key_id",
            )
            .bind(bigint(from_seq))
        )
    }

    async fn delete_audit_older_than(&self, ts_ms: i64) -> Result<u64, StoreError> {
        // One statement: the prefix ends at the latest checkpoint before the first row that
        // is too young to delete (no checkpoint there → nothing is deleted).
        const SQL: &str = "DELETE FROM audit WHERE seq <= (
             SELECT MAX(seq_upto) FROM audit_checkpoints WHERE seq_upto < COALESCE(
                 (SELECT MIN(seq) FROM audit WHERE timestamp_ms >= $1),
                 9223372036854775807))";
        if let Some(token) = self.fence {
            return self
                .fenced_execute(token, sqlx::query(SQL).bind(ts_ms))
                .await;
        }
        Ok(execute!(self, sqlx::query(SQL).bind(ts_ms)))
    }

    async fn get_warden_secret(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.row_get_warden_secret(name).await
    }

    async fn put_warden_secret(
        &self,
        name: &str,
        sealed: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.row_put_warden_secret(name, sealed, now).await
    }

    async fn insert_warden_secret(
        &self,
        name: &str,
        sealed: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.row_insert_warden_secret(name, sealed, now).await
    }

    async fn replace_warden_secret(
        &self,
        name: &str,
        expected: &str,
        sealed: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.row_replace_warden_secret(name, expected, sealed, now)
            .await
    }

    async fn list_warden_secret_names(&self) -> Result<Vec<String>, StoreError> {
        self.row_list_warden_secret_names().await
    }

    async fn delete_warden_secret(&self, name: &str) -> Result<bool, StoreError> {
        self.row_delete_warden_secret(name).await
    }
}
