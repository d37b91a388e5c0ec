//! What several control-plane replicas share through the state store (the `cluster`
//! module drives it): the snapshot version counter, the leader lease with its fencing
//! token, the replica registry, the rotation poll's secret versions, and `NOTIFY`.
//!
//! Times are the database's (`clock_timestamp()`), never a replica's. Leases and the
//! registry are PostgreSQL's business: with SQLite the control plane is one replica and
//! always the leader, so those methods refuse there.

use sqlx::Row as _;

use super::{Pool, SqlStore, bigint};
use crate::store::StoreError;

/// Locks the lease row for the rest of the transaction when `$1` is still the fencing
/// token of an unexpired lease: no takeover can commit before the fenced write does.
const FENCE_CHECK: &str = "SELECT 1 FROM cp_lease
     WHERE id = 1 AND fencing_token = $1 AND expires_at > clock_timestamp() FOR SHARE";

/// A replica's row in `cp_replicas`, as the registry reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRow {
    pub replica_id: String,
    pub started_at_ms: i64,
    pub heartbeat_at_ms: i64,
    pub file_backend: bool,
    pub snapshot_version: u64,
}

/// The lease row: who holds it, under which fencing token, and whether it is unexpired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    pub holder: String,
    pub fencing_token: i64,
    pub live: bool,
}

fn postgres_only(what: &str) -> StoreError {
    StoreError::Config(format!(
        "{what} needs PostgreSQL: with SQLite the control plane runs as one replica"
    ))
}

impl SqlStore {
    /// A copy of this store whose leader-only writes (audit checkpoints, retention, export
    /// cursors in `meta`) are refused unless `fencing_token` still holds the lease.
    pub fn fenced(&self, fencing_token: i64) -> Self {
        Self {
            fence: Some(fencing_token),
            ..self.clone()
        }
    }

    /// Allocates the next snapshot version: one atomic `UPDATE … RETURNING`, monotonic
    /// across every replica on the database.
    pub(super) async fn allocate_snapshot_version(&self) -> Result<u64, StoreError> {
        const SQL: &str = "UPDATE meta SET value = CAST(CAST(value AS BIGINT) + 1 AS TEXT)
             WHERE key = 'snapshot_version' RETURNING value";
        let value: String = on_pool!(&self.pool, p => {
            sqlx::query_scalar(SQL).fetch_one(p).await?
        });
        value
            .parse()
            .map_err(|_| StoreError::Malformed(format!("snapshot_version {value:?}")))
    }

