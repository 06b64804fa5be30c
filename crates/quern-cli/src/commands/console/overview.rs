//! `GET /`: the fleet at a glance. Every part is read at once and shown on its own: a broker that does not answer
//! leaves the database's figures on the page, and the other way round.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use quern_queue::depth::QueueDepth;
use quern_store::{JobOverview, SegmentsStatus, ThroughputMinute};

use super::chart;
use super::layout::{self, Tab};
use super::scrape::{self, EmbeddingFigures, Recent, WorkerScrape};
use super::Console;

/// The throughput chart's span.
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(chart::MINUTES as u64 * 60);

pub async fn page(State(console): State<Arc<Console>>) -> Response {
    let prefix = console.broker.topology.prefix().to_owned();
    let (queues, jobs, throughput, segments, workers) = tokio::join!(
        crate::commands::status::read_queues(&console.broker, &console.queue_names),
        console.store.job_overview(console.window, &prefix),
        console.store.throughput(THROUGHPUT_WINDOW, &prefix),
        console.store.segments_status(),
        scrape::scrape_all(&console.http, &console.worker_metrics),
    );
    let mut fleet = EmbeddingFigures::default();
    for worker in &workers {
        if let Ok(figures) = &worker.result {
            fleet.add(figures);
        }
    }
    let recent = console.metrics_history.lock().ok().and_then(|mut history| history.record(Instant::now(), &fleet));
    let body = html! {
        p.muted { "Queue prefix " code { (prefix) } " · reloads every " (layout::duration(console.refresh)) }
        div.grid {
            section #queues-panel {
                h2 { "Queues" }
                @match &queues { Ok(queues) => (queues_table(queues)), Err(error) => (layout::unavailable("The queues", error)) }
            }
            section #jobs {
                h2 { "Jobs updated in the last " (humantime::format_duration(console.window)) }
                @match &jobs { Ok(jobs) => (jobs_figures(jobs)), Err(error) => (layout::unavailable("The jobs", &anyhow!("{error}"))) }
            }
        }
        section #throughput {
            h2 { "Throughput, last hour (succeeded jobs, whole fleet)" }
            @match &throughput { Ok(minutes) => (throughput_chart(minutes)), Err(error) => (layout::unavailable("The throughput", &anyhow!("{error}"))) }
        }
        div.grid {
            section #embedding {
                h2 { "Embedding" }
                (embedding(&fleet, recent.as_ref(), &workers))
            }
            section #dead-reasons-panel {
                h2 { "Why jobs died (commonest first)" }
                @match &jobs { Ok(jobs) => (dead_reasons(jobs)), Err(error) => (layout::unavailable("The dead jobs", &anyhow!("{error}"))) }
            }
        }
        section #index {
            h2 { "Chunk segments and their HNSW indexes" }
            @match &segments { Ok(segments) => (segments_table(segments)), Err(error) => (layout::unavailable("The segments", &anyhow!("{error}"))) }
        }
    };
    layout::page("Overview", Tab::Overview, Some(console.refresh), body).into_response()
}

fn queues_table(queues: &[QueueDepth]) -> Markup {
    html! {
        table #queues {
            thead { tr { th { "queue" } th.num { "ready" } th.num { "consumers" } } }
            tbody {
                @for queue in queues {
                    tr data-queue=(queue.name) {
                        td { (queue.name) }
                        @match (queue.messages, queue.consumers) {
                            (Some(messages), Some(consumers)) => {
                                td.num.ready { (messages) }
                                td.num.consumers { (consumers) }
                            }
                            _ => { td.num.ready.muted colspan="2" { "not declared yet" } }
                        }
                    }
                }
            }
        }
    }
}

fn jobs_figures(jobs: &JobOverview) -> Markup {
    html! {
        div.figures {
            @for (status, count) in [("queued", jobs.queued), ("running", jobs.running), ("succeeded", jobs.succeeded), ("failed", jobs.failed), ("dead", jobs.dead)] {
                div.figure data-status=(status) {
                    b.count { (count) }
                    span { (status) }
                }
            }
        }
        @if jobs.without_prefix > 0 {
            p.muted { (jobs.without_prefix) " more jobs were recorded without a prefix (workers from before migration 3)." }
        }
        p { a href="/jobs" { "Look up a job" } }
    }
}

