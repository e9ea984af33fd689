//! `hearth serve --config FILE`: a TOML file whose keys are the `serve` options'
//! names (`max_batch = 8`, `api_key = ["..."]`, `models = ["gpt-4"]`, and the global
//! `home`, `state_dir`, `database_url`, `catalog`). Its settings become flags placed
//! before the user's own, skipping any the command line or an environment variable
//! already sets: flags and environment override the file. The key list comes from
//! clap's own definition of `serve`, so every flag has its setting.
//! `--print-config` prints the effective settings in the same format.
use anyhow::{bail, Context, Result};
use clap::{ArgAction, ArgMatches, Command};
use std::ffi::OsString;
use std::path::Path;

/// Options that are not settings.
const NOT_SETTINGS: [&str; 4] = ["config", "print_config", "help", "version"];
/// Printed as `<redacted>` by `--print-config`.
const SECRETS: [&str; 2] = ["api_keys", "metrics_key"];

/// `serve`'s options and the global ones it uses, as (id, long flag, env var, takes a list).
fn settings(cli: &Command) -> Vec<clap::Arg> {
    let serve = cli.find_subcommand("serve").expect("the serve command");
    cli.get_arguments().chain(serve.get_arguments()).filter(|a| a.get_long().is_some() && !NOT_SETTINGS.contains(&a.get_id().as_str())).cloned().collect()
}

/// The arguments with the config file's settings inserted after `serve`.
pub fn expand(cli: &Command, args: Vec<OsString>) -> Result<Vec<OsString>> {
    let Some(serve_at) = args.iter().position(|a| a == "serve") else { return Ok(args) };
    let path = flag_value(&args[serve_at + 1..], "--config").map(OsString::from).or_else(|| std::env::var_os("HEARTH_CONFIG")).filter(|p| !p.is_empty());
    let Some(path) = path else { return Ok(args) };
    let from_file = file_flags(cli, Path::new(&path), &args)?;
    let mut out = args[..=serve_at].to_vec();
    out.extend(from_file.into_iter().map(OsString::from));
    out.extend_from_slice(&args[serve_at + 1..]);
    Ok(out)
}

/// `--name VALUE` or `--name=VALUE` among `args`.
fn flag_value(args: &[OsString], name: &str) -> Option<String> {
    let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    args.iter().enumerate().find_map(|(i, a)| {
        if a == name {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')).map(str::to_string)
        }
    })
}

fn file_flags(cli: &Command, path: &Path, args: &[OsString]) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the config file {}", path.display()))?;
    let table: toml::Table = text.parse().with_context(|| format!("parsing the config file {}", path.display()))?;
    let known = settings(cli);
    let given = |long: &str| args.iter().any(|a| a.to_str().is_some_and(|a| a == format!("--{long}") || a.starts_with(&format!("--{long}="))));
    let mut flags = Vec::new();
    for (key, value) in &table {
        let Some(arg) = known.iter().find(|a| a.get_id() == key.as_str()) else {
            let names: Vec<&str> = known.iter().map(|a| a.get_id().as_str()).collect();
            bail!("unknown setting `{key}` in {}; the settings are: {}", path.display(), names.join(", "));
        };
        let long = arg.get_long().expect("settings have a long flag");
        let from_env = arg.get_env().is_some_and(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
        if given(long) || from_env {
            continue;
        }
        let scalar = |v: &toml::Value| -> Result<String> {
            match v {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Integer(i) => Ok(i.to_string()),
                toml::Value::Float(f) => Ok(f.to_string()),
                toml::Value::Boolean(b) => Ok(b.to_string()),
                other => bail!("setting `{key}` in {}: {other} is not a string, number or boolean", path.display()),
            }
        };
        match (value, arg.get_action()) {
            (toml::Value::Boolean(on), ArgAction::SetTrue) => {
                if *on {
                    flags.push(format!("--{long}"));
                }
            }
            (_, ArgAction::SetTrue) => bail!("setting `{key}` in {} is true or false", path.display()),
            (toml::Value::Array(items), ArgAction::Append) if arg.get_value_delimiter().is_none() => {
                for item in items {
                    flags.push(format!("--{long}={}", scalar(item)?));
                }
            }
            (toml::Value::Array(items), _) => {
                let joined: Result<Vec<String>> = items.iter().map(scalar).collect();
                flags.push(format!("--{long}={}", joined?.join(",")));
            }
            (v, _) => flags.push(format!("--{long}={}", scalar(v)?)),
        }
    }
    Ok(flags)
}

/// The effective settings as a config file (secrets redacted).
pub fn print(cli: &Command, matches: &ArgMatches, home: &Path) -> String {
    let serve = matches.subcommand_matches("serve").expect("serve's matches");
    let mut table = toml::Table::new();
    for arg in settings(cli) {
        let id = arg.get_id().as_str();
        let m = if serve.try_contains_id(id).is_ok() { serve } else { matches };
        let value = match arg.get_action() {
            ArgAction::SetTrue => Some(toml::Value::Boolean(m.get_flag(id))),
            action => m.get_raw(id).map(|raw| {
                let items: Vec<toml::Value> = raw.map(|v| typed(&v.to_string_lossy(), SECRETS.contains(&id))).collect();
                let list = matches!(action, ArgAction::Append) || arg.get_value_delimiter().is_some();
                if list {
                    toml::Value::Array(items)
                } else {
                    items.into_iter().next().unwrap_or(toml::Value::String(String::new()))
                }
            }),
        };
        let value = match (id, value) {
            ("home", None) => Some(toml::Value::String(home.display().to_string())),
            ("database_url", Some(toml::Value::String(url))) => Some(toml::Value::String(hearth_store::redact_url(&url))),
            (_, v) => v,
        };
        if let Some(v) = value {
            table.insert(id.to_string(), v);
        }
    }
    format!("# hearth serve: effective settings (file, environment and flags combined)\n{}", toml::to_string(&table).unwrap_or_default())
}

fn typed(raw: &str, secret: bool) -> toml::Value {
    if secret {
        return toml::Value::String("<redacted>".into());
    }
    raw.parse::<i64>().map(toml::Value::Integer).unwrap_or_else(|_| toml::Value::String(raw.to_string()))
}