    /// The newest allocated snapshot version.
    pub(super) async fn read_snapshot_version(&self) -> Result<u64, StoreError> {
        let value: Option<String> = on_pool!(&self.pool, p => {
            sqlx::query_scalar("SELECT value FROM meta WHERE key = 'snapshot_version'")
                .fetch_optional(p)
                .await?
        });
        Ok(value.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    /// `NOTIFY channel, '<schema>:payload'` on PostgreSQL; nothing on SQLite (one
    /// replica). Channels are database-wide: the schema tells deployments (and tests) on
    /// other schemas of the same database to ignore it ([`SqlStore::schema`]).
    pub(super) async fn send_notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        if let Pool::Postgres(p) = &self.pool {
            sqlx::query("SELECT pg_notify($1, current_schema() || ':' || $2)")
                .bind(channel)
                .bind(payload)
                .execute(p)
                .await?;
        }
        Ok(())
    }

    /// Runs `write` (one statement and its binds) in a transaction that first checks the
    /// fence; `Err(Fenced)` when the token no longer holds the lease. Rows affected.
    pub(super) async fn fenced_execute<'q>(
        &self,
        token: i64,
        write: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<u64, StoreError> {
        let Pool::Postgres(p) = &self.pool else {
            return Err(postgres_only("a fenced write"));
        };
        let mut tx = p.begin().await?;
        let held = sqlx::query(FENCE_CHECK)
            .bind(token)
            .fetch_optional(&mut *tx)
            .await?;
        if held.is_none() {
            tx.rollback().await?;
            return Err(StoreError::Fenced(token));
        }
        let n = write.execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    /// The schema this store works in (`current_schema()`), as notifications carry it.
    pub async fn schema(&self) -> Result<String, StoreError> {
        let p = self.pg("the schema")?;
        Ok(sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(p)
            .await?)
    }

    fn pg(&self, what: &str) -> Result<&sqlx::PgPool, StoreError> {
        match &self.pool {
            Pool::Postgres(p) => Ok(p),
            Pool::Sqlite(_) => Err(postgres_only(what)),
        }
    }

    /// Takes the lease for `replica` for `ttl` (database clock) when it is free, expired or
    /// already `replica`'s (a renewal). The fencing token grows by one at each takeover and
    /// stays at a renewal. `None`: another replica holds it.
    pub async fn acquire_lease(
        &self,
        replica: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<i64>, StoreError> {
        let p = self.pg("the leader lease")?;
        Ok(sqlx::query_scalar(
            "UPDATE cp_lease SET
                 fencing_token = CASE WHEN holder = $1 AND expires_at > clock_timestamp()
                                      THEN fencing_token ELSE fencing_token + 1 END,
                 holder = $1,
                 expires_at = clock_timestamp() + make_interval(secs => $2)
             WHERE id = 1 AND (holder = $1 OR expires_at <= clock_timestamp())
             RETURNING fencing_token",
        )
        .bind(replica)
        .bind(ttl.as_secs_f64())
        .fetch_optional(p)
        .await?)
    }

    /// Gives the lease up (it expires now) if `replica` still holds it under `token`.
    pub async fn release_lease(&self, replica: &str, token: i64) -> Result<bool, StoreError> {
        let p = self.pg("the leader lease")?;
        let n = sqlx::query(
            "UPDATE cp_lease SET expires_at = clock_timestamp()
             WHERE id = 1 AND holder = $1 AND fencing_token = $2",
        )
        .bind(replica)
        .bind(token)
        .execute(p)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// The lease row as it stands.
    pub async fn lease(&self) -> Result<LeaseRow, StoreError> {
        let p = self.pg("the leader lease")?;
        let row = sqlx::query(
            "SELECT holder, fencing_token, expires_at > clock_timestamp() AS live
             FROM cp_lease WHERE id = 1",
        )
        .fetch_one(p)
        .await?;
        Ok(LeaseRow {
            holder: row.try_get("holder")?,
            fencing_token: row.try_get("fencing_token")?,
            live: row.try_get("live")?,
        })
    }

    /// Records that `replica` is alive (heartbeat by the database clock).
    pub async fn replica_heartbeat(
        &self,
        replica: &str,
        file_backend: bool,
        snapshot_version: u64,
    ) -> Result<(), StoreError> {
        let p = self.pg("the replica registry")?;
        sqlx::query(
            "INSERT INTO cp_replicas (replica_id, file_backend, snapshot_version)
             VALUES ($1, $2, $3)
             ON CONFLICT (replica_id) DO UPDATE SET heartbeat_at = clock_timestamp(),
                 file_backend = EXCLUDED.file_backend,
                 snapshot_version = EXCLUDED.snapshot_version",
        )
        .bind(replica)
        .bind(file_backend)
        .bind(bigint(snapshot_version))
        .execute(p)
        .await?;
        Ok(())
    }

    /// Removes `replica` from the registry (a clean stop).
    pub async fn replica_leave(&self, replica: &str) -> Result<(), StoreError> {
        let p = self.pg("the replica registry")?;
        sqlx::query("DELETE FROM cp_replicas WHERE replica_id = $1")
            .bind(replica)
            .execute(p)
            .await?;
        Ok(())
    }

    /// Forgets replicas whose heartbeat is older than `silent` (killed, never back).
    pub async fn prune_replicas(&self, silent: std::time::Duration) -> Result<u64, StoreError> {
        let p = self.pg("the replica registry")?;
        Ok(sqlx::query(
            "DELETE FROM cp_replicas
             WHERE heartbeat_at < clock_timestamp() - make_interval(secs => $1)",
        )
        .bind(silent.as_secs_f64())
        .execute(p)
        .await?
        .rows_affected())
    }

    /// The replicas whose heartbeat is younger than `within`.
    pub async fn live_replicas(
        &self,
        within: std::time::Duration,
    ) -> Result<Vec<ReplicaRow>, StoreError> {
        let p = self.pg("the replica registry")?;
        let rows = sqlx::query(
            "SELECT replica_id,
                    CAST(EXTRACT(EPOCH FROM started_at) * 1000 AS BIGINT) AS started_ms,
                    CAST(EXTRACT(EPOCH FROM heartbeat_at) * 1000 AS BIGINT) AS heartbeat_ms,
                    file_backend, snapshot_version
             FROM cp_replicas
             WHERE heartbeat_at > clock_timestamp() - make_interval(secs => $1)
             ORDER BY replica_id",
        )
        .bind(within.as_secs_f64())
        .fetch_all(p)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ReplicaRow {
                    replica_id: r.try_get("replica_id")?,
                    started_at_ms: r.try_get("started_ms")?,
                    heartbeat_at_ms: r.try_get("heartbeat_ms")?,
                    file_backend: r.try_get("file_backend")?,
                    snapshot_version: u64::try_from(r.try_get::<i64, _>("snapshot_version")?)
                        .unwrap_or(0),
                })
            })
            .collect()
    }

    /// Records what the rotation poll read for `reference`; the version grows by one when
    /// the fingerprint changed. Returns the reference's version.
    pub(super) async fn record_secret_version_pg(
        &self,
        reference: &str,
        fingerprint: &str,
    ) -> Result<u64, StoreError> {
        let p = self.pg("secret versions")?;
        let write = sqlx::query_scalar(
            "INSERT INTO secret_versions (reference, fingerprint, version) VALUES ($1, $2, 1)
             ON CONFLICT (reference) DO UPDATE SET
                 version = CASE WHEN secret_versions.fingerprint = EXCLUDED.fingerprint
                                THEN secret_versions.version ELSE secret_versions.version + 1 END,
                 fingerprint = EXCLUDED.fingerprint,
                 updated_at = clock_timestamp()
             RETURNING version",
        )
        .bind(reference)
        .bind(fingerprint);
        // The leader's rotation poll writes through a fenced copy: a deposed leader's late
        // record is refused in the same transaction, like its checkpoints.
        let version: i64 = match self.fence {
            None => write.fetch_one(p).await?,
            Some(token) => {
                let mut tx = p.begin().await?;
                if sqlx::query(FENCE_CHECK)
                    .bind(token)
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_none()
                {
                    tx.rollback().await?;
                    return Err(StoreError::Fenced(token));
                }
                let version = write.fetch_one(&mut *tx).await?;
                tx.commit().await?;
                version
            }
        };
        Ok(u64::try_from(version).unwrap_or(0))
    }

    /// Every reference the rotation poll recorded, with its fingerprint.
    pub(super) async fn list_secret_versions_pg(
        &self,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let p = self.pg("secret versions")?;
        let rows = sqlx::query("SELECT reference, fingerprint FROM secret_versions")
            .fetch_all(p)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("reference")?, r.try_get("fingerprint")?)))
            .collect()
    }
}

