//! The dead-letter pages: the list with `quern dlq list`'s filters, one message in full, and replay or purge of a
//! selection. An action first shows its dry run (the same sweep as `quern dlq replay --dry-run`), then runs through
//! `replay::execute` / `purge::execute`, so the page gives the command line's guarantees: a message leaves the
//! dead-letter queue only after its publish is confirmed, the others keep their order, and an audit line is written.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use maud::{html, Markup};
use quern_config::parse_duration;
use quern_queue::dead_letters::SCAN_CAP;
use serde_json::Value;

use super::form::Form;
use super::layout::{self, encode, Tab};
use super::security::CsrfToken;
use super::Console;
use crate::commands::dlq::args::{ActArgs, PurgeArgs, ReplayArgs};
use crate::commands::dlq::filter::FilterArgs;
use crate::commands::dlq::report::Summary;
use crate::commands::dlq::view::{now_ms, rfc3339, short_age, truncate, LetterView};
use crate::commands::dlq::{list, purge, replay, show};

/// Most rows the list shows (the scan reads up to `SCAN_CAP` anyway, and counts them all).
const SHOWN: usize = 1_000;
/// Replays of one message before the console refuses it (as `quern dlq replay`'s default; `--force` is the CLI's).
const MAX_REPLAYS: u32 = 3;

/// The two actions, as the forms name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Replay,
    Purge,
}

impl Action {
    fn parse(text: Option<&str>) -> Option<Action> {
        match text? {
            "replay" => Some(Action::Replay),
            "purge" => Some(Action::Purge),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Action::Replay => "replay",
            Action::Purge => "purge",
        }
    }
}

/// The filter fields of a query string or form, as `quern dlq` flags; the error names the field.
fn filters(form: &Form) -> Result<FilterArgs, String> {
    let duration = |name: &str| {
        form.text(name).map(|text| parse_duration(&text).map_err(|error| format!("{name}: {error}"))).transpose()
    };
    Ok(FilterArgs {
        all: false,
        ids: form.all("id"),
        reason: form.text("reason"),
        collection: form.text("collection"),
        older_than: duration("older_than")?,
        newer_than: duration("newer_than")?,
    })
}

/// The list's filter fields again, as hidden inputs, so the selection form acts on what the page showed.
fn hidden_filters(form: &Form) -> Markup {
    html! {
        @for name in ["reason", "collection", "older_than", "newer_than"] {
            @if let Some(value) = form.text(name) { input type="hidden" name=(name) value=(value); }
        }
        @for id in form.all("id") { input type="hidden" name="filter_id" value=(id); }
    }
}

/// A confirmed selection as hidden inputs, exactly as the dry run used it, for the form that acts.
fn selection_inputs(chosen: &FilterArgs) -> Markup {
    let millis = |d: Option<std::time::Duration>| d.map(|d| format!("{}ms", d.as_millis()));
    html! {
        @for id in &chosen.ids { input type="hidden" name="selected_id" value=(id); }
        @if chosen.all { input type="hidden" name="all" value="1"; }
        @if let Some(reason) = &chosen.reason { input type="hidden" name="reason" value=(reason); }
        @if let Some(collection) = &chosen.collection { input type="hidden" name="collection" value=(collection); }
        @if let Some(older) = millis(chosen.older_than) { input type="hidden" name="older_than" value=(older); }
        @if let Some(newer) = millis(chosen.newer_than) { input type="hidden" name="newer_than" value=(newer); }
    }
}