fn throughput_chart(minutes: &[ThroughputMinute]) -> Markup {
    let rates = chart::rates(minutes, chrono::Utc::now());
    let jobs: Vec<f64> = rates.iter().map(|r| r.0).collect();
    let chunks: Vec<f64> = rates.iter().map(|r| r.1).collect();
    let (total_jobs, total_chunks) = minutes.iter().fold((0, 0), |(j, c), m| (j + m.jobs, c + m.chunks));
    let last = rates.last().copied().unwrap_or_default();
    html! {
        div.figures {
            div.figure { b data-figure="jobs-last-hour" { (total_jobs) } span { "jobs succeeded in the last hour" } }
            div.figure { b data-figure="chunks-last-hour" { (total_chunks) } span { "chunks written by them" } }
            div.figure { b { (format!("{:.1}", last.1)) } span { "chunks/s this minute (so far)" } }
        }
        div.grid {
            (chart::line("chunks/s", "per-minute average", &chunks, "#2457c5"))
            (chart::line("jobs/s", "per-minute average", &jobs, "#c05621"))
        }
    }
}

fn embedding(fleet: &EmbeddingFigures, recent: Option<&Recent>, workers: &[WorkerScrape]) -> Markup {
    let ms = |d: Option<Duration>| d.map(|d| format!("{:.0}", d.as_secs_f64() * 1000.0)).unwrap_or_else(|| "–".into());
    html! {
        @if workers.is_empty() {
            p.muted { "No worker metrics given: start the console with " code { "--worker-metrics http://WORKER:PORT/metrics" } " (each worker's " code { "--metrics-addr" } ") to see embedding latency and 429s." }
        } @else {
            div.figures {
                div.figure { b data-figure="embedding-requests" { (fleet.requests) } span { "requests since the workers started" } }
                div.figure { b data-figure="embedding-429" { (fleet.throttled) } span { "answered 429" } }
                div.figure { b data-figure="embedding-mean-ms" { (ms(fleet.mean())) } span { "ms mean (successful)" } }
                div.figure { b data-figure="embedding-p95-ms" { (ms(fleet.p95_bound())) } span { "ms p95 at most" } }
            }
            @if let Some(recent) = recent {
                p data-figure="embedding-recent" {
                    "Last " (layout::duration(recent.over)) ": " (recent.requests) " requests, " (recent.throttled) " answered 429, "
                    (ms(recent.mean)) " ms mean."
                }
            }
            @if fleet.providers_down > 0 {
                p.error { (fleet.providers_down) " worker(s) find the embedding provider unavailable." }
            }
            table {
                thead { tr { th { "worker metrics" } th { "state" } th.num { "requests" } th.num { "429" } th.num { "chunks embedded" } } }
                tbody {
                    @for worker in workers {
                        tr data-worker=(worker.url) {
                            td { (worker.url) }
                            @match &worker.result {
                                Ok(figures) => {
                                    td.up { "up" }
                                    td.num { (figures.requests) }
                                    td.num { (figures.throttled) }
                                    td.num { (figures.chunks_embedded) }
                                }
                                Err(error) => { td.down title=(error) { "down" } td.muted colspan="3" { (error) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn dead_reasons(jobs: &JobOverview) -> Markup {
    html! {
        @if jobs.dead_reasons.is_empty() {
            p.muted { "No job died in the window." }
        } @else {
            ol #dead-reasons {
                @for reason in &jobs.dead_reasons {
                    @let text = reason.error.as_deref().unwrap_or("(no error recorded)");
                    li data-reason=(text) { b.count { (reason.count) } " " (text) }
                }
            }
            p { a href="/dead-letters" { "Open the dead letters" } }
        }
    }
}

fn segments_table(status: &SegmentsStatus) -> Markup {
    html! {
        p {
            (status.chunk_rows) " chunks searchable, stored as " code { (status.storage.type_name()) } "; "
            @match status.maintainer_pid {
                Some(pid) => { "maintenance lease held by backend " (pid) "." }
                None => { "no worker holds the maintenance lease." }
            }
        }
        @if status.segments.is_empty() {
            p.muted { "No segments yet." }
        } @else {
            table #segments {
                thead { tr { th { "segment" } th { "state" } th.num { "rows" } th.num { "size" } th { "index" } th { "since" } } }
                tbody {
                    @for segment in &status.segments {
                        tr data-segment=(segment.id) {
                            td { (segment.id) }
                            td { (segment.state.as_str()) }
                            td.num { (segment.rows) }
                            td.num { (indicatif::HumanBytes(segment.size_bytes).to_string()) }
                            td {
                                @match &segment.index {
                                    Some(index) if index.valid => { "HNSW, " (indicatif::HumanBytes(index.size_bytes).to_string()) }
                                    Some(_) => { "building" }
                                    None => { span.muted { "none (scanned exactly)" } }
                                }
                            }
                            td { (layout::time(segment.indexed_at.or(segment.sealed_at).unwrap_or(segment.created_at))) }
                        }
                    }
                }
            }
        }
        @for build in &status.builds {
            p { "Building the index of " code { (build.table) } ": " (build.phase) ", " (build.tuples_done) " rows so far." }
        }
    }
}
