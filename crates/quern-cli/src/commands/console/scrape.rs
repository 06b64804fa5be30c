//! The embedding figures of the overview, read from the workers' Prometheus endpoints (`--worker-metrics`): each
//! worker's request count, 429s and latency histogram, summed over the fleet, and the same over the last few
//! minutes from the samples the console keeps between reloads.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use quern_core::metric_names;

/// Longest wait for one worker's metrics.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(3);
/// The recent figures compare with the oldest sample at most this old.
pub const RECENT: Duration = Duration::from_secs(5 * 60);

/// One worker's answer.
#[derive(Debug, Clone)]
pub struct WorkerScrape {
    pub url: String,
    /// Its figures, or why it could not be read.
    pub result: Result<EmbeddingFigures, String>,
}

/// Embedding figures of one worker, or of the fleet (summed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EmbeddingFigures {
    /// Requests sent, whatever their outcome.
    pub requests: u64,
    /// Requests the provider answered 429.
    pub throttled: u64,
    /// Requests that succeeded, and their summed duration.
    pub ok_requests: u64,
    pub ok_seconds: f64,
    /// The successful requests' duration histogram: upper bound (seconds) → requests at most that long.
    pub ok_buckets: BTreeMap<OrderedBound, u64>,
    /// Chunks embedded.
    pub chunks_embedded: u64,
    /// Workers whose provider is marked unavailable.
    pub providers_down: u64,
}

/// A histogram bound usable as a map key (`+Inf` is the largest).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrderedBound(pub f64);
impl Eq for OrderedBound {}
impl PartialOrd for OrderedBound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrderedBound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl EmbeddingFigures {
    /// Reads the figures from Prometheus text exposition.
    pub fn parse(text: &str) -> EmbeddingFigures {
        let mut figures = EmbeddingFigures::default();
        let request = metric_names::EMBEDDING_REQUEST_SECONDS;
        for sample in text.lines().filter_map(Sample::parse) {
            let outcome = sample.label("outcome");
            let name = sample.name;
            if name == format!("{request}_count") {
                figures.requests += sample.value as u64;
                match outcome {
                    Some("429") => figures.throttled += sample.value as u64,
                    Some("ok") => figures.ok_requests += sample.value as u64,
                    _ => {}
                }
            } else if name == format!("{request}_sum") && outcome == Some("ok") {
                figures.ok_seconds += sample.value;
            } else if name == format!("{request}_bucket") && outcome == Some("ok") {
                let bound = match sample.label("le") {
                    Some("+Inf") => f64::INFINITY,
                    Some(bound) => match bound.parse() {
                        Ok(bound) => bound,
                        Err(_) => continue,
                    },
                    None => continue,
                };
                *figures.ok_buckets.entry(OrderedBound(bound)).or_default() += sample.value as u64;
            } else if name == metric_names::CHUNKS_EMBEDDED {
                figures.chunks_embedded += sample.value as u64;
            } else if name == metric_names::EMBEDDING_PROVIDER_AVAILABLE && sample.value == 0.0 {
                figures.providers_down += 1;
            }
        }
        figures
    }

    /// Adds another worker's figures.
    pub fn add(&mut self, other: &EmbeddingFigures) {
        self.requests += other.requests;
        self.throttled += other.throttled;
        self.ok_requests += other.ok_requests;
        self.ok_seconds += other.ok_seconds;
        for (bound, count) in &other.ok_buckets {
            *self.ok_buckets.entry(*bound).or_default() += count;
        }
        self.chunks_embedded += other.chunks_embedded;
        self.providers_down += other.providers_down;
    }

    /// Mean duration of a successful request.
    pub fn mean(&self) -> Option<Duration> {
        (self.ok_requests > 0).then(|| Duration::from_secs_f64(self.ok_seconds / self.ok_requests as f64))
    }

    /// The histogram bound that 95% of successful requests stayed within (`None` past the last finite bound).
    pub fn p95_bound(&self) -> Option<Duration> {
        let wanted = (self.ok_requests as f64 * 0.95).ceil() as u64;
        if self.ok_requests == 0 {
            return None;
        }
        self.ok_buckets
            .iter()
            .find(|(_, cumulative)| **cumulative >= wanted)
            .and_then(|(bound, _)| bound.0.is_finite().then(|| Duration::from_secs_f64(bound.0)))
    }
}

/// One sample line: `name{label="value",…} value`.
#[derive(Debug)]
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: f64,
}

impl<'a> Sample<'a> {
    fn parse(line: &'a str) -> Option<Sample<'a>> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let name_end = line.find(['{', ' '])?;
        let name = &line[..name_end];
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices();
            let mut key_start = 0;
            let close;
            loop {
                let (i, c) = chars.next()?;
                match c {
                    '}' => {
                        close = i;
                        break;
                    }
                    '=' => {
                        let key = inner[key_start..i].trim().trim_start_matches(',').trim();
                        if chars.next()?.1 != '"' {
                            return None;
                        }
                        let mut value = String::new();
                        loop {
                            match chars.next()?.1 {
                                '\\' => match chars.next()?.1 {
                                    'n' => value.push('\n'),
                                    other => value.push(other),
                                },
                                '"' => break,
                                other => value.push(other),
                            }
                        }
                        labels.push((key, value));
                        key_start = chars.clone().next().map(|(i, _)| i).unwrap_or(inner.len());
                    }
                    _ => {}
                }
            }
            rest = &inner[close + 1..];
        }
        let value = rest.split_whitespace().next()?;
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            value => value.parse().ok()?,
        };
        Some(Sample { name, labels, value })
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| *k == key).map(|(_, v)| v.as_str())
    }
}

