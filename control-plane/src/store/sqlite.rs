//! SQLite implementation of [`StateStore`] (WAL mode, migrations in `migrations/sqlite/`).
//!
//! Audit appends are serialised twice: by an in-process mutex (so tasks of this process
//! queue instead of spinning on SQLite's busy handler) and by `BEGIN IMMEDIATE` (so another
//! process writing the same file cannot interleave between reading the chain head and
//! advancing it).

use std::path::Path;
use std::str::FromStr as _;
use std::sync::Arc;

use sqlx::Row as _;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
};

use super::{StateStore, StoreError, seq_from_db, seq_to_db};
use crate::audit::chain::next_link;
use crate::audit::{AuditCheckpoint, AuditLink, ChainHead, ChainedAudit};
use crate::domain::{
    ApiFormat, AuditRecord, CredentialRecord, CredentialTable, Deployment, Limits, Model,
    NodeRecord, PolicyRecord, PolicyTarget, Price, Provider, ProviderKey, SigningKey, Source,
    TokenRecord, VirtualKeyRecord,
};

/// The embedded state store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Serialises this process's audit appends (see the module docs).
    append_lock: Arc<tokio::sync::Mutex<()>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and runs migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        let store = Self {
            pool,
            append_lock: Arc::new(tokio::sync::Mutex::new(())),
        };
        store.chain_legacy_audit().await?;
        Ok(store)
    }

    /// The connection pool, for tools and tests that need raw SQL.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// One-time backfill after the `0002_audit_chain` migration: chains the rows of
    /// `audit_legacy` (oldest first) and drops that table, in one transaction.
    async fn chain_legacy_audit(&self) -> Result<(), StoreError> {
        const EXISTS: &str =
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'audit_legacy'";
        let exists: i64 = sqlx::query_scalar(EXISTS).fetch_one(&self.pool).await?;
        if exists == 0 {
            return Ok(());
        }
        let _serial = self.append_lock.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let exists: i64 = sqlx::query_scalar(EXISTS).fetch_one(&mut *tx).await?;
        if exists == 0 {
            return Ok(());
        }
        let rows = sqlx::query("SELECT * FROM audit_legacy ORDER BY timestamp_ms, id")
            .fetch_all(&mut *tx)
            .await?;
        let mut head = read_head(&mut tx).await?;
        for row in &rows {
            let record = audit_from(row)?;
            let link = next_link(&head, &record)?;
            insert_chained(&mut tx, &record, &link).await?;
            head = ChainHead {
                seq: link.seq,
                hash: link.hash,
            };
        }
        write_head(&mut tx, &head).await?;
        sqlx::query("DROP TABLE audit_legacy")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if !rows.is_empty() {
            tracing::info!(
                rows = rows.len(),
                "chained audit rows written before the audit chain existed"
            );
        }
        Ok(())
    }
}

type Tx = sqlx::Transaction<'static, sqlx::Sqlite>;

async fn read_head(tx: &mut Tx) -> Result<ChainHead, StoreError> {
    let row = sqlx::query("SELECT seq, hash FROM audit_chain_head WHERE id = 1")
        .fetch_one(&mut **tx)
        .await?;
    Ok(ChainHead {
        seq: seq_from_db(row.try_get("seq")?)?,
        hash: row.try_get("hash")?,
    })
}

async fn write_head(tx: &mut Tx, head: &ChainHead) -> Result<(), StoreError> {
    sqlx::query("UPDATE audit_chain_head SET seq = ?, hash = ? WHERE id = 1")
        .bind(seq_to_db(head.seq))
        .bind(&head.hash)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn insert_chained(tx: &mut Tx, r: &AuditRecord, link: &AuditLink) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit (id, seq, timestamp_ms, action, actor, subject, result, detail, prev_hash, hash)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&r.id)
    .bind(seq_to_db(link.seq))
    .bind(r.timestamp_ms)
    .bind(&r.action)
    .bind(&r.actor)
    .bind(&r.subject)
    .bind(&r.result)
    .bind(&r.detail)
    .bind(&link.prev_hash)
    .bind(&link.hash)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn audit_from(row: &SqliteRow) -> Result<AuditRecord, StoreError> {
    Ok(AuditRecord {
        id: row.try_get("id")?,
        timestamp_ms: row.try_get("timestamp_ms")?,
        action: row.try_get("action")?,
        actor: row.try_get("actor")?,
        subject: row.try_get("subject")?,
        result: row.try_get("result")?,
        detail: row.try_get("detail")?,
    })
}