pub async fn list(
    State(console): State<Arc<Console>>,
    RawQuery(query): RawQuery,
    Extension(csrf): Extension<CsrfToken>,
) -> Response {
    let form = Form::parse(query.unwrap_or_default().as_bytes());
    let chosen = match filters(&form) {
        Ok(chosen) => chosen,
        Err(error) => return layout::refused(StatusCode::BAD_REQUEST, "Dead letters", &error),
    };
    let now = now_ms();
    let mut shown = Vec::new();
    let mut matching = 0;
    let read = {
        let _one_scan = console.dead_letter_scan.lock().await;
        match crate::commands::dlq::connect(&console.broker).await {
            Ok(connection) => {
                let read = list::read_all(&connection, &console.broker.topology, |letter| {
                    let view = LetterView::new(letter, now);
                    if chosen.matches(&view) {
                        matching += 1;
                        if shown.len() < SHOWN {
                            shown.push(view);
                        }
                    }
                })
                .await;
                let _ = connection.close(200, "console list".into()).await;
                read
            }
            Err(error) => Err(error),
        }
    };
    let field = |name: &str, label: &str, hint: &str| {
        html! { label { (label) input type="text" name=(name) value=[form.text(name)] placeholder=(hint); } }
    };
    let body = html! {
        form #filters .inline method="get" action="/dead-letters" {
            (field("reason", "Reason", "contract"))
            (field("collection", "Collection", ""))
            (field("id", "Message or job id", ""))
            (field("older_than", "Dead for at least", "1h"))
            (field("newer_than", "Dead for less than", "10m"))
            button type="submit" { "Filter" }
            a href="/dead-letters" { "clear" }
        }
        @match &read {
            Err(error) => { (layout::unavailable("The dead-letter queue", error)) }
            Ok((read, left_unread)) => {
                p #dead-count { (matching) " of " (read) " dead letters" @if matching > shown.len() { " (the first " (SHOWN) " shown)" } }
                @if *left_unread > 0 { p.error { "Only the first " (SCAN_CAP) " messages were read; " (left_unread) " more are in the queue." } }
                form #selection method="post" action="/dead-letters/confirm" {
                    (layout::csrf_input(&csrf))
                    (hidden_filters(&form))
                    div.actions {
                        button type="submit" name="action" value="replay" { "Replay…" }
                        button.danger type="submit" name="action" value="purge" { "Purge…" }
                        span.muted { "the ticked messages, or with none ticked every message matching the filters; a confirmation follows" }
                    }
                    (letters_table(&shown))
                }
            }
        }
    };
    layout::page("Dead letters", Tab::DeadLetters, None, body).into_response()
}

fn letters_table(letters: &[LetterView]) -> Markup {
    let or_dash =
        |text: &Option<String>, max: usize| text.as_deref().map(|t| truncate(t, max)).unwrap_or_else(|| "–".into());
    html! {
        table #dead-letters {
            thead { tr { th {} th { "id" } th { "reason" } th.num { "attempts" } th.num { "replays" } th { "dead for" } th { "collection" } th { "document" } th { "error" } } }
            tbody {
                @for letter in letters {
                    tr data-id=(letter.id()) {
                        td { input type="checkbox" name="id" value=(letter.id()) aria-label="select"; }
                        td { a.show href=(format!("/dead-letters/{}", encode(letter.id()))) { code { (letter.id()) } } }
                        td.reason { (or_dash(&letter.reason, 32)) }
                        td.num.attempts { (letter.attempts.map(|a| a.to_string()).unwrap_or_else(|| "–".into())) }
                        td.num { (letter.replay_count) }
                        td { (letter.age_ms.map(short_age).unwrap_or_else(|| "–".into())) }
                        td.collection { (or_dash(&letter.collection, 32)) }
                        td.document { (or_dash(&letter.document_id, 40)) }
                        td.error { (or_dash(&letter.error, 100)) }
                    }
                }
            }
        }
    }
}

