//! Group commit: transactions that finish at about the same time share one
//! storage commit, and so one fsync.
//!
//! A commit on the embedded store costs an fsync (about 0.3 ms on the
//! project's machine), far more than a small transaction's own work.
//!
//! - When no commit is under way, a transaction commits at once, on its own
//!   thread: handing it to another thread and waking it back would cost two
//!   thread switches, more than a small commit (see `docs/benchmarks.md`).
//! - While one is, requests queue up. One committer thread per store takes
//!   every request waiting, commits them with [`StateStore::commit_batch`]
//!   and answers each; meanwhile the next batch forms, so the batch grows
//!   with the load, and under load the fsyncs happen on the committer
//!   thread while the async workers keep running instances.
//!
//! A request handed over is committed even if the transaction that sent it
//! is cancelled while waiting: like a commit in progress, it either happens
//! whole or not at all.

use super::{CommitError, CommitRequest, StateStore, StoreError, Version};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use tokio::sync::oneshot;

/// The most requests one storage commit takes, unless configured otherwise.
pub const DEFAULT_BATCH_LIMIT: usize = 1024;

struct Job {
    request: CommitRequest,
    reply: oneshot::Sender<Result<Version, CommitError>>,
}

/// How [`GroupCommit::commit`] answers: committed at once, or queued.
enum Answer {
    Done(Result<Version, CommitError>),
    Queued(oneshot::Receiver<Result<Version, CommitError>>),
}

/// Counters of a [`GroupCommit`].
#[derive(Debug, Default)]
pub struct GroupCommitStats {
    batches: AtomicU64,
    transactions: AtomicU64,
    largest: AtomicU64,
}

impl GroupCommitStats {
    /// Storage commits made.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Transactions committed or refused through them.
    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }

    /// The largest batch so far.
    pub fn largest_batch(&self) -> u64 {
        self.largest.load(Ordering::Relaxed)
    }

    fn record(&self, size: usize) {
        let size = size as u64;
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.transactions.fetch_add(size, Ordering::Relaxed);
        self.largest.fetch_max(size, Ordering::Relaxed);
    }
}

/// The commit queue of one store and its committer thread. Dropping it
/// waits for the thread to commit what is queued and end, so that the store
/// is closed when the drop returns (and can be opened again at once).
#[derive(Debug)]
pub struct GroupCommit {
    store: Arc<dyn StateStore>,
    /// Held by whoever is committing: a transaction on its own thread, or
    /// the committer thread with a batch.
    writer: Arc<Mutex<()>>,
    jobs: mpsc::Sender<Job>,
    stats: Arc<GroupCommitStats>,
    batch_limit: usize,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        // Closing the queue ends the thread's loop.
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.jobs, closed));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl GroupCommit {
    /// Starts the committer thread of `store`, which commits at most
    /// `batch_limit` requests at a time (1: one fsync per transaction).
    pub fn start(store: Arc<dyn StateStore>, batch_limit: usize) -> Result<Self, StoreError> {
        let batch_limit = batch_limit.max(1);
        let (jobs, queue) = mpsc::channel();
        let stats = Arc::new(GroupCommitStats::default());
        let writer = Arc::new(Mutex::new(()));
        let (counters, committer, lock) = (stats.clone(), store.clone(), writer.clone());
        let thread = std::thread::Builder::new()
            .name("txmirror-commit".into())
            .spawn(move || commit_loop(committer.as_ref(), &lock, &queue, &counters, batch_limit))
            .map_err(|e| StoreError::Committer(Some(Arc::new(e))))?;
        Ok(Self { store, writer, jobs, stats, batch_limit, thread: Some(thread) })
    }

    /// Commits `request` at once if no commit is under way (blocking the
    /// calling thread for it), or else queues it, before returning; the
    /// answer comes from the returned future. Either way it is committed as
    /// [`StateStore::commit`] would commit it alone.
    pub fn commit(
        &self,
        request: CommitRequest,
    ) -> impl Future<Output = Result<Version, CommitError>> + Send + 'static {
        let stopped = || CommitError::Store(StoreError::Committer(None));
        let answer = match self.writer.try_lock() {
            Ok(_writing) => {
                self.stats.record(1);
                Answer::Done(self.store.commit(request))
            }
            Err(_) => {
                let (reply, answer) = oneshot::channel();
                match self.jobs.send(Job { request, reply }) {
                    Ok(()) => Answer::Queued(answer),
                    Err(_) => Answer::Done(Err(stopped())),
                }
            }
        };
        async move {
            match answer {
                Answer::Done(result) => result,
                Answer::Queued(answer) => answer.await.map_err(|_| stopped())?,
            }
        }
    }

    /// Its counters.
    pub fn stats(&self) -> &GroupCommitStats {
        &self.stats
    }

    /// The most requests it commits at a time.
    pub fn batch_limit(&self) -> usize {
        self.batch_limit
    }
}

