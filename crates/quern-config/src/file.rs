//! The TOML config file every binary reads (`--config FILE` or `QUERN_CONFIG`): settings keyed by flag name in
//! snake case (`prefetch = 64`, `retry_tiers = ["1s", "10s"]`, `database_url = "…"`), below flags and environment
//! variables and above the defaults. `quern-worker` rejects a key it does not know; the `quern` CLI takes the
//! keys its commands know and passes over the worker's own (`prefetch`), so that both read the fleet's one file.

use std::collections::BTreeSet;
use std::path::Path;

use clap::{ArgAction, Command};

/// A setting's key in a config file: its flag name in snake case (`queue_prefix` for `--queue-prefix`).
pub fn file_key(arg: &clap::Arg) -> String {
    arg.get_long().map(|long| long.replace('-', "_")).unwrap_or_else(|| arg.get_id().as_str().to_owned())
}

/// Reads and parses a config file, or says what is wrong with it.
pub fn read_table(path: &Path) -> Result<toml::Table, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    text.parse().map_err(|e| format!("config file {} is not valid TOML: {e}", path.display()))
}

/// A file value as `arg` takes it on the command line: strings as they are, numbers and booleans as text, and
/// arrays joined with the setting's own delimiter (`celery_task` values hold commas, so its list uses `;`).
pub fn flag_value(arg: &clap::Arg, key: &str, value: &toml::Value, path: &Path) -> Result<String, String> {
    Ok(match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()))
            .collect::<Vec<_>>()
            .join(&arg.get_value_delimiter().unwrap_or(',').to_string()),
        other => return Err(format!("setting `{key}` in config file {}: unsupported value {other}", path.display())),
    })
}

/// The config file `args` name with `--config FILE` / `--config=FILE`, else `QUERN_CONFIG`.
pub fn config_path(args: &[std::ffi::OsString], env: &dyn Fn(&str) -> Option<String>) -> Option<std::path::PathBuf> {
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        let arg = arg.to_string_lossy();
        if arg == "--config" {
            return iter.next().map(std::path::PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(std::path::PathBuf::from(path));
        }
    }
    env("QUERN_CONFIG").filter(|p| !p.is_empty()).map(std::path::PathBuf::from)
}

/// `command` with the file's settings as the defaults of the flags they name, in every subcommand: a flag or
/// environment variable still wins, and clap still parses and validates every value. Keys no subcommand takes
/// are passed over (they are the worker's). Returns the keys that were used.
pub fn with_file_defaults(
    command: Command,
    table: &toml::Table,
    path: &Path,
) -> Result<(Command, BTreeSet<String>), String> {
    let mut used = BTreeSet::new();
    let command = apply(command, table, path, &mut used)?;
    Ok((command, used))
}

fn apply(
    mut command: Command,
    table: &toml::Table,
    path: &Path,
    used: &mut BTreeSet<String>,
) -> Result<Command, String> {
    let mut defaults = Vec::new();
    for arg in command.get_arguments() {
        let key = file_key(arg);
        if matches!(key.as_str(), "config" | "help" | "version") {
            continue;
        }
        if let Some(value) = table.get(&key).or_else(|| table.get(&key.replace('_', "-"))) {
            let text = flag_value(arg, &key, value, path)?;
            // A switch takes its file value as its default; `false` leaves the switch's own default.
            if matches!(arg.get_action(), ArgAction::SetTrue) && text != "true" {
                continue;
            }
            defaults.push((arg.get_id().clone(), text));
            used.insert(key);
        }
    }
    for (id, text) in defaults {
        // clap keeps defaults as `&'static str`: the file is read once per process, so leaking it is bounded.
        let text: &'static str = Box::leak(text.into_boxed_str());
        command = command.mut_arg(id, |arg| arg.default_value(text));
    }
    let names: Vec<String> = command.get_subcommands().map(|sub| sub.get_name().to_owned()).collect();
    for name in names {
        let mut result = Ok(());
        command = command.mut_subcommand(&name, |sub| match apply(sub.clone(), table, path, used) {
            Ok(updated) => updated,
            Err(error) => {
                result = Err(error);
                sub
            }
        });
        result?;
    }
    Ok(command)
}