pub async fn show(State(console): State<Arc<Console>>, Path(id): Path<String>) -> Response {
    let found = {
        let _one_scan = console.dead_letter_scan.lock().await;
        show::find(&console.broker, &id).await
    };
    let letter = match found {
        Ok(Some(letter)) => letter,
        Ok(None) => {
            let why = format!("no dead letter has the message id or job id `{id}` (replayed or purged already?)");
            return layout::refused(StatusCode::NOT_FOUND, "Dead letter", &why);
        }
        Err(error) => return layout::refused(StatusCode::SERVICE_UNAVAILABLE, "Dead letter", &format!("{error:#}")),
    };
    let properties = show::properties_json(&letter.properties);
    let headers = letter.headers().map(show::table_json).unwrap_or(Value::Null);
    let body_text = String::from_utf8_lossy(&letter.body);
    let rows = |value: &Value| {
        html! {
            @for (key, value) in value.as_object().into_iter().flatten() {
                @let shown = value.as_str().map(str::to_owned).unwrap_or_else(|| value.to_string());
                @if let Some(at) = value.as_i64().filter(|_| key.ends_with("-at-ms")).and_then(rfc3339) {
                    tr data-header=(key) { th { (key) } td.value { (shown) " (" (at) ")" } }
                } @else {
                    tr data-header=(key) { th { (key) } td.value { (shown) } }
                }
            }
        }
    };
    let body = html! {
        h2 { "Headers" }
        table #headers { tbody { (rows(&headers)) } }
        h2 { "Properties" }
        table #properties { tbody { (rows(&properties)) } }
        h2 { "Body (" (letter.body.len()) " bytes" @if std::str::from_utf8(&letter.body).is_err() { ", not valid UTF-8: shown with replacement characters" } ")" }
        pre #body { (body_text) }
        p { a href=(format!("/dead-letters?id={}", encode(&id))) { "Select it to replay or purge" } }
    };
    layout::page(&format!("Dead letter {id}"), Tab::DeadLetters, None, body).into_response()
}

/// What an action acts on: the ticked ids, or else the list's filters, or else everything.
fn selection(form: &Form) -> Result<FilterArgs, String> {
    let mut chosen = filters(form)?;
    let ticked = form.all("id");
    if !ticked.is_empty() {
        return Ok(FilterArgs { ids: ticked, ..FilterArgs::default() });
    }
    chosen.ids = form.all("filter_id");
    if !chosen.chosen() {
        chosen.all = true;
    }
    Ok(chosen)
}

/// Runs `action` over `filters` through the command line's code path; `dry_run` changes nothing.
async fn execute(
    console: &Console,
    action: Action,
    filters: FilterArgs,
    limit: u32,
    dry_run: bool,
) -> anyhow::Result<(Summary, anyhow::Result<()>)> {
    let act = ActArgs { filters, limit, dry_run, json: false };
    let _one_scan = console.dead_letter_scan.lock().await;
    match action {
        Action::Replay => {
            let args = ReplayArgs {
                broker: console.broker.clone(),
                act,
                rate: None,
                to_queue: None,
                max_replays: MAX_REPLAYS,
                force: false,
            };
            replay::execute(&args).await
        }
        Action::Purge => purge::execute(&PurgeArgs { broker: console.broker.clone(), act, yes: true }).await,
    }
}

/// `POST /dead-letters/confirm`: the dry run of the chosen action, and the form that does it.
pub async fn confirm(
    State(console): State<Arc<Console>>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    let Some(action) = Action::parse(form.get("action")) else {
        return layout::refused(StatusCode::BAD_REQUEST, "Confirm", "say which action: replay or purge");
    };
    let chosen = match selection(&form) {
        Ok(chosen) => chosen,
        Err(error) => return layout::refused(StatusCode::BAD_REQUEST, "Confirm", &error),
    };
    let (mut summary, result) = match execute(&console, action, chosen.clone(), SCAN_CAP as u32, true).await {
        Ok(run) => run,
        Err(error) => return layout::refused(StatusCode::SERVICE_UNAVAILABLE, "Confirm", &format!("{error:#}")),
    };
    let lines = summary.lines();
    let would = lines.iter().filter(|line| line.2.starts_with("would_")).count();
    let title = match action {
        Action::Replay => "Replay dead letters?",
        Action::Purge => "Purge dead letters?",
    };
    let body = html! {
        div #confirm {
            p #what {
                @match action {
                    Action::Replay => { (would) " dead letter(s) would go back to work: each to its original exchange and routing key with its body unchanged, and removed from the dead-letter queue only once the broker confirmed the publish. The others keep their place and order." }
                    Action::Purge => { (would) " dead letter(s) would be deleted for good. This cannot be undone." }
                }
            }
            p.muted { "Selection: " code { (chosen.describe()) } ", read " (summary.read) " messages." }
            @if let Err(error) = &result { p.error { "The dry run stopped: " (format!("{error:#}")) } }
            (lines_table(&lines))
            @if would > 0 {
                form #act method="post" action=(format!("/dead-letters/{}", action.name())) {
                    (layout::csrf_input(&csrf))
                    (selection_inputs(&chosen))
                    input type="hidden" name="limit" value=(would);
                    @if !console.access.actions_enabled() {
                        p.error { "Actions are off: the console was started without QUERN_CONSOLE_TOKEN." }
                    } @else if !console.access.signed_in(&headers) {
                        label { "Console token (QUERN_CONSOLE_TOKEN) " input type="password" name="token" autocomplete="off"; }
                    }
                    div.actions {
                        @match action {
                            Action::Replay => { button #do-it type="submit" { "Replay " (would) " message(s)" } }
                            Action::Purge => { button #do-it .danger type="submit" { "Delete " (would) " message(s) for good" } }
                        }
                        a href="/dead-letters" { "Cancel" }
                    }
                }
            } @else {
                p { "Nothing to do. " a href="/dead-letters" { "Back to the dead letters" } }
            }
        }
    };
    layout::page(title, Tab::DeadLetters, None, body).into_response()
}

