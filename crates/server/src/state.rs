//! What every handler shares: the catalog, the loaded engines, the keys.
use crate::error::ApiError;
use crate::images::{ImageRuntime, PictureStore};
use crate::platform::Platform;
use hearth_catalog::{Catalog, Endpoint, Resolved};
use hearth_engine::audio::SpeechEngine;
use hearth_engine::embed::EmbedEngine;
use hearth_engine::moderate::ModerationEngine;
use hearth_engine::text::TextEngine;
use hearth_store::FineTunedModel;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// A loaded model, one variant per modality (chosen by the catalog `Format`).
#[derive(Clone)]
pub enum LoadedModel {
    Text(TextEngine),
    Moderate(ModerationEngine),
    Embed(EmbedEngine),
    Speech(SpeechEngine),
    Image(ImageRuntime),
}

/// A runtime type handlers ask the state for (`AppState::runtime`).
pub trait RuntimeKind {
    fn of(model: &LoadedModel) -> Option<&Self>;
}

macro_rules! runtime_kind {
    ($engine:ty, $variant:ident) => {
        impl RuntimeKind for $engine {
            fn of(model: &LoadedModel) -> Option<&Self> {
                match model {
                    LoadedModel::$variant(engine) => Some(engine),
                    _ => None,
                }
            }
        }
    };
}
runtime_kind!(TextEngine, Text);
runtime_kind!(ModerationEngine, Moderate);
runtime_kind!(EmbedEngine, Embed);
runtime_kind!(SpeechEngine, Speech);
runtime_kind!(ImageRuntime, Image);

pub struct AppState {
    pub catalog: Catalog,
    /// Loaded runtimes by catalog model id.
    pub engines: HashMap<String, LoadedModel>,
    /// Accepted bearer keys; empty = no auth.
    pub api_keys: Vec<String>,
    /// A fixed "YYYY-MM-DD" for deprecation checks (tests); None = today (UTC).
    pub today: Option<String>,
    /// Persistent state (keys, files, usage, rate limits, request log); None:
    /// a stateless server (static keys only, no /v1/files).
    pub platform: Option<Arc<Platform>>,
    /// Models made by fine-tuning, by id: served like their base, added and removed at run time.
    pub tuned: RwLock<HashMap<String, TunedModel>>,
    /// Interactive requests in flight (background work yields to them).
    pub interactive: crate::priority::Interactive,
    /// Where fine-tuning reads base weights and writes its models; None: no fine-tuning.
    pub training: Option<TrainingSetup>,
    /// Wakes the job runner when a job is queued or cancelled.
    pub jobs_wake: tokio::sync::Notify,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The pictures of `url` image results, for their hour.
    pub pictures: PictureStore,
}

/// A fine-tuned model, loaded.
#[derive(Clone)]
pub struct TunedModel {
    pub record: FineTunedModel,
    pub engine: TextEngine,
}

/// What the job runner needs besides the store.
#[derive(Clone)]
pub struct TrainingSetup {
    /// `$HEARTH_HOME/models`, the shared model cache: base weights are read from there.
    pub models_dir: PathBuf,
    /// `fine_tuned/` of the state directory: fine-tuned GGUFs are written there
    /// (state, like the store that lists them; never the shared cache).
    pub tuned_dir: PathBuf,
    /// Fine-tuned models are served with the same engine settings as the others.
    pub engine: hearth_engine::text::TextEngineConfig,
    /// Job scratch space (checkpoints), under the state directory.
    pub work_dir: PathBuf,
}

/// A chat or completions request's model, resolved and loaded.
pub struct TextTarget {
    /// The name the client sent (echoed as `model`).
    pub requested: String,
    pub model_id: String,
    /// Effective window: the catalog's (alias-capped) window, capped by the loaded model's.
    pub context_window: usize,
    pub engine: TextEngine,
    pub system_fingerprint: String,
}

impl AppState {
    pub fn new(catalog: Catalog, engines: HashMap<String, LoadedModel>, api_keys: Vec<String>) -> Self {
        Self {
            catalog,
            engines,
            api_keys,
            today: None,
            platform: None,
            tuned: RwLock::default(),
            interactive: Default::default(),
            training: None,
            jobs_wake: tokio::sync::Notify::new(),
            metrics: Default::default(),
            pictures: PictureStore::default(),
        }
    }

    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn with_platform(mut self, platform: Arc<Platform>) -> Self {
        self.platform = Some(platform);
        self
    }

    pub fn today(&self) -> String {
        self.today.clone().unwrap_or_else(hearth_catalog::today)
    }

    /// Resolves `name` for `endpoint` to its loaded runtime of kind `R`. A name that
    /// resolves to no loaded model of that kind (not loaded by this server, `--models`
    /// chose others) is "model not found", whatever the reason.
    pub fn runtime<R: RuntimeKind>(&self, name: &str, endpoint: Endpoint) -> Result<(Resolved<'_>, &R), ApiError> {
        let today = self.today();
        let resolved = self.catalog.resolve(name, Some(endpoint), &today)?;
        match self.engines.get(&resolved.entry.id).and_then(R::of) {
            Some(runtime) => Ok((resolved, runtime)),
            None => Err(ApiError::model_not_found(name)),
        }
    }

    /// A text model for chat or completions.
    pub fn text_target(&self, name: &str, endpoint: Endpoint) -> Result<TextTarget, ApiError> {
        if let Some(target) = self.tuned_target(name, endpoint)? {
            return Ok(target);
        }
        let (resolved, engine) = self.runtime::<TextEngine>(name, endpoint)?;
        Ok(TextTarget {
            requested: resolved.requested.clone(),
            model_id: resolved.entry.id.clone(),
            context_window: resolved.context_window.min(engine.info().context_length),
            engine: engine.clone(),
            system_fingerprint: fingerprint(&resolved.entry.id),
        })
    }

    /// A fine-tuned model serves the endpoints of its base, with its base's window.
    fn tuned_target(&self, name: &str, endpoint: Endpoint) -> Result<Option<TextTarget>, ApiError> {
        let Some(tuned) = self.tuned.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned() else { return Ok(None) };
        let base = self.catalog.model(&tuned.record.base).ok_or_else(|| ApiError::model_not_found(name))?;
        if !base.endpoints.contains(&endpoint) {
            // The same refusal the base gets on this endpoint.
            self.catalog.resolve(&base.id, Some(endpoint), &self.today())?;
        }
        Ok(Some(TextTarget {
            requested: name.to_string(),
            model_id: name.to_string(),
            context_window: base.context_window.min(tuned.engine.info().context_length),
            engine: tuned.engine,
            system_fingerprint: fingerprint(name),
        }))
    }

    pub fn tuned_model(&self, name: &str) -> Option<TunedModel> {
        self.tuned.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// Whether a listed name leads to a loaded model (what `/v1/models` shows).
    pub fn serves(&self, name: &str) -> bool {
        let today = self.today();
        matches!(self.catalog.resolve(name, None, &today), Ok(r) if self.engines.contains_key(&r.entry.id))
    }
}

/// A stable `fp_…` per model and hearth version.
fn fingerprint(model_id: &str) -> String {
    // FNV-1a: stable across runs and builds (std's hasher is not).
    let mut h: u64 = 0xcbf29ce484222325;
    for b in model_id.bytes().chain(env!("CARGO_PKG_VERSION").bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    format!("fp_{:010x}", h & 0xff_ffff_ffff)
}
