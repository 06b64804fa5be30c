//! Growing, jittered pauses between attempts: the policy as a value ([`Backoff`]) and its running state
//! ([`Pauses`]). Every retry loop of Quern draws its pauses here: an embedding request, a worker waiting for a
//! dependency, the CLI riding out a restart.
//!
//! The `backoff` crate computes the growing bounds and is named only in this file: it is unmaintained upstream
//! (RUSTSEC-2025-0012), so replacing it (e.g. by `backon`) touches nothing else. The jitter is drawn here, since
//! the crate's own randomisation is symmetric around the bound and cannot give AWS's "full jitter".

use std::time::Duration;

use backoff::backoff::Backoff as _;
use backoff::{ExponentialBackoff, ExponentialBackoffBuilder};

/// How a pause is drawn under its bound, so that many processes failing together do not retry in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform in 0..bound: spreads retries the most (for requests many clients repeat at once).
    Full,
    /// Uniform in bound/2..bound: spread, yet never a quick hammering (for waiting on a service that is down).
    Half,
}

/// A pause policy: the bound starts at `initial_delay`, doubles after each pause and stops growing at `max_delay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Bound of the first pause.
    pub initial_delay: Duration,
    /// Largest bound.
    pub max_delay: Duration,
    /// How a pause is drawn under its bound.
    pub jitter: Jitter,
}

impl Backoff {
    /// The pauses of a new run of attempts.
    pub fn pauses(&self) -> Pauses {
        let bounds = ExponentialBackoffBuilder::new()
            .with_initial_interval(self.initial_delay.min(self.max_delay))
            .with_max_interval(self.max_delay)
            .with_multiplier(2.0)
            .with_randomization_factor(0.0)
            // The callers bound the whole wait themselves (a deadline, a shutdown): bounds never run out here.
            .with_max_elapsed_time(None)
            .build();
        Pauses { bounds, jitter: self.jitter }
    }
}

/// The pauses of one run of attempts.
#[derive(Debug)]
pub struct Pauses {
    bounds: ExponentialBackoff,
    jitter: Jitter,
}

impl Pauses {
    /// The pause before the next attempt.
    pub fn next_pause(&mut self) -> Duration {
        let bound = self.bounds.next_backoff().unwrap_or(self.bounds.max_interval);
        let share: f64 = rand::random();
        match self.jitter {
            Jitter::Full => bound.mul_f64(share),
            Jitter::Half => bound.mul_f64(0.5 + share / 2.0),
        }
    }

    /// Back to the first bound (after a success).
    pub fn reset(&mut self) {
        self.bounds.reset();
    }
}

/// A pause as a person reads it in a log line: `350ms`, `1.5s`, `4s`, `30s`.
pub fn pause_text(pause: Duration) -> String {
    let millis = pause.as_millis();
    match millis {
        0..=999 => format!("{millis}ms"),
        1_000..=9_999 if millis % 1_000 >= 100 => format!("{}.{}s", millis / 1_000, millis % 1_000 / 100),
        _ => format!("{}s", (millis + 500) / 1_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn bounds_double_up_to_the_cap_and_each_jitter_stays_in_its_share() {
        for (jitter, low) in [(Jitter::Full, 0.0), (Jitter::Half, 0.5)] {
            let backoff = Backoff { initial_delay: 100 * MS, max_delay: 1_000 * MS, jitter };
            let bounds = [100, 200, 400, 800, 1_000, 1_000, 1_000];
            for _ in 0..200 {
                let mut pauses = backoff.pauses();
                for bound in bounds {
                    let pause = pauses.next_pause();
                    let bound = bound * MS;
                    assert!(
                        pause <= bound && pause >= bound.mul_f64(low),
                        "{jitter:?}: {pause:?} outside its share of {bound:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn pauses_are_jittered_and_reset_starts_over() {
        let backoff = Backoff { initial_delay: 1_000 * MS, max_delay: 60_000 * MS, jitter: Jitter::Full };
        let firsts: Vec<Duration> = (0..50).map(|_| backoff.pauses().next_pause()).collect();
        assert!(firsts.iter().any(|p| *p != firsts[0]), "50 first pauses all equal: no jitter");
        let mut pauses = backoff.pauses();
        for _ in 0..10 {
            pauses.next_pause();
        }
        pauses.reset();
        assert!(pauses.next_pause() <= 1_000 * MS, "after reset the bound is the first one again");
    }

    #[test]
    fn pauses_read_like_a_person_would_say_them() {
        assert_eq!(pause_text(350 * MS), "350ms");
        assert_eq!(pause_text(1_500 * MS), "1.5s");
        assert_eq!(pause_text(4_020 * MS), "4s");
        assert_eq!(pause_text(29_600 * MS), "30s");
    }
}