pub async fn replay(
    state: State<Arc<Console>>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    act(state, peer, headers, body, Action::Replay).await
}

pub async fn purge(
    state: State<Arc<Console>>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    act(state, peer, headers, body, Action::Purge).await
}

/// `POST /dead-letters/replay | purge`: checks the token, runs the action, writes the audit line, shows the result.
async fn act(
    State(console): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
    action: Action,
) -> Response {
    let form = Form::parse(&body);
    if let Err(why) = console.access.check_action(&headers, form.get("token")) {
        tracing::warn!(target: "quern::audit", peer = %peer, action = action.name(), "console action refused: {why}");
        return layout::refused(StatusCode::FORBIDDEN, "Refused", why);
    }
    let mut chosen = match filters(&form) {
        Ok(chosen) => chosen,
        Err(error) => return layout::refused(StatusCode::BAD_REQUEST, "Refused", &error),
    };
    chosen.ids = form.all("selected_id");
    chosen.all = form.get("all") == Some("1");
    if !chosen.chosen() {
        return layout::refused(StatusCode::BAD_REQUEST, "Refused", "no selection: start from the dead letters page");
    }
    let limit = form.text("limit").and_then(|l| l.parse::<u32>().ok()).unwrap_or(0).clamp(1, SCAN_CAP as u32);
    let (mut summary, result) = match execute(&console, action, chosen, limit, false).await {
        Ok(run) => run,
        Err(error) => return layout::refused(StatusCode::SERVICE_UNAVAILABLE, "Not done", &format!("{error:#}")),
    };
    let signed = if console.access.signed_in(&headers) { "signed-in" } else { "token" };
    summary.audit(&format!("console:{peer}:{signed}"), &rfc3339(now_ms()).unwrap_or_default());
    let lines = summary.lines();
    let count = |name: &str| lines.iter().filter(|line| line.2 == name).count();
    let done_name = if action == Action::Replay { "replayed" } else { "purged" };
    let body = html! {
        div #result {
            div.figures {
                div.figure { b data-figure="done" { (count(done_name)) } span { (done_name) } }
                div.figure { b data-figure="refused" { (count("refused")) } span { "refused (replay cap)" } }
                div.figure { b data-figure="failed" { (count("failed")) } span { "failed (still in the dead-letter queue)" } }
            }
            @if let Err(error) = &result { p.error { "The run stopped: " (format!("{error:#}")) ". Messages not done stay in the dead-letter queue." } }
            @if let Some(error) = summary.first_error() { p.error { (error) } }
            (lines_table(&lines))
            p { a href="/dead-letters" { "Back to the dead letters" } " · " a href="/" { "Overview" } }
        }
    };
    layout::page(&format!("Dead letters: {}", summary.verb()), Tab::DeadLetters, None, body).into_response()
}

fn lines_table(lines: &[(String, String, String, Option<String>)]) -> Markup {
    html! {
        @if !lines.is_empty() {
            table #lines {
                thead { tr { th { "id" } th { "reason" } th { "outcome" } th { "detail" } } }
                tbody {
                    @for (id, reason, outcome, detail) in lines {
                        tr data-id=(id) {
                            td { code { (id) } }
                            td.reason { (reason) }
                            td.outcome { (outcome) }
                            td.detail { (detail.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    }
}
