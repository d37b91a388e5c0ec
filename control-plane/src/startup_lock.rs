//! The locks taken while a control plane starts: with SQLite, an exclusive lock file in the
//! data directory (the control plane runs as one process there); with PostgreSQL, an
//! advisory lock while a replica creates its keys and applies its declarations, so that
//! replicas started together on an empty database do that one at a time.

use std::io::{Read as _, Seek as _, Write as _};
use std::path::Path;

use crate::RunError;
use crate::store::{Pool, SqlStore, StoreError};

/// The lock file's name under the data directory.
pub const LOCK_FILE: &str = "warden-cp.lock";

/// Takes the data directory's lock, writing this process's id into the file; refuses
/// when another process holds it, naming its pid. Held until the returned file is dropped.
/// A second control plane in this same process (tests, `wardenctl dev` restarts) is let
/// through: the lock is there to stop a second process.
pub fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, RunError> {
    let path = data_dir.join(LOCK_FILE);
    let io = |source| RunError::DataDir {
        path: path.display().to_string(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0).map_err(io)?;
            file.rewind().map_err(io)?;
            write!(file, "{}", std::process::id()).map_err(io)?;
            file.sync_all().map_err(io)?;
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let pid = text.trim();
            if pid == std::process::id().to_string() {
                return Ok(file);
            }
            Err(RunError::Cluster(format!(
                "another warden-cp (pid {}) uses {}; with SQLite the control plane runs as one replica — use PostgreSQL to run several",
                if pid.is_empty() { "unknown" } else { pid },
                data_dir.join("state.db").display()
            )))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

/// A PostgreSQL session-level advisory lock on one dedicated connection (none on SQLite).
/// Released by closing that connection: at [`Self::release`], or when dropped on an error
/// path.
pub struct InitLock {
    conn: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
}

impl std::fmt::Debug for InitLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitLock")
            .field("held", &self.conn.is_some())
            .finish()
    }
}

impl InitLock {
    /// Waits for the start-up lock of the store's schema (replicas on other schemas of the
    /// same database do not wait on each other).
    pub async fn take(store: &SqlStore) -> Result<Self, StoreError> {
        let Pool::Postgres(pool) = store.pool() else {
            return Ok(Self { conn: None });
        };
        let mut conn = pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock(hashtext('warden-cp:init:' || current_schema()))")
            .execute(&mut *conn)
            .await?;
        Ok(Self { conn: Some(conn) })
    }

    /// Releases the lock (closes its connection).
    pub async fn release(mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
    }
}

impl Drop for InitLock {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Not back into the pool with the lock held: the session ends with it.
            drop(conn.detach());
        }
    }
}
