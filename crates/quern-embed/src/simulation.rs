//! The adaptive pool against modelled providers, on the paused tokio clock: permits, limit and latencies are pure
//! arithmetic of time, so minutes of a slow provider run in a blink and the same way every time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::limit::AttemptOutcome;
use crate::permits::Permits;

const TOKENS: usize = 8000;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How a simulated provider serves a request.
#[derive(Clone)]
enum Provider {
    /// One request at a time, each taking the service time; the others wait in order (a CPU server).
    Serial(Arc<tokio::sync::Mutex<()>>),
    /// Every request at once, each taking the service time times a factor in 0.7..1.3 (a hosted API).
    Parallel { jitter: bool },
}

const SERVICE: Duration = Duration::from_millis(2500);

/// What a simulation saw: each request's latency, the limit when it was sent, and how long it all took.
struct Run {
    latencies: Vec<Duration>,
    limits: Vec<usize>,
    elapsed: Duration,
}

/// `requests` requests from 16 senders (a pool with plenty of chunks waiting) through an adaptive pool of at
/// most 16, on the paused clock: pure arithmetic of time, run in a blink.
async fn simulate(provider: Provider, requests: usize) -> Run {
    let permits = Permits::new(16, true);
    let started = Instant::now();
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    let senders = (0..16).map(|_| {
        let (permits, provider, sent, seen) = (permits.clone(), provider.clone(), sent.clone(), seen.clone());
        tokio::spawn(async move {
            while sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < requests {
                let permit = permits.acquire().await.expect("open");
                let limit = permits.limit();
                let departure = permits.depart();
                let begun = Instant::now();
                let n = sent.load(std::sync::atomic::Ordering::SeqCst) as u64;
                match &provider {
                    Provider::Serial(one_at_a_time) => {
                        let _serving = one_at_a_time.lock().await;
                        tokio::time::sleep(SERVICE).await;
                    }
                    Provider::Parallel { jitter } => {
                        // A fixed pseudo-random factor per request: the run is the same every time.
                        let factor = if *jitter { 0.7 + 0.6 * ((n * 2654435761) % 1000) as f64 / 1000.0 } else { 1.0 };
                        tokio::time::sleep(SERVICE.mul_f64(factor)).await;
                    }
                }
                let alone = departure.alone();
                drop(departure);
                permits.observe(begun, AttemptOutcome::Answered, alone, TOKENS);
                let mut seen = lock(&seen);
                seen.0.push(begun.elapsed());
                seen.1.push(limit);
                drop(permit);
            }
        })
    });
    futures::future::join_all(senders).await;
    let (latencies, limits) = std::mem::take(&mut *lock(&seen));
    Run { latencies, limits, elapsed: started.elapsed() }
}

/// The measured failure: a server computing one 32-chunk request at a time (2.5 s each here), 16 requests
/// at once, so each waited 40 s, past the 30 s timeout. The limit finds about one at a time within the
/// first round trips, no answer waits three service times, and the provider stays busy (no throughput lost).
#[tokio::test(start_paused = true)]
async fn a_provider_serving_one_request_at_a_time_ends_with_about_one_in_flight() {
    let run = simulate(Provider::Serial(Arc::new(tokio::sync::Mutex::new(()))), 200).await;
    let slowest = run.latencies.iter().max().copied().unwrap_or_default();
    assert!(slowest <= SERVICE * 3, "slowest answer {slowest:?}");
    let settled = &run.limits[20..];
    let at_one = settled.iter().filter(|&&limit| limit == 1).count();
    assert!(settled.iter().all(|&limit| limit <= 2), "limits after the start: {settled:?}");
    // The plateau: eight requests at 1 for every probe of 2 (three requests, one of which waits).
    assert!(
        at_one * 10 >= settled.len() * 7,
        "{at_one} of {} requests sent at a limit of 1: {settled:?}",
        settled.len()
    );
    let queued = run.latencies[20..].iter().filter(|&&latency| latency > SERVICE + SERVICE / 10).count();
    assert!(queued * 5 <= settled.len(), "{queued} of {} answers waited behind another", settled.len());
    assert!(run.elapsed <= SERVICE * 205, "the provider is kept busy: {:?} for 200 requests", run.elapsed);
}

/// A provider that serves everything at once (a hosted API) loses nothing to latency-based cuts: its latency
/// does not grow with the requests in flight, and jitter of ±30% is not mistaken for queueing.
#[tokio::test(start_paused = true)]
async fn a_provider_serving_everything_at_once_gets_the_whole_pool() {
    for jitter in [false, true] {
        let run = simulate(Provider::Parallel { jitter }, 400).await;
        let last = *run.limits.last().expect("requests");
        assert_eq!(last, 16, "jitter {jitter}: limits {:?}", run.limits);
        assert!(run.elapsed <= SERVICE * 40, "jitter {jitter}: {:?} for 400 requests", run.elapsed);
    }
}