/// Fleet totals seen at earlier reloads, to tell what happened in the last few minutes.
#[derive(Debug, Default)]
pub struct MetricsHistory {
    samples: VecDeque<(Instant, EmbeddingFigures)>,
}

/// What changed between an earlier sample and now.
#[derive(Debug, Clone, PartialEq)]
pub struct Recent {
    pub over: Duration,
    pub requests: u64,
    pub throttled: u64,
    pub mean: Option<Duration>,
}

impl MetricsHistory {
    /// Records `now`'s fleet totals and returns the change since the oldest sample within [`RECENT`], if there is
    /// one at least a second old. A counter that went down (a worker restarted or stopped answering) makes the
    /// difference meaningless: `None` then.
    pub fn record(&mut self, at: Instant, totals: &EmbeddingFigures) -> Option<Recent> {
        while self.samples.front().is_some_and(|(then, _)| at.duration_since(*then) > RECENT) {
            self.samples.pop_front();
        }
        let recent = self.samples.front().and_then(|(then, before)| {
            let over = at.duration_since(*then);
            let went_down = totals.requests < before.requests || totals.ok_requests < before.ok_requests;
            (over >= Duration::from_secs(1) && !went_down).then(|| {
                let ok = totals.ok_requests - before.ok_requests;
                let seconds = totals.ok_seconds - before.ok_seconds;
                Recent {
                    over,
                    requests: totals.requests - before.requests,
                    throttled: totals.throttled.saturating_sub(before.throttled),
                    mean: (ok > 0).then(|| Duration::from_secs_f64(seconds.max(0.0) / ok as f64)),
                }
            })
        });
        self.samples.push_back((at, totals.clone()));
        recent
    }
}

/// Reads every worker's metrics at once.
pub async fn scrape_all(http: &reqwest::Client, urls: &[reqwest::Url]) -> Vec<WorkerScrape> {
    let reads = urls.iter().map(|url| async move {
        let result = async {
            let response = http.get(url.clone()).send().await.map_err(|e| e.without_url().to_string())?;
            let response = response.error_for_status().map_err(|e| e.without_url().to_string())?;
            let text = response.text().await.map_err(|e| e.without_url().to_string())?;
            Ok(EmbeddingFigures::parse(&text))
        }
        .await;
        WorkerScrape { url: url.to_string(), result }
    });
    futures::future::join_all(reads).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = r#"# TYPE quern_embedding_request_duration_seconds histogram
quern_embedding_request_duration_seconds_bucket{outcome="ok",le="0.05"} 2
quern_embedding_request_duration_seconds_bucket{outcome="ok",le="0.1"} 18
quern_embedding_request_duration_seconds_bucket{outcome="ok",le="0.25"} 20
quern_embedding_request_duration_seconds_bucket{outcome="ok",le="+Inf"} 20
quern_embedding_request_duration_seconds_sum{outcome="ok"} 1.6
quern_embedding_request_duration_seconds_count{outcome="ok"} 20
quern_embedding_request_duration_seconds_sum{outcome="429"} 0.1
quern_embedding_request_duration_seconds_count{outcome="429"} 3
quern_embedding_request_duration_seconds_count{outcome="5xx",note="a \"quoted\", value"} 1
quern_chunks_embedded_total 640
quern_embedding_provider_available 1
"#;

    #[test]
    fn the_exposition_gives_counts_latency_and_throttles() {
        let figures = EmbeddingFigures::parse(EXPOSITION);
        assert_eq!(figures.requests, 24);
        assert_eq!(figures.throttled, 3);
        assert_eq!(figures.ok_requests, 20);
        assert_eq!(figures.chunks_embedded, 640);
        assert_eq!(figures.providers_down, 0);
        assert_eq!(figures.mean(), Some(Duration::from_millis(80)));
        // 95% of 20 is 19 requests: the first bound holding 19 is 0.25 s.
        assert_eq!(figures.p95_bound(), Some(Duration::from_millis(250)));
        let mut fleet = figures.clone();
        fleet.add(&EmbeddingFigures::parse("quern_embedding_provider_available 0\n"));
        assert_eq!((fleet.requests, fleet.providers_down), (24, 1));
    }

    #[test]
    fn recent_figures_are_differences_within_the_window() {
        let start = Instant::now();
        let mut history = MetricsHistory::default();
        let at = |secs| start + Duration::from_secs(secs);
        let figures = |requests, throttled, ok, secs| EmbeddingFigures {
            requests,
            throttled,
            ok_requests: ok,
            ok_seconds: secs,
            ..EmbeddingFigures::default()
        };
        assert_eq!(history.record(at(0), &figures(10, 1, 9, 0.9)), None);
        let recent = history.record(at(60), &figures(30, 4, 26, 2.6)).expect("a minute of history");
        assert_eq!((recent.over, recent.requests, recent.throttled), (Duration::from_secs(60), 20, 3));
        assert_eq!(recent.mean, Some(Duration::from_millis(100)));
        // A restarted worker's counters went down: no difference is given.
        assert_eq!(history.record(at(120), &figures(5, 0, 5, 0.5)), None);
        // Past the window, the oldest samples are dropped.
        let recent = history.record(at(420), &figures(25, 0, 25, 2.5)).expect("newer samples remain");
        assert_eq!(recent.over, Duration::from_secs(300));
    }
}
