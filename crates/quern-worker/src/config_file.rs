//! Loading the worker's settings from flags, `QUERN_*` environment variables and an optional TOML file, in that
//! order of precedence, and printing the effective result as a config file that reads back to the same settings
//! (secrets left out, each as a comment naming the environment variable that supplies it).
//!
//! A file setting is injected as a flag ahead of the real ones, and only when neither that flag nor its
//! environment variable is given, so clap still parses and validates every value and names the setting when
//! one is wrong.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};

use quern_config::file::{config_path, file_key, flag_value, read_table};

use crate::WorkerConfig;

/// Settings whose value is a URL that may hold a password: printed only when it holds none.
const SECRET_URLS: &[&str] = &["amqp_url", "database_url", "embedding_url", "otlp_endpoint"];
/// Settings that are secrets whole: never printed.
const SECRETS: &[&str] = &["embedding_api_key"];
/// Settings that make no sense in a file.
const NOT_IN_FILE: &[&str] = &["config", "print_config", "help", "version"];

/// The parsed configuration and what is needed to explain it.
pub struct LoadedConfig {
    /// The settings.
    pub config: WorkerConfig,
    matches: ArgMatches,
    command: Command,
    from_file: BTreeSet<String>,
    file: Option<PathBuf>,
}

/// Parses `args` (program name first) and the process environment, reading `--config FILE` or `QUERN_CONFIG` if
/// given. Errors are clap's (exit status 2, naming the flag), with the source of the bad value added when it was
/// not a flag.
pub fn load(args: Vec<OsString>) -> Result<LoadedConfig, clap::Error> {
    let env = |name: &str| std::env::var(name).ok();
    let env: &dyn Fn(&str) -> Option<String> = &env;
    let command = WorkerConfig::command().args_override_self(true);
    let file = config_path(&args, env);
    let (argv, from_file) = match &file {
        Some(path) => inject_file(&command, path, args, env)?,
        None => (args, BTreeSet::new()),
    };
    let typed: Vec<String> = argv.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let matches = command
        .clone()
        .try_get_matches_from(argv)
        .map_err(|e| explain(e, &command, &from_file, file.as_deref(), &typed, env))?;
    let config = WorkerConfig::from_arg_matches(&matches)?;
    Ok(LoadedConfig { config, matches, command, from_file, file })
}

/// The program name, then the file's settings as flags, then the real arguments (which override them).
fn inject_file(
    command: &Command,
    path: &Path,
    args: Vec<OsString>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Vec<OsString>, BTreeSet<String>), clap::Error> {
    let fail = |message: String| command.clone().error(clap::error::ErrorKind::InvalidValue, message);
    let table = read_table(path).map_err(fail)?;
    let given: Vec<String> = args.iter().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    let mut injected: Vec<OsString> = Vec::new();
    let mut from_file = BTreeSet::new();
    for (key, value) in &table {
        let wanted = key.replace('-', "_");
        let arg = command
            .get_arguments()
            .find(|a| file_key(a) == wanted && !NOT_IN_FILE.contains(&wanted.as_str()))
            .ok_or_else(|| fail(format!("unknown setting `{key}` in config file {} (see --help)", path.display())))?;
        let id = arg.get_id().as_str().to_owned();
        let long = format!("--{}", arg.get_long().unwrap_or(arg.get_id().as_str()));
        let on_command_line = given.iter().any(|g| *g == long || g.starts_with(&format!("{long}=")));
        let in_env = arg.get_env().and_then(|name| env(&name.to_string_lossy())).is_some();
        if on_command_line || in_env {
            continue;
        }
        if let (toml::Value::Boolean(b), ArgAction::SetTrue) = (value, arg.get_action()) {
            if *b {
                injected.push(long.into());
                from_file.insert(id);
            }
            continue;
        }
        let rendered = flag_value(arg, key, value, path).map_err(fail)?;
        injected.push(format!("{long}={rendered}").into());
        from_file.insert(id);
    }
    let mut argv = Vec::with_capacity(args.len() + injected.len());
    let mut args = args.into_iter();
    argv.extend(args.next());
    argv.extend(injected);
    argv.extend(args);
    Ok((argv, from_file))
}