fn commit_loop(
    store: &dyn StateStore,
    writer: &Mutex<()>,
    queue: &mpsc::Receiver<Job>,
    stats: &GroupCommitStats,
    batch_limit: usize,
) {
    let mut requests = Vec::new();
    let mut replies = Vec::new();
    while let Ok(first) = queue.recv() {
        for job in std::iter::once(first).chain(std::iter::from_fn(|| queue.try_recv().ok())).take(batch_limit) {
            requests.push(job.request);
            replies.push(job.reply);
        }
        let writing = writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // What arrived while the store got ready joins the batch.
        let mut more = || {
            let room = batch_limit.saturating_sub(replies.len());
            let mut more = Vec::new();
            for job in std::iter::from_fn(|| queue.try_recv().ok()).take(room) {
                more.push(job.request);
                replies.push(job.reply);
            }
            more
        };
        let results = store.commit_batch_open(std::mem::take(&mut requests), &mut more);
        drop(writing);
        stats.record(replies.len());
        for (reply, result) in replies.drain(..).zip(results) {
            // The transaction may have been cancelled; its commit stands.
            let _ = reply.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use crate::store::History;
    use crate::store::{ReadEntry, RedbStore, TransactionOutcome, TransactionRecord, WriteEntry};

    fn request(id: &str, reads: Vec<ReadEntry>, key: &str) -> CommitRequest {
        CommitRequest {
            reads,
            writes: vec![WriteEntry { namespace: "n".into(), key: key.into(), value: Some(id.as_bytes().to_vec()) }],
            events: Vec::new(),
            record: TransactionRecord {
                id: id.into(),
                module: "m".into(),
                path: "p".into(),
                input_hash: String::new(),
                outcome: TransactionOutcome::Committed { version: 0, output: Vec::new() },
                attempts: Vec::new(),
                history: History::default(),
            },
            idempotency: None,
            fence: None,
        }
    }

    /// In one batch, each request sees the writes of those before it: the
    /// second read of a key written earlier in the batch conflicts, the
    /// others commit, each at its own version.
    #[test]
    fn a_batch_validates_each_request_against_the_ones_before() {
        let store = RedbStore::in_memory().unwrap();
        let stale = vec![ReadEntry { namespace: "n".into(), key: "a".into(), version: 0 }];
        let results = store.commit_batch(vec![
            request("t1", stale.clone(), "a"),
            request("t2", stale, "b"),
            request("t3", Vec::new(), "c"),
            request("t1", Vec::new(), "d"),
        ]);
        assert_eq!(results[0].as_ref().unwrap(), &1);
        assert!(matches!(&results[1], Err(CommitError::Conflict { key, current_version: 1, .. }) if key == "a"));
        assert_eq!(results[2].as_ref().unwrap(), &2);
        assert!(matches!(&results[3], Err(CommitError::DuplicateId(id)) if id == "t1"));
        let snapshot = store.snapshot().unwrap();
        assert_eq!(snapshot.version(), 2);
        assert!(snapshot.get("n", "b").unwrap().is_none(), "the refused request wrote nothing");
        assert!(snapshot.get("n", "d").unwrap().is_none(), "the duplicate wrote nothing");
        assert_eq!(snapshot.get("n", "c").unwrap().unwrap().value, b"t3");
    }

    /// Commits queued while another is under way all go into the next
    /// storage commit: 200 transactions take at most two (the one the
    /// committer took before it blocked, and the rest), and each lands
    /// exactly once.
    #[test]
    fn commits_queued_while_the_store_is_busy_share_one_storage_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn StateStore> = Arc::new(RedbStore::open(&dir.path().join("state.redb")).unwrap());
        let group = GroupCommit::start(store.clone(), DEFAULT_BATCH_LIMIT).unwrap();
        // A commit under way: the others queue.
        let writer = group.writer.clone();
        let busy = writer.lock().unwrap();
        let answers: Vec<_> =
            (0..200).map(|i| group.commit(request(&format!("t{i}"), Vec::new(), &format!("k{i}")))).collect();
        drop(busy);
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut versions: Vec<Version> =
            runtime.block_on(async { await_all(answers).await }).into_iter().map(Result::unwrap).collect();
        versions.sort_unstable();
        assert_eq!(versions, (1..=200).collect::<Vec<_>>());
        assert_eq!(store.snapshot().unwrap().version(), 200);
        assert_eq!(group.stats().transactions(), 200);
        assert!(
            group.stats().batches() <= 2,
            "{} storage commits for 200 queued transactions",
            group.stats().batches()
        );
        assert!(group.stats().largest_batch() >= 100);
    }

    /// Regression: the committer thread held the store after the runtime
    /// was dropped, so reopening the same file at once failed with
    /// "database already open" (seen in `idempotency::keys_survive_a_restart`).
    #[test]
    fn the_store_is_closed_when_the_queue_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        for round in 0..20 {
            let store: Arc<dyn StateStore> = Arc::new(RedbStore::open(&path).unwrap());
            let group = GroupCommit::start(store.clone(), DEFAULT_BATCH_LIMIT).unwrap();
            drop(store);
            // One through the queue, one at once.
            let writing = group.writer.clone();
            let busy = writing.lock().unwrap();
            let queued = group.commit(request(&format!("q{round}"), Vec::new(), "k"));
            drop(busy);
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(queued).unwrap();
            runtime.block_on(group.commit(request(&format!("t{round}"), Vec::new(), "k"))).unwrap();
            drop(group);
        }
    }

    async fn await_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
        let mut outputs = Vec::with_capacity(futures.len());
        for future in futures {
            outputs.push(future.await);
        }
        outputs
    }
}
