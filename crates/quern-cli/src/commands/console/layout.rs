//! The page shell (title, navigation, stylesheet), the refusal page, and small pieces every page uses.

use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

use super::security::CsrfToken;

/// Which page the navigation marks as the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Overview,
    Jobs,
    DeadLetters,
    None,
}

/// A whole page; `refresh` makes the browser reload it that often.
pub fn page(title: &str, tab: Tab, refresh: Option<Duration>, body: Markup) -> Html<String> {
    let link = |href: &str, name: &str, this: Tab| {
        html! { a href=(href) aria-current=[(tab == this).then_some("page")] { (name) } }
    };
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    @if let Some(refresh) = refresh {
                        meta http-equiv="refresh" content=(refresh.as_secs().max(1));
                    }
                    title { (title) " · Quern console" }
                    link rel="stylesheet" href="/console.css";
                }
                body {
                    header {
                        span.brand { "Quern" }
                        nav {
                            (link("/", "Overview", Tab::Overview))
                            (link("/jobs", "Jobs", Tab::Jobs))
                            (link("/dead-letters", "Dead letters", Tab::DeadLetters))
                        }
                    }
                    main {
                        h1 { (title) }
                        (body)
                    }
                }
            }
        }
        .into_string(),
    )
}

/// A refusal: `status` with a page whose `#refused` says why.
pub fn refused(status: StatusCode, title: &str, why: &str) -> Response {
    let body = html! { p #refused .error { (why) } };
    (status, page(title, Tab::None, None, body)).into_response()
}

/// A part of a page that could not be read, with why.
pub fn unavailable(what: &str, error: &anyhow::Error) -> Markup {
    html! { p .error { (what) " could not be read: " (format!("{error:#}")) } }
}

/// The hidden field carrying this browser's CSRF token, for every POST form.
pub fn csrf_input(csrf: &CsrfToken) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf.0); }
}

/// A time as the page shows it: UTC to the second.
pub fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A duration as the page shows it: `850 ms`, `12.3 s`, `4m 5s`.
pub fn duration(elapsed: Duration) -> String {
    match elapsed.as_millis() {
        ms if ms < 1_000 => format!("{ms} ms"),
        ms if ms < 60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => humantime::format_duration(Duration::from_secs(elapsed.as_secs())).to_string(),
    }
}

/// `text` for a query value or a path segment (`/` and every other reserved character escaped).
pub fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>().replace('+', "%20")
}

/// `GET /console.css`.
pub async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("console.css")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserted_text_is_escaped() {
        let Html(page) =
            page("<b>x</b>", Tab::Jobs, Some(Duration::from_secs(5)), html! { p { "<script>alert(1)</script>" } });
        assert!(page.contains("&lt;b&gt;x&lt;/b&gt;"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{page}");
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains(r#"<meta http-equiv="refresh" content="5">"#), "{page}");
        assert!(page.contains(r#"<a href="/jobs" aria-current="page">"#), "{page}");
    }

    #[test]
    fn durations_read_at_their_scale() {
        assert_eq!(duration(Duration::from_millis(850)), "850 ms");
        assert_eq!(duration(Duration::from_millis(12_345)), "12.3 s");
        assert_eq!(duration(Duration::from_secs(245)), "4m 5s");
    }
}
