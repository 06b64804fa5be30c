//! The worker's part in segment maintenance: try for the lease now and then, and while holding it work through
//! what is due (seal, build, merge) one step at a time, until shutdown. Beside the steps, under the same lease,
//! sealing (so the hot segment stays small during a long build) and pruning (finished jobs and old tombstones, see
//! `quern_store::retention`), each on connections of its own.

use std::time::Duration;

use quern_store::{Maintainer, MaintenanceStep, Pruner, RetentionPolicy, Sealer, SegmentPolicy, Store};
use tokio_util::sync::CancellationToken;

/// Pause between looks for work (or for the lease) when nothing was due: a hot segment fills in seconds at most.
pub const MAINTENANCE_EVERY: Duration = Duration::from_secs(1);
/// Pause between looks at the hot segment's size: at full speed a worker writes a few thousand rows a second, and
/// a look counts at most `--segment-rows` rows.
const SEAL_CHECK_EVERY: Duration = Duration::from_millis(250);
/// Pause after a failed step, before trying for the lease again.
const AFTER_FAILURE: Duration = Duration::from_secs(5);

/// What the lease holder prunes, and how often.
#[derive(Debug, Clone)]
pub struct Pruning {
    /// What is kept.
    pub policy: RetentionPolicy,
    /// Pause between prune runs (`--prune-every`); a run goes on, batch after batch, until nothing is due.
    pub every: Duration,
    /// Who the runs are recorded as, e.g. `worker host-1234`.
    pub pruned_by: String,
}

/// Runs until `stop` is cancelled. Stopping mid-step cancels the running statement and closes the lease's
/// connection: Postgres abandons a build in progress (the next holder replaces what it left) and frees the lease
/// for another worker.
/// With `pruning`, the lease holder also prunes, beside the steps.
pub async fn maintain_segments(
    store: Store,
    policy: SegmentPolicy,
    pruning: Option<Pruning>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut maintainer = Maintainer::new(store, policy);
    // Sealing beside the builds and merges, so that the hot segment (searched exactly) stays near its size
    // however long a build takes.
    let sealing = tokio::spawn(seal_segments(maintainer.sealer(), SEAL_CHECK_EVERY.min(every), stop.clone()));
    let pruning = pruning.filter(|pruning| !pruning.every.is_zero()).map(|pruning| {
        let pruner = maintainer.pruner(pruning.policy, &pruning.pruned_by);
        tokio::spawn(prune_tables(pruner, pruning.every, every, stop.clone()))
    });
    loop {
        let pause = tokio::select! {
            () = stop.cancelled() => break,
            step = maintainer.step() => match step {
                Ok(Some(step)) => {
                    record(&step);
                    Duration::ZERO
                }
                Ok(None) => every,
                Err(error) => {
                    tracing::warn!(error = %error, "segment maintenance step failed");
                    AFTER_FAILURE
                }
            },
        };
        if !pause.is_zero() && pause_or_stop(pause, &stop).await {
            break;
        }
    }
    maintainer.release().await;
    let _ = sealing.await;
    if let Some(pruning) = pruning {
        let _ = pruning.await;
    }
}

/// Prunes every `every` while the maintainer holds the lease (the store logs each run and counts its rows in
/// `quern_pruned_rows_total`); without the lease, looks again every `look_every`, so a new holder prunes at once.
/// A run stops between batches at shutdown or when the lease is lost.
async fn prune_tables(pruner: Pruner, every: Duration, look_every: Duration, stop: CancellationToken) {
    loop {
        let stopping = || stop.is_cancelled();
        let pause = match pruner.prune_if_holding(&stopping).await {
            Ok(Some(_)) => every,
            Ok(None) => look_every.min(every),
            // The store logged the failure with what the run had pruned.
            Err(_) => AFTER_FAILURE.max(every),
        };
        if pause_or_stop(pause, &stop).await {
            break;
        }
    }
}

/// Seals the hot segment whenever it is full, while the maintainer holds the lease.
async fn seal_segments(mut sealer: Sealer, every: Duration, stop: CancellationToken) {
    loop {
        let pause = match sealer.seal_if_due().await {
            Ok(Some(step)) => {
                record(&step);
                Duration::ZERO
            }
            Ok(None) => every,
            Err(error) => {
                tracing::warn!(error = %error, "sealing the hot segment failed");
                AFTER_FAILURE
            }
        };
        if pause_or_stop(pause, &stop).await {
            break;
        }
    }
}

/// Waits `pause`; true if `stop` came first.
async fn pause_or_stop(pause: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(pause) => false,
    }
}

fn record(step: &MaintenanceStep) {
    let kind = match step {
        MaintenanceStep::Recovered { .. } => "recovered",
        MaintenanceStep::Sealed { .. } => "sealed",
        MaintenanceStep::Built { .. } => "built",
        MaintenanceStep::Dropped { .. } => "dropped",
        MaintenanceStep::Merged { .. } => "merged",
    };
    metrics::counter!(quern_core::metric_names::SEGMENT_STEPS, "step" => kind).increment(1);
    if let MaintenanceStep::Built { duration, .. } | MaintenanceStep::Merged { duration, .. } = step {
        metrics::histogram!(quern_core::metric_names::SEGMENT_STEP_SECONDS, "step" => kind)
            .record(duration.as_secs_f64());
    }
}
