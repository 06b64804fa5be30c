//! Group commit: the document writes of concurrent jobs share transactions.
//!
//! A job's write costs Postgres a transaction, a commit flush and a handful of statements whatever its size,
//! so small documents are bounded by per-transaction work, not by rows. Jobs hand their writes to one
//! committer task per process, which takes a write slot (one of `concurrency` transactions in flight) and
//! then takes every write waiting, up to the group limits, into one [`Store::commit_documents`] call. Like the
//! embedding dispatcher, it never lingers: a write leaves at once when a slot is free, and writes pile up into
//! the next group only while every slot is busy. Several slots keep several Postgres backends busy, which
//! matters when index maintenance (HNSW) costs more than the rest of the write.
//!
//! Each job still gets its own answer, and only after the transaction holding its rows has committed. When a
//! group fails for something one write may have caused, its writes are retried one by one, so a job fails
//! only for its own error; when it fails transiently (connection, timeout), every job of it is retried later.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use quern_core::{metric_names, ErrorClass};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::{DocumentCommit, Store, StoreError, WriteResult};

/// Group commit settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommitConfig {
    /// Write transactions in flight at once.
    pub concurrency: usize,
    /// Most jobs in one transaction.
    pub max_jobs: usize,
    /// Most chunk rows in one transaction (a single larger job still goes, alone).
    pub max_rows: usize,
}

impl Default for GroupCommitConfig {
    fn default() -> GroupCommitConfig {
        GroupCommitConfig { concurrency: 8, max_jobs: 32, max_rows: 128 }
    }
}

/// A write waiting for its transaction.
struct QueuedWrite {
    commit: DocumentCommit,
    reply: oneshot::Sender<Result<WriteResult, StoreError>>,
}

/// Hands document writes to the process's committer task. Cheap to clone; the task ends when the last clone
/// is dropped.
#[derive(Debug, Clone)]
pub struct GroupCommitter {
    queue: mpsc::UnboundedSender<QueuedWrite>,
}

impl GroupCommitter {
    /// Starts the committer task, so call it inside a Tokio runtime.
    pub fn new(store: Store, config: GroupCommitConfig) -> GroupCommitter {
        let config = GroupCommitConfig {
            concurrency: config.concurrency.max(1),
            max_jobs: config.max_jobs.max(1),
            max_rows: config.max_rows.max(1),
        };
        // Unbounded: what waits here is bounded by the jobs in flight (the prefetch).
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(run(waiting, store, config));
        GroupCommitter { queue }
    }

    /// Commits `commit` in a transaction shared with other jobs' writes; returns once it is committed.
    pub async fn commit(&self, commit: DocumentCommit) -> Result<WriteResult, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(QueuedWrite { commit, reply })
            .map_err(|_| StoreError::Internal("the group committer has stopped".into()))?;
        answer.await.map_err(|_| StoreError::Internal("the group committer dropped a write".into()))?
    }
}

/// Forms groups: one slot per transaction; every waiting write that fits goes into the next group.
async fn run(mut waiting: mpsc::UnboundedReceiver<QueuedWrite>, store: Store, config: GroupCommitConfig) {
    let slots = Arc::new(Semaphore::new(config.concurrency));
    // Writes to a document already in the group being formed wait for the next one: one transaction cannot
    // order two versions of a document. Across transactions order does not matter: each write carries its
    // version, and the later version wins whichever commits first.
    let mut deferred: VecDeque<QueuedWrite> = VecDeque::new();
    loop {
        if deferred.is_empty() {
            match waiting.recv().await {
                Some(first) => deferred.push_back(first),
                None => return,
            }
        }
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        while let Ok(write) = waiting.try_recv() {
            deferred.push_back(write);
        }
        let mut group: Vec<QueuedWrite> = Vec::new();
        let mut documents: HashSet<(String, String)> = HashSet::new();
        let mut rows = 0;
        let mut next_round = VecDeque::new();
        while let Some(write) = deferred.pop_front() {
            let full =
                group.len() >= config.max_jobs || (!group.is_empty() && rows + write.commit.rows() > config.max_rows);
            let key = (write.commit.collection.clone(), write.commit.document_id.clone());
            if full || documents.contains(&key) {
                next_round.push_back(write);
                continue;
            }
            rows += write.commit.rows();
            documents.insert(key);
            group.push(write);
        }
        deferred = next_round;
        tokio::spawn(commit_group(store.clone(), group, slot));
    }
}

/// Commits one group and answers each of its jobs; on failure, retries its writes one by one.
async fn commit_group(store: Store, group: Vec<QueuedWrite>, slot: OwnedSemaphorePermit) {
    metrics::histogram!(metric_names::DB_WRITE_GROUP_JOBS).record(group.len() as f64);
    let (commits, replies): (Vec<DocumentCommit>, Vec<_>) = group.into_iter().map(|w| (w.commit, w.reply)).unzip();
    match store.commit_documents(&commits).await {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                // A job that gave up no longer listens: nothing to do.
                let _ = reply.send(Ok(result));
            }
        }
        Err(error) if commits.len() == 1 => {
            let _ = replies.into_iter().next().map(|reply| reply.send(Err(error)));
        }
        // A lost connection or a timeout concerns every job alike: committing them one by one would only repeat
        // it (each waiting out its own timeout) while the slot is held. They fail together and are retried.
        Err(error) if error.class() == ErrorClass::Transient => {
            tracing::warn!(jobs = commits.len(), %error, "group commit failed transiently; its jobs will be retried");
            let message = error.to_string();
            for reply in replies {
                let _ = reply.send(Err(StoreError::GroupFailed { jobs: commits.len(), message: message.clone() }));
            }
        }
        // Anything else may be one job's fault (a value Postgres refuses): find it by committing one by one.
        Err(error) => {
            tracing::warn!(jobs = commits.len(), %error, "group commit failed; committing its jobs one by one");
            for (commit, reply) in commits.into_iter().zip(replies) {
                let result = store.commit_documents(std::slice::from_ref(&commit)).await;
                let _ = reply.send(result.map(|mut r| r.pop().expect("one result per commit")));
            }
        }
    }
    drop(slot);
}
