//! hearth's state as the server uses it: the store (keys, usage, request log,
//! rate windows, file records), the blob directory, and the policy settings.
use hearth_store::blobs::{BlobStore, DirBlobs};
use hearth_store::Store;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where state lives and what the server may keep.
#[derive(Debug, Clone)]
pub struct PlatformConfig {
    /// Holds `hearth.db` (the SQLite store, unless `database_url`) and `files/`.
    pub state_dir: PathBuf,
    /// `postgres://…` (or `sqlite://…`); None: SQLite in `state_dir`.
    pub database_url: Option<String>,
    /// Limits of keys that set none (and of requests without a key).
    pub default_rpm: i64,
    pub default_tpm: i64,
    /// Store no request content at all, for any key (usage counts only).
    pub zero_retention: bool,
    /// How long the request log keeps text endpoints' inputs and outputs.
    pub retention_days: i64,
    /// Largest file `POST /v1/files` accepts.
    pub max_file_bytes: usize,
}

impl PlatformConfig {
    pub fn new(state_dir: PathBuf) -> Self {
        Self {
            state_dir,
            database_url: None,
            default_rpm: 10_000,
            default_tpm: 10_000_000,
            zero_retention: false,
            retention_days: 30,
            max_file_bytes: 512 * 1024 * 1024,
        }
    }
}

pub struct Platform {
    pub store: Store,
    pub blobs: Arc<dyn BlobStore>,
    pub config: PlatformConfig,
}

/// Opens the store named by the config (migrating it).
pub async fn open_store(config: &PlatformConfig) -> anyhow::Result<Store> {
    match &config.database_url {
        Some(url) => Store::open(url).await,
        None => Store::open_sqlite(&config.state_dir.join("hearth.db")).await,
    }
}

impl Platform {
    /// Opens the store and the blob directory; alone on the directory, first
    /// removes what uploads interrupted by a crash left behind.
    pub async fn open(config: PlatformConfig) -> anyhow::Result<Self> {
        let store = open_store(&config).await?;
        let dir = config.state_dir.join("files");
        let blobs = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || DirBlobs::open(&dir)
        })
        .await??;
        if blobs.is_exclusive() {
            let keep: HashSet<String> = store.file_ids().await?.into_iter().collect();
            let removed = blobs.sweep(&keep)?;
            if removed > 0 {
                tracing::info!("removed {removed} files left by interrupted uploads in {}", dir.display());
            }
        }
        blobs.share()?;
        Ok(Self { store, blobs: Arc::new(blobs), config })
    }

    /// Purges the request log past its retention period now, then every hour.
    pub fn spawn_retention(self: &Arc<Self>) {
        let platform = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tick.tick().await;
                match platform.store.purge(platform.config.retention_days * 86_400).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("retention: purged {n} request log entries"),
                    Err(e) => tracing::warn!("retention purge failed: {e:#}"),
                }
            }
        });
    }
}