/// Adds where a bad value came from when it was not typed as a flag (clap only names the flag).
fn explain(
    error: clap::Error,
    command: &Command,
    from_file: &BTreeSet<String>,
    file: Option<&Path>,
    typed: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> clap::Error {
    use clap::error::{ContextKind, ContextValue};
    let Some(ContextValue::String(flag)) = error.get(ContextKind::InvalidArg) else { return error };
    let long = flag.split_whitespace().next().unwrap_or_default().trim_start_matches("--").to_owned();
    let Some(arg) = command.get_arguments().find(|a| a.get_long() == Some(long.as_str())) else { return error };
    let id = arg.get_id().as_str();
    let as_flag = format!("--{long}");
    let typed_as_flag = typed.iter().any(|t| *t == as_flag || t.starts_with(&format!("{as_flag}=")));
    let source = if from_file.contains(id) {
        file.map(|f| format!("setting `{}` in config file {}", file_key(arg), f.display()))
    } else if typed_as_flag {
        None
    } else {
        arg.get_env()
            .map(|name| name.to_string_lossy().into_owned())
            .filter(|name| env(name).is_some())
            .map(|name| format!("environment variable {name}"))
    };
    let bad_value =
        matches!(error.kind(), clap::error::ErrorKind::InvalidValue | clap::error::ErrorKind::ValueValidation);
    match source {
        Some(source) if bad_value => {
            let rendered = error.render().to_string();
            let first_line = rendered.lines().next().unwrap_or_default().trim_start_matches("error: ");
            command.clone().error(error.kind(), format!("{first_line} (set by {source})"))
        }
        _ => error,
    }
}

impl std::fmt::Debug for LoadedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedConfig").field("config", &self.config).field("from_file", &self.from_file).finish()
    }
}

impl LoadedConfig {
    /// The effective configuration as a TOML config file: `--config` on it gives the same settings. Numbers and
    /// switches are TOML numbers and booleans, lists TOML arrays; each line notes where its value came from. A
    /// secret (the API key, a URL holding a password) is never printed: its line is a comment naming the
    /// environment variable to set instead.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# quern-worker effective configuration (flags > environment > config file > defaults), usable as \
             --config FILE.\n# Secrets are not printed: set the environment variables their comments name.\n",
        );
        for arg in self.command.get_arguments() {
            let id = arg.get_id().as_str();
            if NOT_IN_FILE.contains(&id) {
                continue;
            }
            let values: Vec<String> = self
                .matches
                .get_raw(id)
                .map(|raw| raw.map(|v| v.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            let key = file_key(arg);
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
            let source = self.source(arg);
            let line = if values.is_empty() {
                format!("# {key} is not set")
            } else if SECRETS.contains(&id) {
                format!("# {key}: not printed (a secret); set {env}  # {source}")
            } else if SECRET_URLS.contains(&id) && values.iter().any(|v| quern_queue::connection::url_has_password(v)) {
                let shown = values.iter().map(|v| quern_queue::redact_url(v)).collect::<Vec<_>>().join(",");
                format!(
                    "# {key} = {}  # {source}; holds a password, so not printed: set {env}",
                    toml::Value::String(shown)
                )
            } else {
                format!("{key} = {}  # {source}", toml_value(arg, values))
            };
            out.push_str(&line);
            out.push('\n');
        }
        out
    }

    /// Where `arg`'s value came from, as the comment beside it says.
    fn source(&self, arg: &clap::Arg) -> String {
        let id = arg.get_id().as_str();
        if self.from_file.contains(id) {
            let file = self.file.as_deref().map(|f| f.display().to_string()).unwrap_or_default();
            return format!("config file {file}");
        }
        match self.matches.value_source(id) {
            Some(ValueSource::CommandLine) => "flag".to_owned(),
            Some(ValueSource::EnvVariable) => {
                format!("env {}", arg.get_env().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default())
            }
            Some(ValueSource::DefaultValue) => "default".to_owned(),
            _ => "unset".to_owned(),
        }
    }
}

