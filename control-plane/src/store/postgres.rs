//! PostgreSQL implementation of [`StateStore`]: the production option when several
//! control-plane replicas share one database (migrations in `migrations/postgres/`).
//!
//! The connection URL is a secret (it may carry a password) and comes from configuration;
//! TLS is chosen in the URL with libpq's `sslmode` (`require`, `verify-ca`, `verify-full`,
//! with `sslrootcert=…` for a private CA), served by rustls. Every connection gets a
//! `statement_timeout`, and the pool an acquire timeout, so a stuck database turns into an
//! error instead of a hung request.
//!
//! Audit appends lock the one-row chain head with `SELECT … FOR UPDATE` inside the
//! transaction that inserts the row, so appends from every task of every replica form one
//! chain.

use std::str::FromStr as _;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use sqlx::Row as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};

use super::{StateStore, StoreError, seq_from_db, seq_to_db};
use crate::audit::chain::next_link;
use crate::audit::{AuditCheckpoint, AuditLink, ChainHead, ChainedAudit};
use crate::domain::{
    ApiFormat, AuditRecord, CredentialRecord, CredentialTable, Deployment, Limits, Model,
    NodeRecord, PolicyRecord, PolicyTarget, Price, Provider, ProviderKey, SigningKey, Source,
    TokenRecord, VirtualKeyRecord,
};

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
        }
    }
}

