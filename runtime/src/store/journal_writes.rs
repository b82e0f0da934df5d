//! The effect journal's writes, grouped: the intents of concurrent
//! transactions' unsafe calls share one durable write.
//!
//! An intent must be durable before its call leaves, and one durable write
//! per call (an fsync, a flushed SQL commit) taken on the store's one writer
//! made every transaction with an unsafe call wait in line for it (see
//! `docs/benchmarks.md`). As the group commit does for commits, one writer
//! thread takes every write waiting, writes them with
//! [`StateStore::record_effects`] and answers each; meanwhile the next
//! group forms.

use super::{EffectWrite, StateStore, StoreError};
use std::sync::{Arc, mpsc};
use tokio::sync::oneshot;

/// The most writes one group takes.
const MOST_PER_WRITE: usize = 1024;

struct Job {
    write: EffectWrite,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// The journal's write queue of one store and its writer thread. Dropping
/// it waits for the thread to write what is queued and end.
#[derive(Debug)]
pub(crate) struct JournalWrites {
    jobs: mpsc::Sender<Job>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for JournalWrites {
    fn drop(&mut self) {
        // Closing the queue ends the thread's loop.
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.jobs, closed));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl JournalWrites {
    /// Starts the writer thread of `store`.
    pub(crate) fn start(store: Arc<dyn StateStore>) -> Result<Self, StoreError> {
        let (jobs, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("txmirror-journal".into())
            .spawn(move || write_loop(store.as_ref(), &queue))
            .map_err(|e| StoreError::Committer(Some(Arc::new(e))))?;
        Ok(Self { jobs, thread: Some(thread) })
    }

    /// Writes `write` with whatever else is waiting; done once it is written
    /// as [`StateStore::record_effect`] would write it alone.
    pub(crate) fn write(&self, write: EffectWrite) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = self.jobs.send(Job { write, reply });
        async move {
            queued.map_err(|_| StoreError::Committer(None))?;
            answer.await.map_err(|_| StoreError::Committer(None))?
        }
    }
}

fn write_loop(store: &dyn StateStore, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let jobs: Vec<Job> =
            std::iter::once(first).chain(std::iter::from_fn(|| queue.try_recv().ok())).take(MOST_PER_WRITE).collect();
        let (writes, replies): (Vec<EffectWrite>, Vec<_>) = jobs.into_iter().map(|job| (job.write, job.reply)).unzip();
        let results = store.record_effects(&writes);
        for (reply, result) in replies.into_iter().zip(results) {
            // The attempt may have been cancelled; the write stands.
            let _ = reply.send(result);
        }
    }
}