/// Adds where a bad value came from when it was the file's (clap only names the flag): a value clap refuses whose
/// flag was neither typed nor set in the environment came from the file.
pub fn explain(
    error: clap::Error,
    command: &Command,
    used: &BTreeSet<String>,
    path: &Path,
    typed: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(error.kind(), ErrorKind::InvalidValue | ErrorKind::ValueValidation) {
        return error;
    }
    let Some(ContextValue::String(flag)) = error.get(ContextKind::InvalidArg) else { return error };
    let long = flag.split_whitespace().next().unwrap_or_default().trim_start_matches("--").to_owned();
    let Some(arg) = find_arg(command, &long) else { return error };
    let key = file_key(arg);
    let as_flag = format!("--{long}");
    let typed_as_flag = typed.iter().any(|t| *t == as_flag || t.starts_with(&format!("{as_flag}=")));
    let in_env = arg.get_env().is_some_and(|name| env(&name.to_string_lossy()).is_some());
    if !used.contains(&key) || typed_as_flag || in_env {
        return error;
    }
    let rendered = error.render().to_string();
    let first_line = rendered.lines().next().unwrap_or_default().trim_start_matches("error: ");
    command.clone().error(error.kind(), format!("{first_line} (set by `{key}` in config file {})", path.display()))
}

/// The argument with the long name `long`, in `command` or any of its subcommands.
fn find_arg<'a>(command: &'a Command, long: &str) -> Option<&'a clap::Arg> {
    command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(long))
        .or_else(|| command.get_subcommands().find_map(|sub| find_arg(sub, long)))
}

#[cfg(test)]
mod tests {
    use clap::{Args, Parser, Subcommand};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(Debug, Subcommand)]
    enum Sub {
        List(ListArgs),
        #[command(subcommand)]
        Nested(Inner),
    }

    #[derive(Debug, Subcommand)]
    enum Inner {
        Show(ListArgs),
    }

    #[derive(Debug, Args)]
    struct ListArgs {
        #[arg(long, default_value = "quern")]
        queue_prefix: String,
        #[arg(long, value_delimiter = ',', default_value = "1s")]
        retry_tiers: Vec<String>,
        #[arg(long, default_value_t = 1)]
        limit: u32,
        #[arg(long)]
        json: bool,
    }

    fn parse(file: &str, argv: &[&str]) -> Result<(Cli, BTreeSet<String>), String> {
        use clap::{CommandFactory, FromArgMatches};
        let table: toml::Table = file.parse().unwrap();
        let path = Path::new("fleet.toml");
        let (command, used) = with_file_defaults(Cli::command(), &table, path)?;
        let typed: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
        let matches = command
            .clone()
            .try_get_matches_from(argv)
            .map_err(|e| explain(e, &command, &used, path, &typed, &|_| None).to_string())?;
        Ok((Cli::from_arg_matches(&matches).map_err(|e| e.to_string())?, used))
    }

    #[test]
    fn file_settings_become_defaults_in_every_subcommand_below_flags() {
        let file = "queue_prefix = \"fleet\"\nretry_tiers = [\"2s\", \"20s\"]\njson = true\nprefetch = 64\n";
        let (cli, used) = parse(file, &["quern", "list"]).unwrap();
        let Sub::List(args) = cli.command else { panic!("list") };
        assert_eq!(args.queue_prefix, "fleet");
        assert_eq!(args.retry_tiers, ["2s", "20s"]);
        assert!(args.json);
        assert_eq!(args.limit, 1, "not in the file: the default");
        assert!(!used.contains("prefetch"), "a worker-only key is passed over: {used:?}");

        let (cli, _) = parse(file, &["quern", "nested", "show", "--queue-prefix", "mine"]).unwrap();
        let Sub::Nested(Inner::Show(args)) = cli.command else { panic!("show") };
        assert_eq!(args.queue_prefix, "mine", "a flag beats the file, in a nested subcommand too");
        assert_eq!(args.retry_tiers, ["2s", "20s"]);
    }

    #[test]
    fn a_bad_file_value_is_refused_naming_the_flag() {
        let error = parse("limit = \"many\"\n", &["quern", "list"]).unwrap_err();
        assert!(error.contains("--limit") && error.contains("many"), "{error}");
        assert!(error.contains("set by `limit` in config file fleet.toml"), "{error}");
        let typed = parse("limit = 2\n", &["quern", "list", "--limit", "lots"]).unwrap_err();
        assert!(typed.contains("lots") && !typed.contains("config file"), "a typed value is the flag's: {typed}");
        let error = parse("limit = { a = 1 }\n", &["quern", "list"]).unwrap_err();
        assert!(error.contains("unsupported value") && error.contains("fleet.toml"), "{error}");
    }
}