/// A setting's raw values as the TOML the loader reads back: a boolean for a switch, an array of strings for a
/// list (`retry_tiers`), a number for a numeric setting, else a string.
fn toml_value(arg: &clap::Arg, values: Vec<String>) -> toml::Value {
    use std::any::TypeId;
    let is_list = arg.get_value_delimiter().is_some() || matches!(arg.get_action(), ArgAction::Append);
    if is_list {
        return toml::Value::Array(values.into_iter().map(toml::Value::String).collect());
    }
    let value = values.join(",");
    let kind = arg.get_value_parser().type_id();
    let integers = [
        TypeId::of::<u8>(),
        TypeId::of::<u16>(),
        TypeId::of::<u32>(),
        TypeId::of::<u64>(),
        TypeId::of::<usize>(),
        TypeId::of::<i32>(),
        TypeId::of::<i64>(),
    ];
    let parsed = if matches!(arg.get_action(), ArgAction::SetTrue) || kind == TypeId::of::<bool>() {
        value.parse().ok().map(toml::Value::Boolean)
    } else if integers.iter().any(|t| kind == *t) {
        // Beyond i64 (TOML's integers) it stays a string, which the loader reads just as well.
        value.parse().ok().map(toml::Value::Integer)
    } else if kind == TypeId::of::<f64>() || kind == TypeId::of::<f32>() {
        value.parse().ok().map(toml::Value::Float)
    } else {
        None
    };
    parsed.unwrap_or(toml::Value::String(value))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use secrecy::ExposeSecret;

    use super::*;

    /// clap reads the real environment: tests that set variables take turns.
    static ENV: Mutex<()> = Mutex::new(());

    fn args(list: &[&str]) -> Vec<OsString> {
        std::iter::once("quern-worker").chain(list.iter().copied()).map(OsString::from).collect()
    }

    /// A config file in the temporary directory, removed when dropped.
    struct TempFile(PathBuf);

    impl std::ops::Deref for TempFile {
        type Target = Path;

        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn file(contents: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("quern-config-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(&path, contents).expect("write config");
        TempFile(path)
    }

    /// Runs `check` with `name=value` and no other `QUERN_*` variable in the environment (a developer's shell
    /// often has some), then puts the environment back.
    fn with_env<T>(name: &str, value: &str, check: impl FnOnce() -> T) -> T {
        let _turn = ENV.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let saved: Vec<(OsString, OsString)> =
            std::env::vars_os().filter(|(k, _)| k.to_string_lossy().starts_with("QUERN_")).collect();
        for (key, _) in &saved {
            std::env::remove_var(key);
        }
        if !name.is_empty() {
            std::env::set_var(name, value);
        }
        let result = check();
        if !name.is_empty() {
            std::env::remove_var(name);
        }
        for (key, value) in saved {
            std::env::set_var(key, value);
        }
        result
    }

    /// Runs `check` with no `QUERN_*` variable in the environment.
    fn without_env<T>(check: impl FnOnce() -> T) -> T {
        with_env("", "", check)
    }

    /// The rendered lines without the comments saying where each value came from.
    fn values(rendered: &str) -> Vec<String> {
        rendered
            .lines()
            .skip(2)
            .map(|line| line.split_once("  # ").map_or(line, |(value, _)| value).to_owned())
            .collect()
    }

    #[test]
    fn flags_beat_env_beat_file_beat_defaults() {
        let path =
            file("prefetch = 11\nbatch_size = 12\nchunk-size = 500\nretry_tiers = [\"2s\", \"20s\"]\nmigrate = true\n");
        let loaded = with_env("QUERN_BATCH_SIZE", "22", || {
            load(args(&["--config", path.to_str().expect("utf-8"), "--prefetch", "33"])).expect("valid")
        });
        assert_eq!(loaded.config.prefetch, 33, "flag over file");
        assert_eq!(loaded.config.batch_size, 22, "env over file");
        assert_eq!(loaded.config.chunk_size, 500, "file over default");
        assert_eq!(
            loaded.config.retry_tiers,
            vec![std::time::Duration::from_secs(2), std::time::Duration::from_secs(20)]
        );
        assert!(loaded.config.migrate);
        assert_eq!(loaded.config.chunk_overlap, 200, "default");
        let rendered = loaded.render();
        assert!(rendered.contains("prefetch = 33  # flag"), "{rendered}");
        assert!(rendered.contains("batch_size = 22  # env QUERN_BATCH_SIZE"), "{rendered}");
        assert!(rendered.contains("chunk_size = 500  # config file"), "{rendered}");
        assert!(rendered.contains("migrate = true  # config file"), "{rendered}");
        assert!(rendered.contains("retry_tiers = [\"2s\", \"20s\"]  # config file"), "{rendered}");
    }

    /// `--print-config`'s output fed back with `--config` (no flags, no environment) gives the same settings:
    /// numbers, switches and lists keep their types, secrets are left out and named.
    #[test]
    fn print_config_reads_back_as_the_same_settings() {
        let path = file("chunk_size = 500\nmigrate = true\nembedding_model = \"text-embedding-3-small\"\n");
        let path = path.to_str().expect("utf-8");
        let first = with_env("QUERN_EMBEDDING_ADAPTIVE_CONCURRENCY", "true", || {
            load(args(&[
                "--config",
                path,
                "--prefetch",
                "64",
                "--retry-tiers",
                "2s,1m30s",
                "--chars-per-token",
                "3.5",
                "--worker-id",
                "w-1",
                "--log-format",
                "json",
                "--embedding-max-requests-per-minute",
                "18446744073709551615",
                "--database-url",
                "postgres://quern@db:5432/ingest?sslmode=disable",
            ]))
            .expect("valid")
        });
        let rendered = first.render();
        for line in [
            "prefetch = 64  # flag",
            "retry_tiers = [\"2s\", \"1m30s\"]  # flag",
            "chars_per_token = 3.5  # flag",
            "embedding_adaptive_concurrency = true  # env QUERN_EMBEDDING_ADAPTIVE_CONCURRENCY",
            "migrate = true  # config file",
            "log_format = \"json\"  # flag",
            // Beyond TOML's integers: a string, which reads back the same.
            "embedding_max_requests_per_minute = \"18446744073709551615\"  # flag",
            "database_url = \"postgres://quern@db:5432/ingest?sslmode=disable\"  # flag",
        ] {
            assert!(rendered.contains(line), "{line} missing:\n{rendered}");
        }

        let printed = file(&rendered);
        let again = without_env(|| load(args(&["--config", printed.to_str().expect("utf-8")])).expect("reads back"));
        assert_eq!(values(&again.render()), values(&rendered), "the same settings, line for line");
        let unsourced = |config: &WorkerConfig| format!("{:?}", WorkerConfig { config: None, ..config.clone() });
        assert_eq!(unsourced(&again.config), unsourced(&first.config));
        // Debug hides secrets, so compare the URLs themselves.
        let urls = |c: &WorkerConfig| {
            (c.broker.amqp_url.expose_secret().to_owned(), c.database.database_url.expose_secret().to_owned())
        };
        assert_eq!(urls(&again.config), urls(&first.config));
    }

    /// Adaptive concurrency became the default (a provider that queues rather than refuses turned the fixed 16
    /// into timeouts and dead letters); the budgets stay off.
    #[test]
    fn embedding_pacing_settings_come_from_flags_env_or_file_and_default_to_adaptive_without_budgets() {
        let defaults = without_env(|| load(args(&[])).expect("valid")).config.pool_config();
        assert_eq!(
            (defaults.adaptive_concurrency, defaults.max_requests_per_minute, defaults.max_tokens_per_minute),
            (true, None, None),
            "adaptive concurrency, unlimited budgets"
        );
        for off in [&["--embedding-adaptive-concurrency", "false"][..], &["--embedding-adaptive-concurrency=no"]] {
            let fixed = without_env(|| load(args(off)).expect("valid")).config.pool_config();
            assert!(!fixed.adaptive_concurrency, "{off:?}");
        }
        let fixed = with_env("QUERN_EMBEDDING_ADAPTIVE_CONCURRENCY", "false", || load(args(&[])).expect("valid"));
        assert!(!fixed.config.embedding_adaptive_concurrency);
        let path = file("embedding_adaptive_concurrency = false\n");
        let fixed = without_env(|| load(args(&["--config", path.to_str().expect("utf-8")])).expect("valid"));
        assert!(!fixed.config.embedding_adaptive_concurrency);
        assert!(fixed.render().contains("embedding_adaptive_concurrency = false  # config file"), "{}", fixed.render());

        let path = file("embedding_max_tokens_per_minute = 1000000\n");
        let loaded = with_env("QUERN_EMBEDDING_ADAPTIVE_CONCURRENCY", "true", || {
            let path = path.to_str().expect("utf-8");
            load(args(&["--config", path, "--embedding-max-requests-per-minute", "3000"])).expect("valid")
        });
        let pool = loaded.config.pool_config();
        assert!(pool.adaptive_concurrency);
        assert_eq!(pool.max_requests_per_minute, Some(3000));
        assert_eq!(pool.max_tokens_per_minute, Some(1_000_000));
        let rendered = loaded.render();
        for line in [
            "embedding_adaptive_concurrency = true  # env QUERN_EMBEDDING_ADAPTIVE_CONCURRENCY",
            "embedding_max_requests_per_minute = 3000  # flag",
            "embedding_max_tokens_per_minute = 1000000  # config file",
        ] {
            assert!(rendered.contains(line), "{line} missing:\n{rendered}");
        }
    }

    #[test]
    fn secrets_are_never_printed_but_named() {
        let loaded = without_env(|| {
            load(args(&[
                "--amqp-url",
                "amqp://u:hunter2@h/v",
                "--database-url",
                "postgres://p@h/db?password=s3cr3t",
                "--embedding-api-key",
                "sk-live-123",
            ]))
            .expect("valid")
        });
        let rendered = loaded.render();
        for secret in ["hunter2", "s3cr3t", "sk-live-123"] {
            assert!(!rendered.contains(secret), "{secret} printed:\n{rendered}");
            assert!(!format!("{:?}", loaded.config).contains(secret), "{secret} in Debug");
        }
        for line in [
            "# amqp_url = \"amqp://u:***@h/v\"  # flag; holds a password, so not printed: set QUERN_AMQP_URL",
            "# database_url = \"postgres://p@h/db?password=***\"  # flag; holds a password, so not printed: set \
             QUERN_DATABASE_URL",
            "# embedding_api_key: not printed (a secret); set QUERN_EMBEDDING_API_KEY  # flag",
        ] {
            assert!(rendered.contains(line), "{line} missing:\n{rendered}");
        }
        // Read back, the secrets are simply absent: the defaults, or what the environment gives.
        let printed = file(&rendered);
        let again = without_env(|| load(args(&["--config", printed.to_str().expect("utf-8")])).expect("reads back"));
        assert!(again.config.embedding.embedding_api_key.is_none());
        assert_eq!(again.config.broker.amqp_url.expose_secret(), "amqp://guest:guest@127.0.0.1:5672/%2f");
    }

    #[test]
    fn a_bad_value_names_the_setting_and_where_it_came_from() {
        let error = without_env(|| load(args(&["--prefetch", "lots"])).expect_err("invalid"));
        assert!(error.to_string().contains("--prefetch"), "{error}");

        let error = with_env("QUERN_PREFETCH", "lots", || load(args(&[])).expect_err("invalid"));
        assert!(error.to_string().contains("QUERN_PREFETCH"), "{error}");

        let path = file("prefetch = \"lots\"\n");
        let error = without_env(|| load(args(&["--config", path.to_str().expect("utf-8")])).expect_err("invalid"));
        assert!(error.to_string().contains("`prefetch` in config file"), "{error}");

        let path = file("prefetchh = 3\n");
        let error = without_env(|| load(args(&["--config", path.to_str().expect("utf-8")])).expect_err("unknown key"));
        assert!(error.to_string().contains("unknown setting `prefetchh`"), "{error}");
    }

    fn segment_policy(flags: &[&str]) -> Result<quern_store::SegmentPolicy, String> {
        // Under the environment lock: other tests set QUERN_* variables, which clap reads.
        without_env(|| {
            let config = <crate::WorkerConfig as clap::Parser>::try_parse_from(
                std::iter::once("quern-worker").chain(flags.iter().copied()),
            )
            .map_err(|error| error.to_string())?;
            config.segments.policy().map_err(|error| error.to_string())
        })
    }

    #[test]
    fn segment_settings_out_of_range_name_the_workers_own_flags() {
        let policy = segment_policy(&["--segment-rows", "500", "--hnsw-m", "8", "--hnsw-ef-construction", "32"]);
        let policy = policy.expect("valid settings");
        assert_eq!((policy.seal_rows, policy.hnsw.m, policy.hnsw.ef_construction), (500, 8, 32));
        assert_eq!(
            segment_policy(&["--hnsw-m", "40", "--hnsw-ef-construction", "50"]).unwrap_err(),
            "--hnsw-ef-construction must be at least 2 × --hnsw-m = 80, got 50"
        );
        assert_eq!(segment_policy(&["--hnsw-m", "200"]).unwrap_err(), "--hnsw-m must be between 2 and 100, got 200");
        let memory = segment_policy(&["--maintenance-work-mem", "1GB; DROP TABLE x"]).unwrap_err();
        assert!(memory.starts_with("--maintenance-work-mem must be a size"), "{memory}");
        assert!(segment_policy(&["--segment-merge-factor", "1"]).unwrap_err().contains("--segment-merge-factor"));
    }

    #[test]
    fn vector_storage_is_vector_unless_halfvec_is_asked_for() {
        let storage = |flags: &[&str]| {
            without_env(|| {
                <crate::WorkerConfig as clap::Parser>::try_parse_from(
                    std::iter::once("quern-worker").chain(flags.iter().copied()),
                )
                .map(|config| config.segments.vector_storage)
                .map_err(|error| error.to_string())
            })
        };
        assert_eq!(storage(&[]), Ok(quern_store::VectorStorage::Vector));
        assert_eq!(storage(&["--vector-storage", "halfvec"]), Ok(quern_store::VectorStorage::Halfvec));
        let error = storage(&["--vector-storage", "float16"]).unwrap_err();
        assert!(error.contains("--vector-storage") && error.contains("expected `vector` or `halfvec`"), "{error}");
    }

    #[test]
    fn celery_tasks_come_from_repeated_flags_the_environment_or_the_file_and_print_back() {
        let mapping = "app.tasks.ingest_document=document_id,text,collection";
        let tasks = |list: &[&str]| {
            load(args(list)).map(|loaded| {
                let names: Vec<String> = loaded.config.celery.celery_tasks.iter().map(ToString::to_string).collect();
                (names, loaded.config.celery.intake(), loaded.config.celery.tasks(), loaded.render())
            })
        };
        let (names, intake, valid, rendered) = without_env(|| {
            tasks(&["--celery-queue", "ingest", "--celery-task", mapping, "--celery-task", "bulk=job"]).unwrap()
        });
        assert_eq!(names, [mapping, "bulk=job"]);
        let intake = intake.expect("a Celery queue");
        assert_eq!((intake.exchange.as_str(), intake.routing_key.as_str()), ("ingest", "ingest"));
        assert!(valid.is_ok());
        assert!(rendered.contains(&format!("celery_task = [\"{mapping}\", \"bulk=job\"]")), "{rendered}");
        // What --print-config printed reads back to the same tasks.
        let printed = file(&rendered.lines().filter(|l| l.starts_with("celery_")).collect::<Vec<_>>().join("\n"));
        let (again, _, _, _) = without_env(|| tasks(&["--config", printed.to_str().unwrap()]).unwrap());
        assert_eq!(again, names);
        let (from_env, _, _, _) = with_env("QUERN_CELERY_TASK", &format!("{mapping};bulk=job"), || tasks(&[]).unwrap());
        assert_eq!(from_env, names);

        let error = without_env(|| tasks(&["--celery-task", "ingest=document_id,body"])).err().unwrap().to_string();
        assert!(error.contains("--celery-task") && error.contains("`body`"), "{error}");
        let (_, _, lonely, _) = without_env(|| tasks(&["--celery-queue", "ingest"]).unwrap());
        assert!(lonely.unwrap_err().contains("needs at least one --celery-task"));
        let (_, _, stray, _) = without_env(|| tasks(&["--celery-task", "t=job", "--celery-exchange", "x"]).unwrap());
        assert!(stray.unwrap_err().contains("need --celery-queue"));
    }

    #[test]
    fn a_shadow_run_takes_its_own_prefix_and_schema_and_needs_a_celery_queue() {
        let applied = |list: &[&str]| without_env(|| load(args(list)).unwrap().config.shadow_applied());
        let celery = ["--celery-queue", "ingest", "--celery-task", "t=job", "--queue-prefix", "app"];
        let shadow = applied(&[&celery[..], &["--shadow"]].concat()).expect("a valid shadow run");
        assert_eq!(shadow.broker.topology.prefix(), "app.shadow");
        assert_eq!(shadow.database.store_config().unwrap().schema.as_deref(), Some("quern_shadow"));
        assert_eq!(shadow.shadow_copy_queue().as_deref(), Some("app.shadow.copy.ingest"));
        let own_schema = applied(&[&celery[..], &["--shadow", "--database-schema", "trial"]].concat()).unwrap();
        assert_eq!(own_schema.database.store_config().unwrap().schema.as_deref(), Some("trial"));
        let plain = applied(&celery).unwrap();
        assert_eq!((plain.broker.topology.prefix(), plain.shadow_copy_queue()), ("app", None));
        assert_eq!(plain.database.store_config().unwrap().schema, None);
        assert!(applied(&["--shadow"]).unwrap_err().contains("give --celery-queue and --celery-task"));
    }
}