impl SqlStore {
    /// Detaches `node_id` from `from` (its watch stream there ended); a node that already
    /// moved to another replica stays attached to it.
    pub async fn detach_node(&self, node_id: &str, from: &str) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => {
            sqlx::query("UPDATE nodes SET replica_id = '' WHERE node_id = $1 AND replica_id = $2")
                .bind(node_id)
                .bind(from)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// The nodes attached to a live replica other than `except` (heartbeat younger than
    /// `within`) that have not acknowledged `version` yet. Empty with SQLite (one replica).
    pub async fn nodes_behind_elsewhere(
        &self,
        version: u64,
        except: &str,
        within: std::time::Duration,
    ) -> Result<Vec<String>, StoreError> {
        let Pool::Postgres(p) = &self.pool else {
            return Ok(Vec::new());
        };
        Ok(sqlx::query_scalar(
            "SELECT n.node_id FROM nodes n JOIN cp_replicas r ON r.replica_id = n.replica_id
             WHERE n.replica_id <> '' AND n.replica_id <> $1 AND n.acked_version < $2
               AND r.heartbeat_at > clock_timestamp() - make_interval(secs => $3)
             ORDER BY n.node_id",
        )
        .bind(except)
        .bind(bigint(version))
        .bind(within.as_secs_f64())
        .fetch_all(p)
        .await?)
    }

    /// How many nodes are attached to each live replica (heartbeat younger than `within`).
    pub async fn nodes_per_replica(
        &self,
        within: std::time::Duration,
    ) -> Result<std::collections::HashMap<String, u64>, StoreError> {
        let p = self.pg("the replica registry")?;
        let rows = sqlx::query(
            "SELECT r.replica_id, COUNT(n.node_id) AS attached
             FROM cp_replicas r LEFT JOIN nodes n ON n.replica_id = r.replica_id
             WHERE r.heartbeat_at > clock_timestamp() - make_interval(secs => $1)
             GROUP BY r.replica_id",
        )
        .bind(within.as_secs_f64())
        .fetch_all(p)
        .await?;
        rows.iter()
            .map(|r| {
                let n: i64 = r.try_get("attached")?;
                Ok((r.try_get("replica_id")?, u64::try_from(n).unwrap_or(0)))
            })
            .collect()
    }
}
