//! The inference pool: admission by queued inputs, worker threads running one forward pass each, and batches of a
//! request whose client went away dropped before they start.
//!
//! - **Admission** is a semaphore of `max_queued_inputs` permits; a request takes one per input or is refused at once
//!   ([`Busy`], answered `503` with `Retry-After`). Nothing waits for room: a client is never held forever.
//! - **Work** is a request's texts in groups of similar length ([`crate::batching::plan`]), each group one job on a
//!   FIFO channel that `workers` OS threads drain. A forward pass is CPU-bound and runs for tens to hundreds of
//!   milliseconds, so it belongs on threads of its own, not on the async runtime; a big request's groups spread over
//!   every worker, so it finishes sooner than on one.
//! - **Cancellation**: the handler's future holds a drop guard; when the client goes away, hyper drops the future,
//!   the token is cancelled, and a worker that takes one of its groups skips it (counted as skipped inputs).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::batching;
use crate::error::EmbedError;
use crate::model::Embedder;
use crate::stats::Stats;

/// What one forward pass sends back: the request positions it covered and their vectors, one after another.
type Answer = (Vec<usize>, Result<Vec<f32>, EmbedError>);

/// One group of one request's texts.
#[derive(Debug)]
struct Job {
    ids: Vec<Vec<u32>>,
    positions: Vec<usize>,
    cancelled: CancellationToken,
    reply: tokio::sync::mpsc::UnboundedSender<Answer>,
}

/// The worker threads and the admission bound. Dropping it closes the queue; each thread ends after its current job.
#[derive(Debug)]
pub(crate) struct Pool {
    queue: mpsc::Sender<Job>,
    admission: Arc<Semaphore>,
    capacity: usize,
    workers: usize,
    tokens_per_batch: usize,
    dim: usize,
    stats: Arc<Stats>,
    seconds_per_input: Arc<Ewma>,
}

/// Room for a request's inputs, held until its answer is built.
#[derive(Debug)]
pub(crate) struct Admission {
    _permit: OwnedSemaphorePermit,
    inputs: usize,
    stats: Arc<Stats>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.stats.released(self.inputs);
    }
}

/// The queue has no room for the request now; `retry_after` estimates when it will.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Busy {
    pub(crate) retry_after: Duration,
}

/// Why [`Pool::embed`] gave no vectors.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PoolError {
    /// The model failed on one of the request's groups.
    #[error(transparent)]
    Embed(#[from] EmbedError),
    /// The worker threads are gone (the server is stopping).
    #[error("the inference workers have stopped")]
    Stopped,
}

impl Pool {
    /// Starts `workers` threads sharing `embedder`.
    pub(crate) fn start(
        embedder: Arc<Embedder>,
        workers: usize,
        max_queued_inputs: usize,
        tokens_per_batch: usize,
        stats: Arc<Stats>,
    ) -> std::io::Result<Self> {
        let (queue, jobs) = mpsc::channel::<Job>();
        let jobs = Arc::new(Mutex::new(jobs));
        let seconds_per_input = Arc::new(Ewma::default());
        for worker in 0..workers {
            let (embedder, jobs, stats, timing) =
                (Arc::clone(&embedder), Arc::clone(&jobs), Arc::clone(&stats), Arc::clone(&seconds_per_input));
            std::thread::Builder::new()
                .name(format!("quern-embedder-{worker}"))
                .spawn(move || work(&embedder, &jobs, &stats, &timing))?;
        }
        Ok(Self {
            queue,
            admission: Arc::new(Semaphore::new(max_queued_inputs)),
            capacity: max_queued_inputs,
            workers,
            tokens_per_batch,
            dim: embedder.dim(),
            stats,
            seconds_per_input,
        })
    }

    /// Takes room for `inputs` inputs, or says when to come back.
    pub(crate) fn try_admit(&self, inputs: usize) -> Result<Admission, Busy> {
        let permits = u32::try_from(inputs).unwrap_or(u32::MAX);
        match Arc::clone(&self.admission).try_acquire_many_owned(permits) {
            Ok(permit) => {
                self.stats.admitted(inputs);
                Ok(Admission { _permit: permit, inputs, stats: Arc::clone(&self.stats) })
            }
            Err(_) => Err(Busy { retry_after: self.retry_after(inputs) }),
        }
    }

