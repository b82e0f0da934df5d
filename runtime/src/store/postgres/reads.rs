//! Reads of many attempts, gathered into one statement.
//!
//! Each read of an attempt is one key at one version, and a statement costs
//! PostgreSQL (and the kernel, for the round trip) far more than the index
//! lookup inside it. So reads are not sent one by one: they wait in a queue,
//! and as soon as the statement before has answered, everything queued goes in
//! one statement that looks up every key at its own version. Under a light
//! load a read goes alone and at once; under a heavy one, reads pile up
//! while earlier statements run, and each statement carries more of them.
//! This is the group commit's idea applied to reads, and like it, it keeps
//! each read exactly what it would have been alone: the statement reads one
//! snapshot of the database, and each key is looked up at the version its
//! attempt fixed.

use super::{Versioned, cached, int, storage, uint};
use crate::store::{StoreError, Version};
use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};

/// The most reads one statement carries.
const MOST_PER_STATEMENT: usize = 1_024;

/// Each `(namespace, key)` at its version, or at the latest where the
/// version is `NULL`, with the latest version itself: the newest row at or
/// below the version (the value is `NULL` where that row deleted the key).
/// One statement sees one snapshot, so the latest version and the rows read
/// at it agree.
///
/// The statement is prepared, so PostgreSQL soon plans it once for any
/// arguments, without statistics on the arrays; `LIMIT 1` on the one-row
/// meta table keeps that plan's estimate small. (Without it, the estimate
/// crossed `jit_above_cost` and every read compiled the query anew: 10 ms
/// a statement.)
const READ_BATCH: &str = "SELECT r.i, m.version, k.version, k.value
     FROM (SELECT version FROM txm_meta LIMIT 1) m
     CROSS JOIN unnest($1::TEXT[], $2::TEXT[], $3::BIGINT[]) WITH ORDINALITY AS r(namespace, key, at, i)
     LEFT JOIN LATERAL (
         SELECT version, value FROM txm_kv
         WHERE namespace = r.namespace AND key = r.key AND version <= COALESCE(r.at, m.version)
         ORDER BY version DESC LIMIT 1
     ) k ON TRUE";

/// What one read found.
#[derive(Debug, Clone)]
pub(super) struct Found {
    /// The latest committed version when the read was made.
    pub latest: Version,
    /// The key's newest row at or below the version asked for: its version
    /// and its value (`None` where that row deleted the key); `None` where
    /// there is no such row.
    pub row: Option<(Version, Option<Vec<u8>>)>,
}

impl Found {
    /// The key's value, as a snapshot shows it.
    pub fn versioned(self) -> Option<Versioned> {
        self.row.and_then(|(version, value)| value.map(|value| Versioned { version, value }))
    }

    /// The key's newest version, 0 where it is absent or deleted (as the
    /// commit's validation counts it).
    pub fn version(&self) -> Version {
        match &self.row {
            Some((version, Some(_))) => *version,
            _ => 0,
        }
    }
}

/// One read waiting for its statement.
struct Read {
    namespace: String,
    key: String,
    /// The version to read at; `None` for the latest.
    at: Option<Version>,
    answer: oneshot::Sender<Result<Found, StoreError>>,
}

/// The queue of a store's reads, and the task that sends them.
#[derive(Debug)]
pub(super) struct Reads {
    queue: mpsc::UnboundedSender<Read>,
}

impl Reads {
    /// Starts the task that sends the reads, on `handle` (the database's
    /// runtime). It ends when the last handle to the queue goes.
    pub fn start(pool: Pool, handle: &tokio::runtime::Handle) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        handle.spawn(send_reads(pool, waiting));
        Self { queue }
    }

    /// What `key` holds at `at` (at the latest version if `None`), read
    /// with whatever else is waiting.
    pub async fn read(&self, namespace: &str, key: &str, at: Option<Version>) -> Result<Found, StoreError> {
        self.ask(namespace, key, at)?.await.map_err(|_| StoreError::Committer(None))?
    }

    /// The newest version of each of `keys` (0 where absent or deleted), all
    /// asked at once so that they share a statement.
    pub async fn latest_versions(&self, keys: &[(String, String)]) -> Result<Vec<Version>, StoreError> {
        let asked =
            keys.iter().map(|(namespace, key)| self.ask(namespace, key, None)).collect::<Result<Vec<_>, _>>()?;
        let mut versions = Vec::with_capacity(asked.len());
        for found in asked {
            versions.push(found.await.map_err(|_| StoreError::Committer(None))??.version());
        }
        Ok(versions)
    }

    /// Queues a read, for its answer to come on the receiver.
    fn ask(
        &self,
        namespace: &str,
        key: &str,
        at: Option<Version>,
    ) -> Result<oneshot::Receiver<Result<Found, StoreError>>, StoreError> {
        let (answer, found) = oneshot::channel();
        let read = Read { namespace: namespace.to_string(), key: key.to_string(), at, answer };
        self.queue.send(read).map_err(|_| StoreError::Committer(None))?;
        Ok(found)
    }
}

/// Takes what waits, as one statement, one statement at a time: the reads
/// that arrive while a statement runs make the next one. One at a time
/// measured best (`bench-report nodes`, one node, mirrored: 2,945 tx/s with
/// one statement on its way, 2,896 with two, 2,129 with four): more at once
/// only cut the reads into more statements competing for the same cores.
async fn send_reads(pool: Pool, mut waiting: mpsc::UnboundedReceiver<Read>) {
    while let Some(first) = waiting.recv().await {
        let mut batch = vec![first];
        while batch.len() < MOST_PER_STATEMENT {
            match waiting.try_recv() {
                Ok(read) => batch.push(read),
                Err(_) => break,
            }
        }
        answer(&pool, batch).await;
    }
}

/// Reads `batch` in one statement and answers each read; a failure answers
/// them all with it.
async fn answer(pool: &Pool, batch: Vec<Read>) {
    match read_batch(pool, &batch).await {
        Ok(found) => {
            for (read, found) in batch.into_iter().zip(found) {
                // The reader may have gone; then nobody wants the answer.
                let _ = read.answer.send(Ok(found));
            }
        }
        Err(error) => {
            for read in batch {
                let _ = read.answer.send(Err(error.clone()));
            }
        }
    }
}

async fn read_batch(pool: &Pool, batch: &[Read]) -> Result<Vec<Found>, StoreError> {
    let namespaces: Vec<&str> = batch.iter().map(|read| read.namespace.as_str()).collect();
    let keys: Vec<&str> = batch.iter().map(|read| read.key.as_str()).collect();
    let versions: Vec<Option<i64>> = batch.iter().map(|read| read.at.map(int)).collect();
    let client = pool.get().await.map_err(storage)?;
    let rows =
        client.query(&cached(&client, READ_BATCH).await?, &[&namespaces, &keys, &versions]).await.map_err(storage)?;
    let mut found = vec![None; batch.len()];
    for row in rows {
        let ordinal: i64 = row.get(0);
        let row_version: Option<i64> = row.get(2);
        let read = Found { latest: uint(row.get(1)), row: row_version.map(|version| (uint(version), row.get(3))) };
        if let Some(slot) = usize::try_from(ordinal - 1).ok().and_then(|i| found.get_mut(i)) {
            *slot = Some(read);
        }
    }
    // One row per read, by the statement's shape; a read without one is
    // the database answering something else.
    found.into_iter().collect::<Option<Vec<_>>>().ok_or_else(|| {
        StoreError::storage(std::io::Error::other("a batched read answered fewer rows than it asked for"))
    })
}
