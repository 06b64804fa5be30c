//! `quern console`: a web console for on-call, served by the CLI with server-rendered pages (no script, no build).
//!
//! - [`overview`]: the fleet at a glance (queues, jobs by status, throughput chart, embedding figures scraped from
//!   the workers by [`scrape`], why jobs died, the segments), refreshing itself;
//! - [`jobs`]: one job, or a collection's or a document's jobs;
//! - [`dead_letters`]: the dead-letter queue with `quern dlq list`'s filters, one message in full, and replay or
//!   purge of a selection after a confirmation, through the same functions as `quern dlq replay | purge`;
//! - [`security`]: who may read and who may act (loopback, `QUERN_CONSOLE_TOKEN`, a sign-in cookie), the CSRF
//!   check every form passes, and the headers that keep a page from running anything it did not ship;
//! - [`layout`] and [`chart`]: the page shell, its stylesheet, and the SVG chart; [`form`]: reading forms.

mod chart;
mod dead_letters;
mod form;
mod jobs;
mod layout;
mod overview;
mod scrape;
mod security;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::routing::{get, post};
use axum::Router;
use clap::Args;
use quern_config::{parse_duration, BrokerArgs, DatabaseArgs};
use quern_store::Store;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use self::scrape::MetricsHistory;
use self::security::Access;

/// Exit status of a refused start (as clap uses for usage errors).
const USAGE: u8 = 2;

/// The flags of `quern console`.
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Address to serve the console on. Loopback by default, where pages need no token; on any other address the
    /// console refuses to start without QUERN_CONSOLE_TOKEN, and then every page asks for it. Replays and purges
    /// always need it.
    #[arg(long, env = "QUERN_CONSOLE_LISTEN", default_value = "127.0.0.1:8787", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// The workers' retry delay tiers (as given to quern-worker), which name the delay queues shown.
    #[arg(long, env = "QUERN_RETRY_TIERS", default_value = "1s,10s,60s,5m", value_name = "DELAYS")]
    pub retry_tiers: String,
    /// Jobs by status count the jobs last updated within this long (e.g. 15m, 1h, 2d).
    #[arg(long, default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
    pub window: Duration,
    /// The workers' metrics endpoints (`quern-worker --metrics-addr`), comma-separated, e.g.
    /// http://worker-1:9090/metrics: the overview's embedding latency and 429s are summed over them.
    #[arg(long, env = "QUERN_CONSOLE_WORKER_METRICS", value_delimiter = ',', value_name = "URLS")]
    pub worker_metrics: Vec<String>,
    /// How often the overview reloads itself.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub refresh: Duration,
}

/// What every handler shares.
#[derive(Debug)]
pub struct Console {
    broker: BrokerArgs,
    store: Store,
    /// The work queue, each delay queue, the dead-letter queue: the overview's rows.
    queue_names: Vec<String>,
    window: Duration,
    refresh: Duration,
    worker_metrics: Vec<reqwest::Url>,
    http: reqwest::Client,
    metrics_history: std::sync::Mutex<MetricsHistory>,
    access: Access,
    /// One dead-letter scan at a time: two scans at once would each see only what the other does not hold.
    dead_letter_scan: Mutex<()>,
}

/// Checks the settings, binds, prints the address on stdout and serves until ctrl-c or SIGTERM.
pub async fn run(args: ConsoleArgs) -> anyhow::Result<ExitCode> {
    let token = std::env::var("QUERN_CONSOLE_TOKEN").ok().filter(|token| !token.trim().is_empty());
    let access = match Access::new(token, args.listen) {
        Ok(access) => access,
        Err(refusal) => {
            eprintln!("quern console: {refusal}");
            return Ok(ExitCode::from(USAGE));
        }
    };
    let tiers = match crate::commands::status::parse_durations(&args.retry_tiers) {
        Ok(tiers) => tiers,
        Err(error) => {
            eprintln!("quern console: --retry-tiers: {error}");
            return Ok(ExitCode::from(USAGE));
        }
    };
    let mut worker_metrics = Vec::new();
    for text in args.worker_metrics.iter().map(|url| url.trim()).filter(|url| !url.is_empty()) {
        match reqwest::Url::parse(text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => worker_metrics.push(url),
            _ => {
                eprintln!("quern console: --worker-metrics: `{text}` is not an http:// or https:// URL");
                return Ok(ExitCode::from(USAGE));
            }
        }
    }
    let console = Console {
        queue_names: crate::commands::status::queue_names(&args.broker.topology, &tiers),
        store: Store::connect(&args.database.store_config()?)?,
        broker: args.broker,
        window: args.window,
        refresh: args.refresh.max(Duration::from_secs(1)),
        worker_metrics,
        http: reqwest::Client::builder().timeout(scrape::SCRAPE_TIMEOUT).build()?,
        metrics_history: std::sync::Mutex::new(MetricsHistory::default()),
        access,
        dead_letter_scan: Mutex::new(()),
    };
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    let address = listener.local_addr()?;
    crate::output::outln!("quern console: listening on http://{address}/")?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    serve(listener, Arc::new(console), shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// Serves `console` on `listener` until `shutdown` is cancelled, then lets requests in progress finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    console: Arc<Console>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app = router(console).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await?;
    Ok(())
}

fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/", get(overview::page))
        .route("/jobs", get(jobs::search))
        .route("/jobs/{job_id}", get(jobs::one))
        .route("/dead-letters", get(dead_letters::list))
        .route("/dead-letters/confirm", post(dead_letters::confirm))
        .route("/dead-letters/replay", post(dead_letters::replay))
        .route("/dead-letters/purge", post(dead_letters::purge))
        .route("/dead-letters/{id}", get(dead_letters::show))
        .route("/login", get(security::login_page).post(security::login))
        .route("/logout", post(security::logout))
        .route("/console.css", get(layout::stylesheet))
        .layer(axum::middleware::from_fn_with_state(console.clone(), security::guard))
        .with_state(console)
}

/// Cancels `shutdown` on ctrl-c or SIGTERM.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = ctrl_c.await;
                shutdown.cancel();
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    shutdown.cancel();
}