    /// When the queue will have drained enough for `inputs` more, at the recent pace: at least 1 s, at most 60 s.
    fn retry_after(&self, inputs: usize) -> Duration {
        let queued = self.capacity.saturating_sub(self.admission.available_permits());
        let excess = (queued + inputs).saturating_sub(self.capacity);
        let seconds = excess as f64 * self.seconds_per_input.get() / self.workers as f64;
        Duration::from_secs(seconds.ceil().clamp(1.0, 60.0) as u64)
    }

    /// Embeds an admitted request's tokenized texts: `ids.len() × dim` floats, in request order. Dropping the future
    /// (the client went away) drops its groups that have not started.
    pub(crate) async fn embed(&self, _admission: &Admission, mut ids: Vec<Vec<u32>>) -> Result<Vec<f32>, PoolError> {
        let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
        let groups = batching::plan(&lengths, self.tokens_per_batch);
        let cancelled = CancellationToken::new();
        let _cancel_when_dropped = cancelled.clone().drop_guard();
        let (reply, mut answers) = tokio::sync::mpsc::unbounded_channel();
        let jobs = groups.len();
        for positions in groups {
            let ids = positions.iter().map(|&i| std::mem::take(&mut ids[i])).collect();
            let job = Job { ids, positions, cancelled: cancelled.clone(), reply: reply.clone() };
            self.queue.send(job).map_err(|_| PoolError::Stopped)?;
        }
        drop(reply);
        let mut vectors = vec![0.0f32; lengths.len() * self.dim];
        for _ in 0..jobs {
            let (positions, result) = answers.recv().await.ok_or(PoolError::Stopped)?;
            for (&i, vector) in positions.iter().zip(result?.chunks_exact(self.dim)) {
                vectors[i * self.dim..(i + 1) * self.dim].copy_from_slice(vector);
            }
        }
        Ok(vectors)
    }
}

/// A worker thread: takes jobs in order until the queue closes.
fn work(embedder: &Embedder, jobs: &Mutex<mpsc::Receiver<Job>>, stats: &Stats, seconds_per_input: &Ewma) {
    loop {
        // One thread waits in recv while holding the lock, the others wait for the lock: a FIFO shared by all.
        let job = match jobs.lock().unwrap_or_else(PoisonError::into_inner).recv() {
            Ok(job) => job,
            Err(mpsc::RecvError) => return,
        };
        if job.cancelled.is_cancelled() {
            stats.skipped(job.ids.len());
            continue;
        }
        stats.batch_started();
        let started = Instant::now();
        let batch: Vec<&[u32]> = job.ids.iter().map(Vec::as_slice).collect();
        // A panic inside the model fails this request, not the thread: the pool keeps its size.
        let result =
            std::panic::catch_unwind(AssertUnwindSafe(|| embedder.embed_tokens(&batch))).unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned());
                Err(EmbedError::Inference(candle_core::Error::Msg(format!(
                    "the forward pass panicked: {}",
                    message.unwrap_or_default()
                ))))
            });
        stats.batch_finished();
        if result.is_ok() {
            seconds_per_input.record(started.elapsed().as_secs_f64() / batch.len().max(1) as f64);
        }
        // The handler may be gone (client left mid-pass); then nobody wants the answer.
        let _ = job.reply.send((job.positions, result));
    }
}

/// An exponentially weighted mean of seconds per input, for `Retry-After`; 1 s until the first measurement.
#[derive(Debug, Default)]
struct Ewma(AtomicU64);

impl Ewma {
    fn get(&self) -> f64 {
        match f64::from_bits(self.0.load(Ordering::Relaxed)) {
            mean if mean > 0.0 => mean,
            _ => 1.0,
        }
    }

    fn record(&self, sample: f64) {
        let _ = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
            let mean = f64::from_bits(bits);
            Some(if mean > 0.0 { 0.8 * mean + 0.2 * sample } else { sample }.to_bits())
        });
    }
}
