//! The HTTP server: routes, auth, limits, request parsing -> catalog -> engine
//! -> response shaping. Usable as a library (`router`) or whole (`serve`).
//!
//! CONTRACT: `ServerConfig` and `serve` are called by src/main.rs.
use std::{net::SocketAddr, path::PathBuf};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    /// Accepted bearer keys. Empty = no auth (allowed on loopback only,
    /// unless `allow_insecure_no_auth`).
    pub api_keys: Vec<String>,
    pub allow_insecure_no_auth: bool,
    /// Where weights are cached ($HEARTH_HOME/models).
    pub home: PathBuf,
    /// Optional user catalog TOML extending the built-in one.
    pub catalog_file: Option<PathBuf>,
    /// Load only these model ids (None = every text model of the catalog).
    pub models: Option<Vec<String>>,
    pub engine: hearth_engine::text::TextEngineConfig,
}

/// Fetches (if needed) and loads the models, then serves until ctrl-c.
pub async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    let _ = config;
    todo!()
}
