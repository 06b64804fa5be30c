//! `GET /jobs`: look jobs up by job id, collection or document; `GET /jobs/{id}`: one job's attempts, error and
//! timings.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use quern_store::{JobRecord, JobStatus};
use uuid::Uuid;

use super::form::Form;
use super::layout::{self, encode, Tab};
use super::Console;

/// Most jobs listed for a collection or document.
const LISTED: i64 = 200;

pub async fn search(State(console): State<Arc<Console>>, RawQuery(query): RawQuery) -> Response {
    let form = Form::parse(query.unwrap_or_default().as_bytes());
    let (job_id, collection, document) = (form.text("job_id"), form.text("collection"), form.text("document_id"));
    let found: Result<Option<Vec<JobRecord>>, String> = match (&job_id, &collection, &document) {
        (Some(id), _, _) => match Uuid::parse_str(id) {
            Ok(id) => console.store.job(id).await.map(|job| Some(job.into_iter().collect())).map_err(|e| e.to_string()),
            Err(_) => Err(format!("job id `{id}` is not a UUID")),
        },
        (None, Some(collection), document) => {
            console.store.find_jobs(collection, document.as_deref(), LISTED).await.map(Some).map_err(|e| e.to_string())
        }
        (None, None, Some(_)) => Err("a document id needs its collection".to_owned()),
        (None, None, None) => Ok(None),
    };
    let status = if found.is_err() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    let body = html! {
        form #job-search .inline method="get" action="/jobs" {
            label { "Job id" input type="text" name="job_id" value=[job_id.as_deref()] size="38"; }
            label { "Collection" input type="text" name="collection" value=[collection.as_deref()]; }
            label { "Document id" input type="text" name="document_id" value=[document.as_deref()]; }
            button type="submit" { "Look up" }
        }
        @match &found {
            Err(error) => p.error { (error) },
            Ok(None) => p.muted { "Give a job id (as printed by " code { "quern enqueue" } " or returned by a producer), or a collection with or without a document id." },
            Ok(Some(jobs)) if jobs.is_empty() => p #no-jobs { "No job found: no worker has recorded one (yet), or retention pruned it." },
            Ok(Some(jobs)) => (jobs_table(jobs)),
        }
    };
    (status, layout::page("Jobs", Tab::Jobs, None, body)).into_response()
}

fn jobs_table(jobs: &[JobRecord]) -> Markup {
    html! {
        p.muted { (jobs.len()) " job(s), most recently updated first" @if jobs.len() as i64 == LISTED { " (the first " (LISTED) ")" } "." }
        table #job-results {
            thead { tr { th { "job" } th { "status" } th { "collection" } th { "document" } th.num { "attempts" } th.num { "chunks" } th { "updated" } th { "error" } } }
            tbody {
                @for job in jobs {
                    tr data-job-id=(job.job_id) {
                        td { a href=(format!("/jobs/{}", job.job_id)) { code { (job.job_id) } } }
                        td.status { (job.status.as_str()) }
                        td.collection { (job.collection.as_deref().unwrap_or("?")) }
                        td.document { (job.document_id.as_deref().unwrap_or("?")) }
                        td.num.attempts { (job.attempts) }
                        td.num { (job.chunk_count.map(|c| c.to_string()).unwrap_or_default()) }
                        td { (layout::time(job.updated_at)) }
                        td.error { (job.last_error.as_deref().map(|e| crate::commands::dlq::view::truncate(e, 120)).unwrap_or_default()) }
                    }
                }
            }
        }
    }
}

pub async fn one(State(console): State<Arc<Console>>, Path(job_id): Path<String>) -> Response {
    let Ok(id) = Uuid::parse_str(&job_id) else {
        return layout::refused(StatusCode::BAD_REQUEST, "Job", &format!("job id `{job_id}` is not a UUID"));
    };
    let job = match console.store.job(id).await {
        Ok(Some(job)) => job,
        Ok(None) => {
            let body =
                html! { p #no-jobs { "No worker has recorded job " code { (id) } " (yet), or retention pruned it." } };
            return (StatusCode::NOT_FOUND, layout::page("Job", Tab::Jobs, None, body)).into_response();
        }
        Err(error) => return layout::refused(StatusCode::SERVICE_UNAVAILABLE, "Job", &error.to_string()),
    };
    let took = (job.status == JobStatus::Succeeded || job.status == JobStatus::Dead)
        .then(|| (job.updated_at - job.created_at).to_std().ok())
        .flatten();
    let field = |name: &'static str, label: &'static str, value: String| {
        html! { dt { (label) } dd data-field=(name) { (value) } }
    };
    let body = html! {
        dl #job {
            (field("status", "status", job.status.as_str().to_owned()))
            (field("collection", "collection", job.collection.clone().unwrap_or_else(|| "?".into())))
            (field("document", "document", job.document_id.clone().unwrap_or_else(|| "?".into())))
            (field("op", "operation", job.op.clone().unwrap_or_else(|| "?".into())))
            (field("attempts", "attempts started", job.attempts.to_string()))
            (field("chunks", "chunks written", job.chunk_count.map(|c| c.to_string()).unwrap_or_else(|| "–".into())))
            (field("created", "first seen by a worker", layout::time(job.created_at)))
            (field("updated", "last change", layout::time(job.updated_at)))
            (field("took", "first seen to finished", took.map(layout::duration).unwrap_or_else(|| "–".into())))
            (field("prefix", "queue prefix", job.queue_prefix.clone().unwrap_or_else(|| "?".into())))
            dt { "last error" }
            dd data-field="error" { pre { (job.last_error.as_deref().unwrap_or("none")) } }
        }
        @if job.status == JobStatus::Dead {
            p { a href=(format!("/dead-letters?id={}", job.job_id)) { "Find its message in the dead letters" } }
        }
        @if let Some(collection) = &job.collection {
            p { a href=(format!("/jobs?collection={}&document_id={}", encode(collection), encode(job.document_id.as_deref().unwrap_or("")))) { "Every job of this document" } }
        }
    };
    layout::page(&format!("Job {id}"), Tab::Jobs, None, body).into_response()
}
