//! hearth's persistent state behind one interface, [`Store`], on two real
//! backends through sqlx's `Any` driver: SQLite (the default, one file under
//! `$HEARTH_HOME`) and PostgreSQL (for replicas sharing state). The schema's
//! migrations run when a store is opened. File bytes live outside the
//! database, behind [`blobs::BlobStore`].
pub mod blobs;
mod files;
mod jobs;
mod keys;
mod log;
mod rate;
mod usage;

pub use files::{FileRecord, ListOrder};
pub use jobs::{time_id, Checkpoint, FineTunedModel, Job, JobEvent, JobScope};
pub use keys::{secret_hash, ApiKey, NewKey};
pub use log::LoggedRequest;
pub use rate::Window;
pub use usage::{UsageBucket, UsageQuery, UsageRecord};

use anyhow::{bail, Context, Result};
use sqlx::any::{install_default_drivers, AnyPoolOptions};
use sqlx::AnyPool;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The database: every table of hearth's state.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Opens `url` (`sqlite://PATH` or `postgres://…`) and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Self> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            bail!("unsupported database URL (expected sqlite://PATH or postgres://…): {}", redact_url(url));
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .connect(url)
            .await
            .with_context(|| format!("opening the database {}", redact_url(url)))?;
        // PostgreSQL serialises concurrent migrators with an advisory lock; with
        // SQLite the caller holds a file lock (see `open_sqlite`).
        MIGRATIONS.run(&pool).await.context("migrating the database schema")?;
        Ok(Self { pool, backend })
    }

    /// The SQLite database `PATH` (created if missing), migrated under an
    /// exclusive file lock so that servers starting together do not race.
    pub async fn open_sqlite(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let lock_path = path.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        let lock = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock)).await?.context("locking the database")?;
        let store = Self::open(&sqlite_url(path)).await;
        drop(lock);
        store
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// `sqlite://PATH?mode=rwc` (read-write, create if missing).
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

/// A URL with its password (if any) hidden, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A random lowercase-hex string of `n` bytes.
fn random_hex(n: usize) -> String {
    use rand::RngCore;
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_passwords() {
        assert_eq!(redact_url("postgres://u:secret@h:5/db"), "postgres://u:***@h:5/db");
        assert_eq!(redact_url("sqlite:///x/y.db"), "sqlite:///x/y.db");
    }
}
