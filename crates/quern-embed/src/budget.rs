//! Per-worker request and token budgets: token buckets the dispatcher waits on before a request leaves.
//!
//! A bucket refills continuously at the budget's rate and holds at most one second of it: hosted providers
//! enforce per-minute quotas in finer slices (OpenAI: "60,000 requests/minute may be enforced as 1,000
//! requests/second"), so a worker that saved up a minute and spent it at once would be throttled anyway.
//! A request costing more than a full bucket (a batch with more tokens than a second's budget, or than the
//! whole minute's) is not refused and does not wait forever: it leaves once the bucket is full and drives it
//! below zero, and the debt delays the requests after it, so the rate over time still keeps the budget.
//!
//! `governor` was considered: its GCRA cannot take a cost larger than its burst (`InsufficientCapacity`),
//! which is exactly the oversized batch above, so a bucket of our own is simpler than working around it.

use std::time::Duration;

use tokio::time::Instant;

/// A token bucket on the tokio clock (paused in tests).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_second: f64,
    capacity: f64,
    level: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket for `per_minute` units a minute, holding one second of them.
    pub fn per_minute(per_minute: u64, now: Instant) -> TokenBucket {
        let per_second = per_minute as f64 / 60.0;
        TokenBucket { per_second, capacity: per_second, level: per_second, updated: now }
    }

    /// How long until `cost` may be taken: zero when it may be now. A cost above the capacity needs a full
    /// bucket.
    pub fn wait_for(&mut self, cost: f64, now: Instant) -> Duration {
        self.refill(now);
        let needed = cost.min(self.capacity);
        // The tolerance keeps float rounding from costing another timer tick after a wait that was exactly enough.
        if self.level + 1e-9 >= needed || self.per_second <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((needed - self.level) / self.per_second)
        }
    }

    /// Takes `cost`, possibly into debt; call after [`TokenBucket::wait_for`] said zero.
    pub fn take(&mut self, cost: f64, now: Instant) {
        self.refill(now);
        self.level -= cost;
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.level = (self.level + elapsed * self.per_second).min(self.capacity);
        self.updated = now;
    }
}

/// The budgets of one process: requests and estimated tokens per minute, either or both.
#[derive(Debug, Clone)]
pub struct Budget {
    requests: Option<TokenBucket>,
    tokens: Option<TokenBucket>,
}

impl Budget {
    /// The budgets, `None` when neither is set (0 counts as unset).
    pub fn new(requests_per_minute: Option<u64>, tokens_per_minute: Option<u64>) -> Option<Budget> {
        let now = Instant::now();
        let bucket = |per_minute: Option<u64>| per_minute.filter(|&n| n > 0).map(|n| TokenBucket::per_minute(n, now));
        let budget = Budget { requests: bucket(requests_per_minute), tokens: bucket(tokens_per_minute) };
        (budget.requests.is_some() || budget.tokens.is_some()).then_some(budget)
    }

    /// Waits until one request of `tokens` estimated tokens fits both budgets, then charges it.
    pub async fn admit(&mut self, tokens: usize) {
        let tokens = tokens as f64;
        loop {
            let now = Instant::now();
            let wait = [(&mut self.requests, 1.0), (&mut self.tokens, tokens)]
                .into_iter()
                .filter_map(|(bucket, cost)| bucket.as_mut().map(|b| b.wait_for(cost, now)))
                .max()
                .unwrap_or(Duration::ZERO);
            if wait.is_zero() {
                for (bucket, cost) in [(&mut self.requests, 1.0), (&mut self.tokens, tokens)] {
                    if let Some(bucket) = bucket {
                        bucket.take(cost, now);
                    }
                }
                return;
            }
            tracing::debug!(wait_ms = wait.as_millis() as u64, tokens, "embedding request waits for the budget");
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_a_second_of_budget_at_once_then_refills_at_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::per_minute(600, start);
        for _ in 0..10 {
            assert_eq!(bucket.wait_for(1.0, start), Duration::ZERO);
            bucket.take(1.0, start);
        }
        assert_eq!(bucket.wait_for(1.0, start), Duration::from_millis(100));
        assert_eq!(bucket.wait_for(1.0, start + Duration::from_millis(100)), Duration::ZERO);
        // A long idle spell saves up one second of budget, no more.
        let later = start + Duration::from_secs(3600);
        for _ in 0..10 {
            bucket.take(1.0, later);
        }
        assert!(bucket.wait_for(1.0, later) > Duration::ZERO);
    }

    #[test]
    fn a_cost_above_the_capacity_waits_for_a_full_bucket_and_leaves_a_debt() {
        let start = Instant::now();
        // 6,000 tokens a minute: 100 a second, so the bucket holds 100.
        let mut bucket = TokenBucket::per_minute(6000, start);
        bucket.take(50.0, start);
        assert_eq!(bucket.wait_for(1000.0, start), Duration::from_millis(500), "waits for a full bucket only");
        let sent = start + Duration::from_millis(500);
        assert_eq!(bucket.wait_for(1000.0, sent), Duration::ZERO);
        bucket.take(1000.0, sent);
        assert_eq!(bucket.wait_for(1.0, sent), Duration::from_millis(9010), "900 tokens of debt, then one more");
    }

    #[tokio::test(start_paused = true)]
    async fn requests_per_minute_space_requests_out() {
        let mut budget = Budget::new(Some(120), None).expect("a budget");
        let start = Instant::now();
        let mut sent = Vec::new();
        for _ in 0..6 {
            budget.admit(1_000_000).await;
            sent.push(start.elapsed());
        }
        // Two a second: the bucket holds two, then one every 500 ms; tokens are not limited.
        let ms = |n| Duration::from_millis(n);
        assert_eq!(sent, vec![ms(0), ms(0), ms(500), ms(1000), ms(1500), ms(2000)]);
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_per_minute_space_requests_by_their_size_and_a_huge_one_still_goes() {
        let mut budget = Budget::new(None, Some(60_000)).expect("a budget");
        let start = Instant::now();
        budget.admit(600).await;
        budget.admit(400).await;
        assert_eq!(start.elapsed(), Duration::ZERO, "a second's budget at once");
        budget.admit(500).await;
        assert_eq!(start.elapsed(), Duration::from_millis(500));
        // Larger than the whole minute's budget: it goes once the bucket is full, after the debt is paid.
        budget.admit(100_000).await;
        assert_eq!(start.elapsed(), Duration::from_millis(1500));
        budget.admit(1).await;
        assert_eq!(start.elapsed(), Duration::from_millis(1500 + 99_000 + 1));
    }

    #[tokio::test(start_paused = true)]
    async fn both_budgets_hold_at_once() {
        let mut budget = Budget::new(Some(60), Some(6000)).expect("a budget");
        let start = Instant::now();
        budget.admit(10).await;
        budget.admit(10).await;
        assert_eq!(start.elapsed(), Duration::from_secs(1), "one request a second binds");
        budget.admit(300).await;
        assert_eq!(start.elapsed(), Duration::from_secs(2), "the token bucket was full (100) so it went");
        budget.admit(10).await;
        assert_eq!(start.elapsed(), Duration::from_millis(4100), "200 tokens of debt plus 10 bind");
    }

    #[test]
    fn no_budget_when_neither_is_set() {
        assert!(Budget::new(None, None).is_none());
        assert!(Budget::new(Some(0), Some(0)).is_none());
        assert!(Budget::new(Some(1), None).is_some());
    }
}