fn valid_schema(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// The PostgreSQL state store.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:5432/db?sslmode=verify-full`),
    /// runs the migrations and the one-time chaining of pre-chain audit rows.
    pub async fn connect(
        url: &SecretString,
        settings: &PostgresSettings,
    ) -> Result<Self, StoreError> {
        // The parse error never echoes the URL, which may hold a password.
        let mut options = PgConnectOptions::from_str(url.expose_secret())
            .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL: {e}")))?
            .application_name("warden-cp");
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
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
            )))
            .execute(&pool)
            .await?;
        }
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let store = Self { pool };
        store.chain_legacy_audit().await?;
        Ok(store)
    }

    /// The connection pool, for tools and tests that need raw SQL.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// One-time backfill after the `0002_audit_chain` migration: chains the rows of
    /// `audit_legacy` (oldest first) and drops that table, in one transaction that holds
    /// the chain head, so replicas starting together do it once.
    async fn chain_legacy_audit(&self) -> Result<(), StoreError> {
        const EXISTS: &str = "SELECT to_regclass('audit_legacy') IS NOT NULL";
        let exists: bool = sqlx::query_scalar(EXISTS).fetch_one(&self.pool).await?;
        if !exists {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        let mut head = lock_head(&mut tx).await?;
        let exists: bool = sqlx::query_scalar(EXISTS).fetch_one(&mut *tx).await?;
        if !exists {
            return Ok(());
        }
        let rows = sqlx::query("SELECT * FROM audit_legacy ORDER BY timestamp_ms, id")
            .fetch_all(&mut *tx)
            .await?;
        for row in &rows {
            let record = audit_from(row)?;
            let link = next_link(&head, &record)?;
            insert_chained(&mut tx, &record, &link).await?;
            head = ChainHead {
                seq: link.seq,
                hash: link.hash,
            };
        }
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

type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

async fn lock_head(tx: &mut Tx) -> Result<ChainHead, StoreError> {
    let row = sqlx::query("SELECT seq, hash FROM audit_chain_head WHERE id = 1 FOR UPDATE")
        .fetch_one(&mut **tx)
        .await?;
    Ok(ChainHead {
        seq: seq_from_db(row.try_get("seq")?)?,
        hash: row.try_get("hash")?,
    })
}

/// Inserts the row and advances the head in one statement (one round trip).
async fn insert_chained(tx: &mut Tx, r: &AuditRecord, link: &AuditLink) -> Result<(), StoreError> {
    sqlx::query(
        "WITH inserted AS (
             INSERT INTO audit (id, seq, timestamp_ms, action, actor, subject, result, detail, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         )
         UPDATE audit_chain_head SET seq = $2, hash = $10 WHERE id = 1",
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

fn list_to_json(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".to_owned())
}

fn json_to_list(s: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Malformed(format!("list column: {e}")))
}

/// Table names come from this closed match only, so the formatted SQL below is safe.
fn table_name(t: CredentialTable) -> &'static str {
    match t {
        CredentialTable::Admin => "admin_credentials",
        CredentialTable::Node => "node_credentials",
    }
}

const TOKEN_COLUMNS: &str = "jti, subject, scopes::text AS scopes, models::text AS models, kid, issued_at, expires_at, revoked_at";

fn provider_from(row: &PgRow) -> Result<Provider, StoreError> {
    let format: String = row.try_get("format")?;
    Ok(Provider {
        name: row.try_get("name")?,
        format: ApiFormat::parse(&format)
            .ok_or_else(|| StoreError::Malformed(format!("provider format {format}")))?,
        base_url: row.try_get("base_url")?,
        source: Source::parse(&row.try_get::<String, _>("source")?),
        created_at: row.try_get("created_at")?,
        passthrough: row.try_get("passthrough")?,
        drop_params: json_to_list(&row.try_get::<String, _>("drop_params")?)?,
    })
}

fn token_from(row: &PgRow) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        jti: row.try_get("jti")?,
        subject: row.try_get("subject")?,
        scopes: json_to_list(&row.try_get::<String, _>("scopes")?)?,
        models: json_to_list(&row.try_get::<String, _>("models")?)?,
        kid: row.try_get("kid")?,
        issued_at: row.try_get("issued_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

fn credential_from(row: &PgRow) -> Result<CredentialRecord, StoreError> {
    Ok(CredentialRecord {
        id: row.try_get("id")?,
        hash: row.try_get("hash")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

fn audit_from(row: &PgRow) -> Result<AuditRecord, StoreError> {
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

fn chained_from(row: &PgRow) -> Result<ChainedAudit, StoreError> {
    Ok(ChainedAudit {
        seq: seq_from_db(row.try_get("seq")?)?,
        record: audit_from(row)?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

fn checkpoint_from(row: &PgRow) -> Result<AuditCheckpoint, StoreError> {
    Ok(AuditCheckpoint {
        seq_upto: seq_from_db(row.try_get("seq_upto")?)?,
        hash: row.try_get("hash")?,
        signature: row.try_get("signature")?,
        key_id: row.try_get("key_id")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

#[async_trait::async_trait]
impl StateStore for PostgresStore {
    async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn upsert_provider(&self, p: &Provider) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO providers (name, format, base_url, source, created_at, passthrough, drop_params)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (name) DO UPDATE SET format = EXCLUDED.format, base_url = EXCLUDED.base_url,
             source = EXCLUDED.source, passthrough = EXCLUDED.passthrough, drop_params = EXCLUDED.drop_params",
        )
        .bind(&p.name)
        .bind(p.format.as_str())
        .bind(&p.base_url)
        .bind(p.source.as_str())
        .bind(p.created_at)
        .bind(p.passthrough)
        .bind(list_to_json(&p.drop_params))
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
        let r = sqlx::query("DELETE FROM providers WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn insert_provider_key(&self, k: &ProviderKey) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO provider_keys (id, provider, secret_name, fingerprint, created_at)
             VALUES ($1, $2, $3, $4, $5)",
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
        let r = sqlx::query("DELETE FROM provider_keys WHERE provider = $1 AND id = $2")
            .bind(provider)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn upsert_model(&self, m: &Model) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO models (alias, provider, upstream_model, source, created_at, fallbacks, weight) VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (alias) DO UPDATE SET provider = EXCLUDED.provider,
             upstream_model = EXCLUDED.upstream_model, source = EXCLUDED.source, fallbacks = EXCLUDED.fallbacks,
             weight = EXCLUDED.weight",
        )
        .bind(&m.alias)
        .bind(&m.provider)
        .bind(&m.upstream_model)
        .bind(m.source.as_str())
        .bind(m.created_at)
        .bind(list_to_json(&m.fallbacks))
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
                    fallbacks: json_to_list(&row.try_get::<String, _>("fallbacks")?)?,
                    weight: u32::try_from(row.try_get::<i64, _>("weight")?).unwrap_or(1),
                })
            })
            .collect()
    }

    async fn delete_model(&self, alias: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM models WHERE alias = $1")
            .bind(alias)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn upsert_deployment(&self, d: &Deployment) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO deployments (alias, provider, upstream_model, weight) VALUES ($1, $2, $3, $4) ON CONFLICT (alias, provider, upstream_model) DO UPDATE SET weight = EXCLUDED.weight")
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
            "DELETE FROM deployments WHERE alias = $1 AND provider = $2 AND upstream_model = $3",
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (target_kind, target_id) DO UPDATE SET rpm = EXCLUDED.rpm, tpm = EXCLUDED.tpm, max_tokens = EXCLUDED.max_tokens,
             max_parallel = EXCLUDED.max_parallel, max_budget_micros = EXCLUDED.max_budget_micros,
             budget_period_secs = EXCLUDED.budget_period_secs, source = EXCLUDED.source, updated_at = EXCLUDED.updated_at",
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
        let r = sqlx::query("DELETE FROM policies WHERE target_kind = $1 AND target_id = $2")
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
        sqlx::query("INSERT INTO prices (alias, input_per_mtok, output_per_mtok) VALUES ($1, $2, $3) ON CONFLICT (alias) DO UPDATE SET input_per_mtok = EXCLUDED.input_per_mtok, output_per_mtok = EXCLUDED.output_per_mtok")
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
        let r = sqlx::query("UPDATE provider_keys SET disabled_reason = $1, disabled_at = $2, health_epoch = health_epoch + $3 WHERE provider = $4 AND id = $5")
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
        let r = sqlx::query(
            "UPDATE provider_keys SET fingerprint = $1 WHERE provider = $2 AND id = $3",
        )
        .bind(fingerprint)
        .bind(provider)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn insert_signing_key(&self, k: &SigningKey) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, secret_name, created_at) VALUES ($1, $2, $3, $4)",
        )
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
             VALUES ($1, $2, $3::jsonb, $4::jsonb, $5, $6, $7, $8)",
        )
        .bind(&t.jti)
        .bind(&t.subject)
        .bind(list_to_json(&t.scopes))
        .bind(list_to_json(&t.models))
        .bind(&t.kid)
        .bind(t.issued_at)
        .bind(t.expires_at)
        .bind(t.revoked_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY issued_at, jti");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(token_from)
            .collect()
    }

    async fn get_token(&self, jti: &str) -> Result<Option<TokenRecord>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE jti = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(jti)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(token_from)
            .transpose()
    }

    async fn revoke_token(&self, jti: &str, at: i64) -> Result<bool, StoreError> {
        let r =
            sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE jti = $2 AND revoked_at IS NULL")
                .bind(at)
                .bind(jti)
                .execute(&self.pool)
                .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn insert_virtual_key(&self, k: &VirtualKeyRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO virtual_keys (id, hash, name, owner, scopes, models, created_at, expires_at, revoked_at)
             VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7, $8, $9)",
        )
        .bind(&k.id)
        .bind(&k.hash)
        .bind(&k.name)
        .bind(&k.owner)
        .bind(list_to_json(&k.scopes))
        .bind(list_to_json(&k.models))
        .bind(k.created_at)
        .bind(k.expires_at)
        .bind(k.revoked_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_virtual_keys(&self) -> Result<Vec<VirtualKeyRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, hash, name, owner, scopes::text AS scopes, models::text AS models,
                    created_at, expires_at, revoked_at, previous_hash, previous_expires_at
             FROM virtual_keys ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(VirtualKeyRecord {
                    id: row.try_get("id")?,
                    hash: row.try_get("hash")?,
                    name: row.try_get("name")?,
                    owner: row.try_get("owner")?,
                    scopes: json_to_list(&row.try_get::<String, _>("scopes")?)?,
                    models: json_to_list(&row.try_get::<String, _>("models")?)?,
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
            "UPDATE virtual_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
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
            "UPDATE virtual_keys SET previous_hash = hash, hash = $1, previous_expires_at = $2 WHERE id = $3 AND revoked_at IS NULL",
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
            "INSERT INTO {} (id, hash, name, created_at, revoked_at) VALUES ($1, $2, $3, $4, $5)",
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
        let sql = format!("SELECT * FROM {} WHERE hash = $1", table_name(table));
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
            "UPDATE {} SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL",
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
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (node_id) DO UPDATE SET credential_id = EXCLUDED.credential_id,
             acked_version = EXCLUDED.acked_version, last_seen = EXCLUDED.last_seen,
             software_version = EXCLUDED.software_version",
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
        let mut tx = self.pool.begin().await?;
        let mut head = lock_head(&mut tx).await?;
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
        tx.commit().await?;
        Ok(links)
    }

    async fn list_audit(
        &self,
        limit: u32,
        action: Option<&str>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = match action {
            Some(a) => {
                sqlx::query(
                    "SELECT * FROM audit WHERE action = $1 ORDER BY timestamp_ms DESC, id DESC LIMIT $2",
                )
                .bind(a)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query("SELECT * FROM audit ORDER BY timestamp_ms DESC, id DESC LIMIT $1")
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
        sqlx::query("SELECT * FROM audit WHERE seq >= $1 ORDER BY seq LIMIT $2")
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
             VALUES ($1, $2, $3, $4, $5)",
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
        sqlx::query(
            "SELECT * FROM audit_checkpoints WHERE seq_upto >= $1 ORDER BY seq_upto, key_id",
        )
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
                     (SELECT MIN(seq) FROM audit WHERE timestamp_ms >= $1),
                     9223372036854775807))",
        )
        .bind(ts_ms)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }
}