fn chained_from(row: &SqliteRow) -> Result<ChainedAudit, StoreError> {
    Ok(ChainedAudit {
        seq: seq_from_db(row.try_get("seq")?)?,
        record: audit_from(row)?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

fn checkpoint_from(row: &SqliteRow) -> Result<AuditCheckpoint, StoreError> {
    Ok(AuditCheckpoint {
        seq_upto: seq_from_db(row.try_get("seq_upto")?)?,
        hash: row.try_get("hash")?,
        signature: row.try_get("signature")?,
        key_id: row.try_get("key_id")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

fn list_to_text(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".to_owned())
}

fn text_to_list(s: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Malformed(format!("list column: {e}")))
}

/// Table names come from this closed match only, so the formatted SQL below is safe.
fn table_name(t: CredentialTable) -> &'static str {
    match t {
        CredentialTable::Admin => "admin_credentials",
        CredentialTable::Node => "node_credentials",
    }
}

fn provider_from(row: &SqliteRow) -> Result<Provider, StoreError> {
    let format: String = row.try_get("format")?;
    Ok(Provider {
        name: row.try_get("name")?,
        format: ApiFormat::parse(&format)
            .ok_or_else(|| StoreError::Malformed(format!("provider format {format}")))?,
        base_url: row.try_get("base_url")?,
        source: Source::parse(&row.try_get::<String, _>("source")?),
        created_at: row.try_get("created_at")?,
        passthrough: row.try_get("passthrough")?,
        drop_params: text_to_list(&row.try_get::<String, _>("drop_params")?)?,
    })
}

fn token_from(row: &SqliteRow) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        jti: row.try_get("jti")?,
        subject: row.try_get("subject")?,
        scopes: text_to_list(&row.try_get::<String, _>("scopes")?)?,
        models: text_to_list(&row.try_get::<String, _>("models")?)?,
        kid: row.try_get("kid")?,
        issued_at: row.try_get("issued_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

fn credential_from(row: &SqliteRow) -> Result<CredentialRecord, StoreError> {
    Ok(CredentialRecord {
        id: row.try_get("id")?,
        hash: row.try_get("hash")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

#[async_trait::async_trait]
impl StateStore for SqliteStore {
    async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn upsert_provider(&self, p: &Provider) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO providers (name, format, base_url, source, created_at, passthrough, drop_params)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT(name) DO UPDATE SET format = excluded.format, base_url = excluded.base_url,
             source = excluded.source, passthrough = excluded.passthrough, drop_params = excluded.drop_params",
        )
        .bind(&p.name)
        .bind(p.format.as_str())
        .bind(&p.base_url)
        .bind(p.source.as_str())
        .bind(p.created_at)
        .bind(p.passthrough)
        .bind(list_to_text(&p.drop_params))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_providers(&self) -> Result<Vec<Provider>, StoreError> {
        sqlx::query("SELECT * FROM providers ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(provider_from)
            .collect()
    }

    async fn delete_provider(&self, name: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM providers WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn insert_provider_key(&self, k: &ProviderKey) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO provider_keys (id, provider, secret_name, fingerprint, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&k.id)
        .bind(&k.provider)
        .bind(&k.secret_name)
        .bind(&k.fingerprint)
        .bind(k.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_provider_keys(&self) -> Result<Vec<ProviderKey>, StoreError> {
        let rows = sqlx::query("SELECT * FROM provider_keys ORDER BY provider, created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ProviderKey {
                    id: row.try_get("id")?,
                    provider: row.try_get("provider")?,
                    secret_name: row.try_get("secret_name")?,
                    fingerprint: row.try_get("fingerprint")?,
                    created_at: row.try_get("created_at")?,
                    disabled_reason: row.try_get("disabled_reason")?,
                    disabled_at: row.try_get("disabled_at")?,
                    health_epoch: u64::try_from(row.try_get::<i64, _>("health_epoch")?)
                        .unwrap_or(0),
                })
            })
            .collect()
    }

    async fn delete_provider_key(&self, provider: &str, id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM provider_keys WHERE provider = ? AND id = ?")
            .bind(provider)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn upsert_model(&self, m: &Model) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO models (alias, provider, upstream_model, source, created_at, fallbacks, weight) VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT(alias) DO UPDATE SET provider = excluded.provider,
             upstream_model = excluded.upstream_model, source = excluded.source, fallbacks = excluded.fallbacks,
             weight = excluded.weight",
        )
        .bind(&m.alias)
        .bind(&m.provider)
        .bind(&m.upstream_model)
        .bind(m.source.as_str())
        .bind(m.created_at)
        .bind(list_to_text(&m.fallbacks))
        .bind(i64::from(m.weight))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_models(&self) -> Result<Vec<Model>, StoreError> {
        let rows = sqlx::query("SELECT * FROM models ORDER BY alias")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Model {
                    alias: row.try_get("alias")?,
                    provider: row.try_get("provider")?,
                    upstream_model: row.try_get("upstream_model")?,
                    source: Source::parse(&row.try_get::<String, _>("source")?),
                    created_at: row.try_get("created_at")?,
                    fallbacks: text_to_list(&row.try_get::<String, _>("fallbacks")?)?,
                    weight: u32::try_from(row.try_get::<i64, _>("weight")?).unwrap_or(1),
                })
            })
            .collect()
    }

    async fn delete_model(&self, alias: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM models WHERE alias = ?")
            .bind(alias)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn upsert_deployment(&self, d: &Deployment) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO deployments (alias, provider, upstream_model, weight) VALUES (?, ?, ?, ?) ON CONFLICT(alias, provider, upstream_model) DO UPDATE SET weight = excluded.weight")
            .bind(&d.alias)
            .bind(&d.provider)
            .bind(&d.upstream_model)
            .bind(i64::from(d.weight))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_deployment(
        &self,
        alias: &str,
        provider: &str,
        upstream_model: &str,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "DELETE FROM deployments WHERE alias = ? AND provider = ? AND upstream_model = ?",
        )
        .bind(alias)
        .bind(provider)
        .bind(upstream_model)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn list_deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM deployments ORDER BY alias, provider, upstream_model")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| {
                Ok(Deployment {
                    alias: row.try_get("alias")?,
                    provider: row.try_get("provider")?,
                    upstream_model: row.try_get("upstream_model")?,
                    weight: u32::try_from(row.try_get::<i64, _>("weight")?).unwrap_or(1),
                })
            })
            .collect()
    }

    async fn upsert_policy(&self, p: &PolicyRecord) -> Result<(), StoreError> {
        let (kind, id) = p.target.parts();
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO policies (target_kind, target_id, rpm, tpm, max_parallel, max_budget_micros, budget_period_secs, source, updated_at, max_tokens)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT(target_kind, target_id) DO UPDATE SET rpm = excluded.rpm, tpm = excluded.tpm, max_tokens = excluded.max_tokens,
             max_parallel = excluded.max_parallel, max_budget_micros = excluded.max_budget_micros,
             budget_period_secs = excluded.budget_period_secs, source = excluded.source, updated_at = excluded.updated_at",
        )
        .bind(kind)
        .bind(id)
        .bind(int(p.limits.rpm))
        .bind(int(p.limits.tpm))
        .bind(i64::from(p.limits.max_parallel))
        .bind(int(p.limits.max_budget_micros))
        .bind(int(p.limits.budget_period_secs))
        .bind(p.source.as_str())
        .bind(p.updated_at)
        .bind(int(p.limits.max_tokens))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_policy(&self, target: &PolicyTarget) -> Result<bool, StoreError> {
        let (kind, id) = target.parts();
        let r = sqlx::query("DELETE FROM policies WHERE target_kind = ? AND target_id = ?")
            .bind(kind)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn list_policies(&self) -> Result<Vec<PolicyRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM policies ORDER BY target_kind, target_id")
            .fetch_all(&self.pool)
            .await?;
        let uint = |v: i64| u64::try_from(v).unwrap_or(0);
        rows.iter()
            .map(|row| {
                let kind: String = row.try_get("target_kind")?;
                let id: String = row.try_get("target_id")?;
                Ok(PolicyRecord {
                    target: PolicyTarget::from_parts(&kind, &id).ok_or_else(|| {
                        StoreError::Malformed(format!("policy target kind {kind}"))
                    })?,
                    limits: Limits {
                        rpm: uint(row.try_get("rpm")?),
                        tpm: uint(row.try_get("tpm")?),
                        max_parallel: u32::try_from(row.try_get::<i64, _>("max_parallel")?)
                            .unwrap_or(0),
                        max_budget_micros: uint(row.try_get("max_budget_micros")?),
                        budget_period_secs: uint(row.try_get("budget_period_secs")?),
                        max_tokens: uint(row.try_get("max_tokens")?),
                    },
                    source: Source::parse(&row.try_get::<String, _>("source")?),
                    updated_at: row.try_get("updated_at")?,
                })
            })
            .collect()
    }

    async fn upsert_price(&self, alias: &str, price: Price) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO prices (alias, input_per_mtok, output_per_mtok) VALUES (?, ?, ?) ON CONFLICT(alias) DO UPDATE SET input_per_mtok = excluded.input_per_mtok, output_per_mtok = excluded.output_per_mtok")
            .bind(alias)
            .bind(price.input_per_mtok)
            .bind(price.output_per_mtok)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn list_prices(&self) -> Result<Vec<(String, Price)>, StoreError> {
        let rows = sqlx::query("SELECT * FROM prices ORDER BY alias")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("alias")?,
                    Price {
                        input_per_mtok: row.try_get("input_per_mtok")?,
                        output_per_mtok: row.try_get("output_per_mtok")?,
                    },
                ))
            })
            .collect()
    }

    async fn set_provider_key_state(
        &self,
        provider: &str,
        id: &str,
        disabled_reason: Option<&str>,
        at: Option<i64>,
        bump_epoch: bool,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE provider_keys SET disabled_reason = ?, disabled_at = ?, health_epoch = health_epoch + ? WHERE provider = ? AND id = ?")
            .bind(disabled_reason)
            .bind(at)
            .bind(i64::from(bump_epoch))
            .bind(provider)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn set_provider_key_fingerprint(
        &self,
        provider: &str,
        id: &str,
        fingerprint: &str,
    ) -> Result<bool, StoreError> {
        let r =
            sqlx::query("UPDATE provider_keys SET fingerprint = ? WHERE provider = ? AND id = ?")
                .bind(fingerprint)
                .bind(provider)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn insert_signing_key(&self, k: &SigningKey) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO signing_keys (kid, algorithm, secret_name, created_at) VALUES (?, ?, ?, ?)")
            .bind(&k.kid)
            .bind(&k.algorithm)
            .bind(&k.secret_name)
            .bind(k.created_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn list_signing_keys(&self) -> Result<Vec<SigningKey>, StoreError> {
        let rows = sqlx::query("SELECT * FROM signing_keys ORDER BY created_at, kid")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(SigningKey {
                    kid: row.try_get("kid")?,
                    algorithm: row.try_get("algorithm")?,
                    secret_name: row.try_get("secret_name")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    async fn insert_token(&self, t: &TokenRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tokens (jti, subject, scopes, models, kid, issued_at, expires_at, revoked_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&t.jti)
        .bind(&t.subject)
        .bind(list_to_text(&t.scopes))
        .bind(list_to_text(&t.models))
        .bind(&t.kid)
        .bind(t.issued_at)
        .bind(t.expires_at)
        .bind(t.revoked_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        sqlx::query("SELECT * FROM tokens ORDER BY issued_at, jti")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(token_from)
            .collect()
    }

    async fn get_token(&self, jti: &str) -> Result<Option<TokenRecord>, StoreError> {
        sqlx::query("SELECT * FROM tokens WHERE jti = ?")
            .bind(jti)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(token_from)
            .transpose()
    }

    async fn revoke_token(&self, jti: &str, at: i64) -> Result<bool, StoreError> {
        let r =
            sqlx::query("UPDATE tokens SET revoked_at = ? WHERE jti = ? AND revoked_at IS NULL")
                .bind(at)
                .bind(jti)
                .execute(&self.pool)
                .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn insert_virtual_key(&self, k: &VirtualKeyRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO virtual_keys (id, hash, name, owner, scopes, models, created_at, expires_at, revoked_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_virtual_keys(&self) -> Result<Vec<VirtualKeyRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM virtual_keys ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(VirtualKeyRecord {
                    id: row.try_get("id")?,
                    hash: row.try_get("hash")?,
                    name: row.try_get("name")?,
                    owner: row.try_get("owner")?,
                    scopes: text_to_list(&row.try_get::<String, _>("scopes")?)?,
                    models: text_to_list(&row.try_get::<String, _>("models")?)?,
                    created_at: row.try_get("created_at")?,
                    expires_at: row.try_get("expires_at")?,
                    revoked_at: row.try_get("revoked_at")?,
                    previous_hash: row.try_get("previous_hash")?,
                    previous_expires_at: row.try_get("previous_expires_at")?,
                })
            })
            .collect()
    }

    async fn revoke_virtual_key(&self, id: &str, at: i64) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE virtual_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn rotate_virtual_key(
        &self,
        id: &str,
        new_hash: &str,
        previous_expires_at: i64,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE virtual_keys SET previous_hash = hash, hash = ?, previous_expires_at = ? WHERE id = ? AND revoked_at IS NULL",
        )
        .bind(new_hash)
        .bind(previous_expires_at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn insert_credential(
        &self,
        table: CredentialTable,
        c: &CredentialRecord,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO {} (id, hash, name, created_at, revoked_at) VALUES (?, ?, ?, ?, ?)",
            table_name(table)
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&c.id)
            .bind(&c.hash)
            .bind(&c.name)
            .bind(c.created_at)
            .bind(c.revoked_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn find_credential(
        &self,
        table: CredentialTable,
        hash: &str,
    ) -> Result<Option<CredentialRecord>, StoreError> {
        let sql = format!("SELECT * FROM {} WHERE hash = ?", table_name(table));
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(credential_from)
            .transpose()
    }

    async fn count_credentials(&self, table: CredentialTable) -> Result<u64, StoreError> {
        let sql = format!("SELECT COUNT(*) FROM {}", table_name(table));
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn revoke_credentials_named(
        &self,
        table: CredentialTable,
        name: &str,
        at: i64,
    ) -> Result<u64, StoreError> {
        let sql = format!(
            "UPDATE {} SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
            table_name(table)
        );
        let r = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(at)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    async fn upsert_node(&self, n: &NodeRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO nodes (node_id, credential_id, acked_version, last_seen, software_version)
             VALUES (?, ?, ?, ?, ?)
             ON CONFLICT(node_id) DO UPDATE SET credential_id = excluded.credential_id,
             acked_version = excluded.acked_version, last_seen = excluded.last_seen,
             software_version = excluded.software_version",
        )
        .bind(&n.node_id)
        .bind(&n.credential_id)
        .bind(i64::try_from(n.acked_version).unwrap_or(i64::MAX))
        .bind(n.last_seen)
        .bind(&n.software_version)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM nodes ORDER BY node_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(NodeRecord {
                    node_id: row.try_get("node_id")?,
                    credential_id: row.try_get("credential_id")?,
                    acked_version: u64::try_from(row.try_get::<i64, _>("acked_version")?)
                        .unwrap_or(0),
                    last_seen: row.try_get("last_seen")?,
                    software_version: row.try_get("software_version")?,
                })
            })
            .collect()
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
        let _serial = self.append_lock.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut head = read_head(&mut tx).await?;
        let mut links = Vec::with_capacity(records.len());
        for r in records {
            let link = next_link(&head, r)?;
            insert_chained(&mut tx, r, &link).await?;
            head = ChainHead {
                seq: link.seq,
                hash: link.hash.clone(),
            };
            links.push(link);
        }
        write_head(&mut tx, &head).await?;
        tx.commit().await?;
        Ok(links)
    }

    async fn list_audit(
        &self,
        limit: u32,
        action: Option<&str>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = match action {
            Some(a) => sqlx::query(
                "SELECT * FROM audit WHERE action = ? ORDER BY timestamp_ms DESC, id DESC LIMIT ?",
            )
            .bind(a)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?,
            None => {
                sqlx::query("SELECT * FROM audit ORDER BY timestamp_ms DESC, id DESC LIMIT ?")
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(audit_from).collect()
    }

    async fn audit_head(&self) -> Result<ChainHead, StoreError> {
        let row = sqlx::query("SELECT seq, hash FROM audit_chain_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(ChainHead {
            seq: seq_from_db(row.try_get("seq")?)?,
            hash: row.try_get("hash")?,
        })
    }

    async fn list_audit_range(
        &self,
        from_seq: u64,
        limit: u32,
    ) -> Result<Vec<ChainedAudit>, StoreError> {
        sqlx::query("SELECT * FROM audit WHERE seq >= ? ORDER BY seq LIMIT ?")
            .bind(seq_to_db(from_seq))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(chained_from)
            .collect()
    }

    async fn insert_checkpoint(&self, c: &AuditCheckpoint) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_checkpoints (seq_upto, hash, signature, key_id, created_at_ms)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(seq_to_db(c.seq_upto))
        .bind(&c.hash)
        .bind(&c.signature)
        .bind(&c.key_id)
        .bind(c.created_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_checkpoints(&self, from_seq: u64) -> Result<Vec<AuditCheckpoint>, StoreError> {
        sqlx::query("SELECT * FROM audit_checkpoints WHERE seq_upto >= ? ORDER BY seq_upto, key_id")
            .bind(seq_to_db(from_seq))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(checkpoint_from)
            .collect()
    }

    async fn delete_audit_older_than(&self, ts_ms: i64) -> Result<u64, StoreError> {
        // One statement: the prefix ends at the latest checkpoint before the first row that
        // is too young to delete (no checkpoint there → nothing is deleted).
        let r = sqlx::query(
            "DELETE FROM audit WHERE seq <= (
                 SELECT MAX(seq_upto) FROM audit_checkpoints WHERE seq_upto < COALESCE(
                     (SELECT MIN(seq) FROM audit WHERE timestamp_ms >= ?),
                     9223372036854775807))",
        )
        .bind(ts_ms)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("state.db"))
            .await
            .unwrap();
        (dir, s)
    }

    #[tokio::test]
    async fn provider_delete_cascades_to_keys_and_models() {
        let (_d, s) = store().await;
        s.upsert_provider(&Provider {
            name: "p".into(),
            format: ApiFormat::OpenAi,
            base_url: "https://x/v1".into(),
            source: Source::Admin,
            created_at: 1,
            passthrough: false,
            drop_params: Vec::new(),
        })
        .await
        .unwrap();
        s.insert_provider_key(&ProviderKey {
            id: "k1".into(),
            provider: "p".into(),
            secret_name: "providers/p/k1".into(),
            fingerprint: "abc".into(),
            created_at: 1,
            disabled_reason: None,
            disabled_at: None,
            health_epoch: 0,
        })
        .await
        .unwrap();
        s.upsert_model(&Model {
            alias: "m".into(),
            provider: "p".into(),
            upstream_model: "m".into(),
            source: Source::Admin,
            created_at: 1,
            fallbacks: Vec::new(),
            weight: 1,
        })
        .await
        .unwrap();
        assert!(s.delete_provider("p").await.unwrap());
        assert!(s.list_provider_keys().await.unwrap().is_empty());
        assert!(s.list_models().await.unwrap().is_empty());
        assert!(!s.delete_provider("p").await.unwrap());
    }

    #[tokio::test]
    async fn tokens_revoke_once_and_meta_round_trips() {
        let (_d, s) = store().await;
        let t = TokenRecord {
            jti: "j".into(),
            subject: "s".into(),
            scopes: vec!["read".into()],
            models: vec!["*".into()],
            kid: "k".into(),
            issued_at: 1,
            expires_at: 2,
            revoked_at: None,
        };
        s.insert_token(&t).await.unwrap();
        assert!(s.revoke_token("j", 5).await.unwrap());
        assert!(!s.revoke_token("j", 6).await.unwrap());
        assert_eq!(s.get_token("j").await.unwrap().unwrap().revoked_at, Some(5));
        assert_eq!(s.get_meta("v").await.unwrap(), None);
        s.set_meta("v", "3").await.unwrap();
        s.set_meta("v", "4").await.unwrap();
        assert_eq!(s.get_meta("v").await.unwrap().as_deref(), Some("4"));
    }
}
