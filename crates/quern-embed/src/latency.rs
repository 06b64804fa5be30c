//! Latency as the adaptive limit reads it: how long a provider takes when nothing of ours waits ahead of a
//! request (the baseline), and how much longer an answer took than that.
//!
//! - **Only requests sent alone set the baseline.** A request sent while others of ours were in flight may have
//!   waited behind them at the provider, so its latency says nothing about the unloaded one; a request sent
//!   alone did not (nothing of ours was ahead). A limit of 1 sends every request alone, so a provider that
//!   computes one request at a time keeps the baseline fresh exactly when it matters; the first request of a
//!   burst is alone too.
//! - **The baseline is the median of the last few** such latencies, not the smallest: a provider's latency
//!   jitters, and the smallest of many answers is an outlier every later answer looks slow against.
//! - **Per size class** (powers of two of the estimated tokens): a provider's time grows with what it embeds,
//!   so a one-chunk request's latency is no baseline for a 32-chunk one. A class with no lone request yet
//!   borrows the nearest smaller class's baseline (else the nearest larger's): under load, full requests are
//!   never sent alone, and a worker's first request is usually a small one. A smaller request's latency is at
//!   most the larger's, so borrowing errs towards seeing queueing; once the limit falls to 1, requests of every
//!   size go alone and their class gets a baseline of its own.
//! - **A small excess is no queueing.** Answers less than [`MIN_QUEUE_DELAY`] slower than the baseline count
//!   as unqueued, however large the ratio: for a provider answering in milliseconds, the worker's own CPU
//!   moves the latency by more than that, and such delays threaten no timeout.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// Latencies of requests sent alone kept per size class; the baseline is their median.
pub const ALONE_SAMPLES: usize = 5;
/// Answers less than this much slower than the baseline count as unqueued.
pub const MIN_QUEUE_DELAY: Duration = Duration::from_millis(100);

/// The baseline latency of each size class.
#[derive(Debug, Clone, Default)]
pub struct Baselines {
    classes: HashMap<u32, VecDeque<Duration>>,
}

/// A request's size class: the bit length of its estimated tokens (1, 2-3, 4-7, ...).
fn size_class(tokens: usize) -> u32 {
    usize::BITS - tokens.max(1).leading_zeros()
}

impl Baselines {
    /// Notes the latency of a request of `tokens` sent with nothing else of ours in flight.
    pub fn note_alone(&mut self, tokens: usize, latency: Duration) {
        let samples = self.classes.entry(size_class(tokens)).or_default();
        if samples.len() == ALONE_SAMPLES {
            samples.pop_front();
        }
        samples.push_back(latency);
    }

    /// The baseline for requests of `tokens`: the median of its class's recent lone latencies, else the nearest
    /// smaller class's, else the nearest larger class's.
    pub fn baseline(&self, tokens: usize) -> Option<Duration> {
        let class = size_class(tokens);
        let nearest = self
            .classes
            .keys()
            .filter(|&&other| other <= class)
            .max()
            .or_else(|| self.classes.keys().filter(|&&other| other > class).min())?;
        let mut sorted: Vec<Duration> = self.classes[nearest].iter().copied().collect();
        sorted.sort_unstable();
        // The lower median: of two, the faster (a baseline errs towards seeing queueing, not towards missing it).
        sorted.get(sorted.len().saturating_sub(1) / 2).copied()
    }

    /// How many times its baseline an answer took (1.0 when within [`MIN_QUEUE_DELAY`] of it); `None` without a
    /// baseline for its size.
    pub fn ratio(&self, tokens: usize, latency: Duration) -> Option<f64> {
        let baseline = self.baseline(tokens)?;
        if latency.saturating_sub(baseline) < MIN_QUEUE_DELAY {
            return Some(1.0);
        }
        Some(latency.as_secs_f64() / baseline.as_secs_f64().max(1e-6))
    }
}

/// The upper median: of an even count, the larger middle value (a window of two answers, one of which waited a
/// whole service time, counts as queueing).
pub fn upper_median(values: &mut [f64]) -> Option<f64> {
    values.sort_unstable_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn the_baseline_is_the_median_of_recent_lone_answers_of_the_same_size() {
        let mut baselines = Baselines::default();
        assert_eq!(baselines.baseline(8000), None);
        for millis in [900, 300, 1000, 1100, 1000] {
            baselines.note_alone(8000, Duration::from_millis(millis));
        }
        assert_eq!(baselines.baseline(8000), Some(SECOND), "one fast outlier does not set it");
        assert_eq!(baselines.baseline(6000), Some(SECOND), "the same power of two");
        baselines.note_alone(100, Duration::from_millis(200));
        assert_eq!(baselines.baseline(100), Some(Duration::from_millis(200)), "a one-chunk request is another class");
        assert_eq!(baselines.baseline(8000), Some(SECOND), "each class its own");
        for _ in 0..ALONE_SAMPLES {
            baselines.note_alone(8000, SECOND * 2);
        }
        assert_eq!(baselines.baseline(8000), Some(SECOND * 2), "only the last few count");
    }

    #[test]
    fn a_class_without_lone_requests_borrows_the_nearest_smaller_baseline_else_the_nearest_larger() {
        let mut baselines = Baselines::default();
        assert_eq!(baselines.baseline(8000), None);
        baselines.note_alone(30_000, SECOND * 3);
        assert_eq!(baselines.baseline(8000), Some(SECOND * 3), "only a larger one known");
        baselines.note_alone(1000, Duration::from_millis(500));
        baselines.note_alone(200, Duration::from_millis(300));
        assert_eq!(baselines.baseline(8000), Some(Duration::from_millis(500)), "the nearest smaller");
        assert_eq!(baselines.baseline(50), Some(Duration::from_millis(300)), "the nearest larger");
    }

    #[test]
    fn small_excesses_are_not_queueing() {
        let mut baselines = Baselines::default();
        baselines.note_alone(10, Duration::from_millis(5));
        assert_eq!(baselines.ratio(10, Duration::from_millis(80)), Some(1.0), "16 times, yet 75 ms");
        baselines.note_alone(8000, SECOND);
        assert_eq!(baselines.ratio(8000, SECOND * 3), Some(3.0));
        assert_eq!(Baselines::default().ratio(1, SECOND), None);
    }

    #[test]
    fn the_upper_median_of_two_is_the_larger() {
        assert_eq!(upper_median(&mut [2.0, 1.0]), Some(2.0));
        assert_eq!(upper_median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(upper_median(&mut []), None);
    }
}
