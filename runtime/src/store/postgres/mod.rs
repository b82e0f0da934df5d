//! The networked store, on PostgreSQL (see `docs/design.md`).
//!
//! Tables (created by the migrations below, values in the same encodings
//! as the embedded store's, see `codec.rs`):
//! - `txm_schema`: the schema version the migrations reached;
//! - `txm_meta`: one row, the latest commit version and event sequence;
//! - `txm_kv`: `(namespace, key, version)` → the value that commit wrote,
//!   or `NULL` where it deleted the key. Every version is kept, so a
//!   snapshot is only a version number: reading at version `v` takes each
//!   key's newest row at or below `v`, and no connection is held between
//!   the reads of an attempt;
//! - `txm_events`, `txm_transactions`, `txm_idempotency`,
//!   `txm_dead_letters`, `txm_learnt`: as the embedded store's tables.
//!
//! A commit is one SQL transaction, and so is a group of commits (the
//! runtime's group commit, as on redb: one flush of the log for all). It
//! first locks the `txm_meta` row (`SELECT … FOR UPDATE`), which orders
//! commits as redb's single writer does; then, request by request, it
//! validates the read set against each key's newest row, checks the fence,
//! the id and the idempotency key, and writes the new rows, events and
//! record; then the version. Nothing in it is particular to PostgreSQL beyond
//! `FOR UPDATE`, `ON CONFLICT` and `DISTINCT ON`, which CockroachDB and
//! YugabyteDB speak too; no advisory lock is used.
//!
//! [`StateStore`] is synchronous, as redb is. The store runs PostgreSQL's
//! asynchronous client on a small runtime of its own and waits for each
//! call on the caller's thread, as a redb call waits for the disk; so it
//! can be called from inside the runtime's own tasks without nesting one
//! runtime in another.

use super::codec::{
    decode_dead_letter, decode_effect, decode_record, encode_dead_letter, encode_effect, encode_record,
};
use super::{
    AcceptRequest, Acceptance, Accepted, CommitError, CommitRequest, DeadLetter, Effect, EffectWrite, EventEntry,
    Fence, IdempotencyClaim, IdempotencyEntry, LetterPosition, ReadFuture, StateSnapshot, StateStore, StoreError,
    StoredEvent, StreamRetention, TransactionOutcome, TransactionRecord, Version, Versioned, VersionsFuture,
};
use deadpool_postgres::{GenericClient, Pool};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

mod database;
mod inbox;
mod reads;

use database::storage;
pub use database::{PgDatabase, int, uint, valid_schema};
use reads::Reads;

/// The migrations, in order: migration `n` (from 1) takes the schema from
/// version `n - 1` to `n`.
const MIGRATIONS: &[&str] = &[MIGRATION_1, inbox::MIGRATION, MIGRATION_3, MIGRATION_4, MIGRATION_5, MIGRATION_6];

/// The first schema: the state, events, records, keys, dead letters and
/// what the runtime learnt.
const MIGRATION_1: &str = r#"
    CREATE TABLE txm_meta (
        id BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
        version BIGINT NOT NULL,
        event_sequence BIGINT NOT NULL
    );
    INSERT INTO txm_meta (id, version, event_sequence) VALUES (TRUE, 0, 0);
    CREATE TABLE txm_kv (
        namespace TEXT COLLATE "C" NOT NULL,
        key TEXT COLLATE "C" NOT NULL,
        version BIGINT NOT NULL,
        value BYTEA,
        PRIMARY KEY (namespace, key, version)
    );
    CREATE TABLE txm_events (
        sequence BIGINT PRIMARY KEY,
        version BIGINT NOT NULL,
        transaction_id TEXT NOT NULL,
        stream TEXT NOT NULL,
        payload BYTEA NOT NULL
    );
    CREATE INDEX txm_events_by_stream ON txm_events (stream, sequence);
    CREATE TABLE txm_transactions (id TEXT COLLATE "C" PRIMARY KEY, record BYTEA NOT NULL);
    CREATE TABLE txm_idempotency (
        key TEXT PRIMARY KEY,
        transaction_id TEXT NOT NULL,
        expires_unix_ms BIGINT NOT NULL
    );
    CREATE INDEX txm_idempotency_by_expiry ON txm_idempotency (expires_unix_ms);
    CREATE TABLE txm_dead_letters (
        transaction_id TEXT COLLATE "C" PRIMARY KEY,
        dead_lettered_unix_ms BIGINT NOT NULL,
        letter BYTEA NOT NULL
    );
    CREATE TABLE txm_learnt (name TEXT PRIMARY KEY, bytes BYTEA NOT NULL);
"#;

/// The third schema: the effect journal, one row per unsafe call of a
/// transaction (the embedded store's encoding of [`Effect`]).
const MIGRATION_3: &str = r#"
    CREATE TABLE txm_effects (
        transaction_id TEXT COLLATE "C" NOT NULL,
        path TEXT COLLATE "C" NOT NULL,
        ordinal INTEGER NOT NULL,
        effect BYTEA NOT NULL,
        PRIMARY KEY (transaction_id, path, ordinal)
    );
"#;

/// The fourth schema: when each journal entry was last sent, so that old
/// entries can be purged without reading them (entries of the third
/// schema count as sent at time 0).
const MIGRATION_4: &str = r#"
    ALTER TABLE txm_effects ADD COLUMN sent_unix_ms BIGINT NOT NULL DEFAULT 0;
    CREATE INDEX txm_effects_sent ON txm_effects (sent_unix_ms);
"#;

/// The fifth schema: consumer groups' offsets, the last sequence each group
/// acknowledged on each stream (`txm_events_by_stream` already reads a
/// stream from an offset).
const MIGRATION_5: &str = r#"
    CREATE TABLE txm_consumer_offsets (
        stream TEXT COLLATE "C" NOT NULL,
        consumer_group TEXT COLLATE "C" NOT NULL,
        acknowledged BIGINT NOT NULL,
        PRIMARY KEY (stream, consumer_group)
    );
"#;

/// The sixth schema: when each event was committed (the database's clock),
/// for retention by age; events of earlier schemas count as committed at
/// time 0, the oldest.
const MIGRATION_6: &str = r#"
    ALTER TABLE txm_events ADD COLUMN committed_unix_ms BIGINT NOT NULL DEFAULT 0;
"#;

/// The store on a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    database: PgDatabase,
    /// The queue every read of the store's snapshots goes through.
    reads: Arc<Reads>,
}

/// `prefix` as a `LIKE` pattern that matches exactly the strings starting with it.
fn like_prefix(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '\\' | '%' | '_') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

impl PostgresStore {
    /// The schema this build creates and reads. A database migrated further
    /// by a newer build is refused, never read with guesses.
    pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

    /// Connects to the database at `url` (`postgres://user@host:port/db`)
    /// and brings its schema to this build's version, creating it in an
    /// empty database. A URL that does not parse, a database that cannot be
    /// reached and one of a newer schema are refused with `Open` or
    /// `Format` errors that name the database (never its password).
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_in_schema(url, "public")
    }

    /// As [`PostgresStore::connect`], with the store's tables in the
    /// database schema `schema` (created if missing), so that several
    /// stores (a service's tenants) share one database and never see each
    /// other's rows. The name is ASCII lower-case letters, digits and `_`,
    /// at most 63 bytes, starting with a letter.
    pub fn connect_in_schema(url: &str, schema: &str) -> Result<Self, StoreError> {
        let database = PgDatabase::connect(url, schema, MIGRATIONS)?;
        let (pool, runtime) = database.pool_and_runtime();
        let reads = Arc::new(Reads::start(pool, runtime));
        Ok(Self { database, reads })
    }

    fn block<T, E, F>(&self, work: impl FnOnce(Pool) -> F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        self.database.block(work)
    }

    /// The latest committed version.
    pub fn version(&self) -> Result<Version, StoreError> {
        self.block(|pool| async move {
            let client = pool.get().await.map_err(storage)?;
            latest_version(&client).await
        })
    }
}

/// `sql`, prepared once per connection: the statements of the hot paths
/// (reads, commits) skip the server's parse and plan after the first time.
async fn cached(client: &impl GenericClient, sql: &str) -> Result<tokio_postgres::Statement, StoreError> {
    client.prepare_cached(sql).await.map_err(storage)
}

async fn latest_version(client: &impl GenericClient) -> Result<Version, StoreError> {
    let statement = client.prepare_cached("SELECT version FROM txm_meta").await.map_err(storage)?;
    let row = client.query_one(&statement, &[]).await.map_err(storage)?;
    Ok(uint(row.get(0)))
}

/// Claims `claim.key` for `transaction_id` unless a claim that has not
/// lapsed holds it; returns the holder if one does. One statement, so that
/// two transactions claiming one key at once (a commit and a failure's
/// record, which do not share the meta row's lock) bind it to one of them.
async fn claim(
    client: &impl GenericClient,
    claim: &IdempotencyClaim,
    transaction_id: &str,
) -> Result<Option<String>, StoreError> {
    let expires = int(claim.now_unix_ms.saturating_add(claim.retention_ms));
    let statement = cached(
        client,
        "INSERT INTO txm_idempotency (key, transaction_id, expires_unix_ms) VALUES ($1, $2, $3)
         ON CONFLICT (key) DO UPDATE SET transaction_id = EXCLUDED.transaction_id,
         expires_unix_ms = EXCLUDED.expires_unix_ms
         WHERE txm_idempotency.expires_unix_ms <= $4",
    )
    .await?;
    let claimed = client
        .execute(&statement, &[&claim.key, &transaction_id, &expires, &int(claim.now_unix_ms)])
        .await
        .map_err(storage)?;
    if claimed == 1 {
        return Ok(None);
    }
    let statement = cached(client, "SELECT transaction_id FROM txm_idempotency WHERE key = $1").await?;
    let holder = client.query_one(&statement, &[&claim.key]).await.map_err(storage)?;
    Ok(Some(holder.get(0)))
}

async fn put_record(client: &impl GenericClient, record: &TransactionRecord) -> Result<(), StoreError> {
    let bytes = encode_record(record)?;
    client
        .execute(
            "INSERT INTO txm_transactions (id, record) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
            &[&record.id, &bytes],
        )
        .await
        .map_err(storage)?;
    Ok(())
}

/// Commits `requests` in one SQL transaction, in order (see the module's
/// documentation): one lock of the meta row and one flush of the log for
/// all of them. A request refused (a conflict, a duplicate, a fence) leaves
/// nothing behind; a storage failure fails them all and applies nothing.
async fn commit_batch(pool: Pool, requests: Vec<CommitRequest>) -> Vec<Result<Version, CommitError>> {
    let count = requests.len();
    match commit_all(pool, requests, None).await {
        Ok(results) => results,
        Err(error) => (0..count).map(|_| Err(CommitError::Store(error.clone()))).collect(),
    }
}

/// The hand-over of an open batch: the commit says when it holds the meta
/// row's lock, and is given what arrived meanwhile.
struct OpenBatch {
    ready: std::sync::mpsc::SyncSender<()>,
    more: tokio::sync::oneshot::Receiver<Vec<CommitRequest>>,
}

/// The newest row of each `(namespace, key)` of two arrays that has one: its
/// namespace, key, version, and whether it deletes the key. Each key's
/// newest row is one step of its index backwards, however many versions
/// the key has.
const LATEST_VERSIONS: &str = "SELECT r.namespace, r.key, k.version, k.value IS NULL
     FROM unnest($1::TEXT[], $2::TEXT[]) AS r(namespace, key)
     JOIN LATERAL (
         SELECT version, value FROM txm_kv WHERE namespace = r.namespace AND key = r.key
         ORDER BY version DESC LIMIT 1
     ) k ON TRUE";

/// What the batch's requests read and check, fetched in three statements
/// whatever the batch's size, then kept up to date in memory as the
/// batch's requests are accepted in order.
struct BatchView {
    /// Each key read: its newest version (0 if absent or deleted).
    versions: HashMap<(String, String), Version>,
    /// Ids recorded, before the batch or by it.
    recorded: HashSet<String>,
    /// The epochs of the accepted transactions the batch writes under
    /// (their rows locked); `None` once the batch ended one.
    epochs: HashMap<String, Option<u64>>,
}

impl BatchView {
    async fn fetch(txn: &impl GenericClient, requests: &[CommitRequest]) -> Result<Self, StoreError> {
        let mut namespaces = Vec::new();
        let mut keys = Vec::new();
        let mut seen = HashSet::new();
        for read in requests.iter().flat_map(|request| &request.reads) {
            if seen.insert((read.namespace.as_str(), read.key.as_str())) {
                namespaces.push(read.namespace.as_str());
                keys.push(read.key.as_str());
            }
        }
        let ids: Vec<&str> = requests.iter().map(|request| request.record.id.as_str()).collect();
        let fenced: Vec<&str> =
            requests.iter().filter_map(|request| request.fence.as_ref()).map(|f| f.transaction_id.as_str()).collect();
        // Sent together, without waiting for each answer before the next
        // question (the client pipelines what is awaited together): the
        // meta row stays locked for fewer round trips.
        let newest = async {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            txn.query(&cached(txn, LATEST_VERSIONS).await?, &[&namespaces, &keys]).await.map_err(storage)
        };
        let recorded = async {
            let statement = cached(txn, "SELECT id FROM txm_transactions WHERE id = ANY($1)").await?;
            txn.query(&statement, &[&ids]).await.map_err(storage)
        };
        // Locked until the commit ends: a takeover skips these rows, and
        // finds them gone or re-checks them after.
        let locked = async {
            if fenced.is_empty() {
                return Ok(Vec::new());
            }
            inbox::lock_epochs(txn, &fenced).await
        };
        let (newest, recorded, locked) = tokio::try_join!(newest, recorded, locked)?;
        let versions = newest
            .iter()
            .map(|row| {
                let deleted: bool = row.get(3);
                ((row.get(0), row.get(1)), if deleted { 0 } else { uint(row.get(2)) })
            })
            .collect();
        let recorded = recorded.into_iter().map(|row| row.get(0)).collect();
        let mut epochs: HashMap<String, Option<u64>> = fenced.iter().map(|id| ((*id).to_string(), None)).collect();
        for (id, epoch) in locked {
            epochs.insert(id, Some(epoch));
        }
        Ok(Self { versions, recorded, epochs })
    }

    fn version(&self, namespace: &str, key: &str) -> Version {
        self.versions.get(&(namespace.to_string(), key.to_string())).copied().unwrap_or(0)
    }
}

/// The rows a batch writes, gathered as its requests are accepted, column
/// by column: each table is written by one `INSERT … SELECT * FROM unnest`.
#[derive(Default)]
struct BatchWrites {
    kv: KvRows,
    events: EventRows,
    records: RecordRows,
    ended: Vec<String>,
}

#[derive(Default)]
struct KvRows {
    namespaces: Vec<String>,
    keys: Vec<String>,
    versions: Vec<i64>,
    values: Vec<Option<Vec<u8>>>,
}

#[derive(Default)]
struct EventRows {
    sequences: Vec<i64>,
    versions: Vec<i64>,
    transaction_ids: Vec<String>,
    streams: Vec<String>,
    payloads: Vec<Vec<u8>>,
}

#[derive(Default)]
struct RecordRows {
    ids: Vec<String>,
    records: Vec<Vec<u8>>,
}

async fn commit_all(
    pool: Pool,
    mut requests: Vec<CommitRequest>,
    open: Option<OpenBatch>,
) -> Result<Vec<Result<Version, CommitError>>, StoreError> {
    let mut client = pool.get().await.map_err(storage)?;
    let txn = client.transaction().await.map_err(storage)?;
    let meta = txn
        .query_one(&cached(&txn, "SELECT version, event_sequence FROM txm_meta FOR UPDATE").await?, &[])
        .await
        .map_err(storage)?;
    // The lock may have waited for another node's commit; what arrived
    // meanwhile joins this one.
    if let Some(open) = open
        && open.ready.send(()).is_ok()
        && let Ok(more) = open.more.await
    {
        requests.extend(more);
    }
    let (mut version, mut event_sequence) = (uint(meta.get(0)), uint(meta.get(1)));
    let mut view = BatchView::fetch(&txn, &requests).await?;
    let mut writes = BatchWrites::default();
    let mut results = Vec::with_capacity(requests.len());
    for request in requests {
        let checked = check(&txn, &request, &view).await;
        let checked = match checked {
            Err(CommitError::Store(error)) if !matches!(error, StoreError::Fenced { .. }) => return Err(error),
            other => other,
        };
        if let Err(refused) = checked {
            results.push(Err(refused));
            continue;
        }
        version += 1;
        if let Some(fence) = &request.fence
            && fence.ends_with(&request.record.id)
        {
            view.epochs.insert(fence.transaction_id.clone(), None);
            writes.ended.push(fence.transaction_id.clone());
        }
        for write in request.writes {
            let new = if write.value.is_some() { version } else { 0 };
            view.versions.insert((write.namespace.clone(), write.key.clone()), new);
            writes.kv.namespaces.push(write.namespace);
            writes.kv.keys.push(write.key);
            writes.kv.versions.push(int(version));
            writes.kv.values.push(write.value);
        }
        for event in request.events {
            event_sequence += 1;
            writes.events.sequences.push(int(event_sequence));
            writes.events.versions.push(int(version));
            writes.events.transaction_ids.push(request.record.id.clone());
            writes.events.streams.push(event.stream);
            writes.events.payloads.push(event.payload);
        }
        let mut record = request.record;
        if let TransactionOutcome::Committed { version: committed, .. } = &mut record.outcome {
            *committed = version;
        }
        view.recorded.insert(record.id.clone());
        writes.records.records.push(encode_record(&record)?);
        writes.records.ids.push(record.id);
        results.push(Ok(version));
    }
    if !writes.records.ids.is_empty() {
        write_batch(&txn, &writes, version, event_sequence).await?;
    }
    txn.commit().await.map_err(storage)?;
    Ok(results)
}

/// Whether one request of a batch may commit, against the state the batch
/// has reached. Only a won idempotency claim writes, and nothing after it
/// refuses the request.
async fn check(txn: &impl GenericClient, request: &CommitRequest, view: &BatchView) -> Result<(), CommitError> {
    if let Some(fence) = &request.fence {
        fence.check(view.epochs.get(&fence.transaction_id).copied().flatten())?;
    }
    for read in &request.reads {
        read.check(view.version(&read.namespace, &read.key))?;
    }
    if view.recorded.contains(&request.record.id) {
        return Err(CommitError::DuplicateId(request.record.id.clone()));
    }
    if let Some(wanted) = &request.idempotency
        && let Some(holder) = claim(txn, wanted, &request.record.id).await?
    {
        return Err(CommitError::DuplicateIdempotencyKey { key: wanted.key.clone(), transaction_id: holder });
    }
    Ok(())
}

/// Writes what a batch's accepted requests write, one statement per table.
async fn write_batch(
    txn: &impl GenericClient,
    writes: &BatchWrites,
    version: Version,
    event_sequence: u64,
) -> Result<(), StoreError> {
    let KvRows { namespaces, keys, versions, values } = &writes.kv;
    let EventRows { sequences, versions: event_versions, transaction_ids, streams, payloads } = &writes.events;
    let RecordRows { ids, records } = &writes.records;
    // Independent writes, sent together (pipelined) rather than one round
    // trip each while the meta row is locked.
    let kv = async {
        if keys.is_empty() {
            return Ok(0);
        }
        let statement = cached(
            txn,
            "INSERT INTO txm_kv (namespace, key, version, value)
             SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::BYTEA[])",
        )
        .await?;
        txn.execute(&statement, &[namespaces, keys, versions, values]).await.map_err(storage)
    };
    let events = async {
        if sequences.is_empty() {
            return Ok(0);
        }
        let statement = cached(
            txn,
            "INSERT INTO txm_events (sequence, version, transaction_id, stream, payload, committed_unix_ms)
             SELECT e.*, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT
             FROM unnest($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::BYTEA[]) AS e",
        )
        .await?;
        txn.execute(&statement, &[sequences, event_versions, transaction_ids, streams, payloads]).await.map_err(storage)
    };
    let records = async {
        let statement = cached(
            txn,
            "INSERT INTO txm_transactions (id, record) SELECT * FROM unnest($1::TEXT[], $2::BYTEA[])
             ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
        )
        .await?;
        txn.execute(&statement, &[ids, records]).await.map_err(storage)
    };
    let ended = async {
        if writes.ended.is_empty() {
            return Ok(());
        }
        inbox::end(txn, &writes.ended).await
    };
    let meta = async {
        let statement = cached(txn, "UPDATE txm_meta SET version = $1, event_sequence = $2").await?;
        txn.execute(&statement, &[&int(version), &int(event_sequence)]).await.map_err(storage)
    };
    tokio::try_join!(kv, events, records, ended, meta)?;
    Ok(())
}

/// A read view at one version: the number, the store to ask, and what was
/// read at it. What a key holds at a version never changes, so the twins of
/// an attempt, which read through one snapshot, ask the database once per
/// key between them.
///
/// The version is fixed by the snapshot's first read, in the same
/// statement as that read: any committed version is a consistent view, and
/// a commit validates each key it read, so the view need not be older than
/// its first read. A snapshot that reads nothing costs no statement.
#[derive(Debug)]
struct PostgresSnapshot {
    version: tokio::sync::OnceCell<Version>,
    store: PostgresStore,
    read: std::sync::Mutex<HashMap<(String, String), Arc<ReadOnce>>>,
}

/// One key's read at a snapshot, made once: a twin asking while the other's
/// read is on its way awaits that answer instead of asking again. A failed
/// read leaves it empty, for the next to ask again.
type ReadOnce = tokio::sync::OnceCell<Option<Versioned>>;

/// The most keys a snapshot remembers; reads past it go to the database.
const SNAPSHOT_CACHE: usize = 4_096;

impl PostgresSnapshot {
    /// The snapshot's version, fixed now by asking for the latest if no read
    /// fixed it yet.
    fn at(&self) -> Result<Version, StoreError> {
        if let Some(version) = self.version.get() {
            return Ok(*version);
        }
        let latest = self.store.version()?;
        // A first read on its way fixes it instead: wait for it (briefly;
        // a read is one statement).
        for _ in 0..10_000 {
            match self.version.set(latest) {
                Ok(()) => return Ok(latest),
                Err(_) => {
                    if let Some(version) = self.version.get() {
                        return Ok(*version);
                    }
                    std::thread::sleep(std::time::Duration::from_micros(100));
                }
            }
        }
        Err(StoreError::Committer(None))
    }

    /// What `key` holds at the snapshot's version; the first read fixes the
    /// version in the same statement.
    async fn read_async(&self, namespace: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        let mut first = None;
        let version = *self
            .version
            .get_or_try_init(|| async {
                let found = self.store.reads.read(namespace, key, None).await?;
                let latest = found.latest;
                first = Some(found.versioned());
                Ok::<_, StoreError>(latest)
            })
            .await?;
        match first {
            Some(found) => Ok(found),
            None => Ok(self.store.reads.read(namespace, key, Some(version)).await?.versioned()),
        }
    }

    /// The cell of a key's read, unless the snapshot remembers enough keys.
    fn cell(&self, namespace: &str, key: &str) -> Option<Arc<ReadOnce>> {
        let mut read = self.read.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = (namespace.to_string(), key.to_string());
        match read.get(&entry) {
            Some(cell) => Some(cell.clone()),
            None if read.len() < SNAPSHOT_CACHE => Some(read.entry(entry).or_default().clone()),
            None => None,
        }
    }
}

/// What `key` holds at `version`, waited for on the caller's thread.
fn fetch(store: &PostgresStore, namespace: &str, key: &str, version: Version) -> Result<Option<Versioned>, StoreError> {
    let (reads, namespace, key) = (store.reads.clone(), namespace.to_string(), key.to_string());
    store.block(|_| async move { Ok(reads.read(&namespace, &key, Some(version)).await?.versioned()) })
}

impl StateSnapshot for PostgresSnapshot {
    fn version(&self) -> Version {
        // Asked once the attempt ended: a snapshot that read nothing is at
        // the latest version; if even that cannot be asked, nothing was
        // read at any version.
        self.at().unwrap_or(0)
    }

    fn get(&self, namespace: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        let version = self.at()?;
        let Some(cell) = self.cell(namespace, key) else {
            return fetch(&self.store, namespace, key, version);
        };
        if let Some(found) = cell.get() {
            return Ok(found.clone());
        }
        let found = fetch(&self.store, namespace, key, version)?;
        // Another reader may have filled it meanwhile, with the same answer.
        let _ = cell.set(found.clone());
        Ok(found)
    }

    fn get_async<'a>(&'a self, namespace: &'a str, key: &'a str) -> ReadFuture<'a> {
        Box::pin(async move {
            let read = || self.read_async(namespace, key);
            match self.cell(namespace, key) {
                Some(cell) => cell.get_or_try_init(read).await.cloned(),
                None => read().await,
            }
        })
    }

    fn scan(&self, namespace: &str, prefix: &str, limit: usize) -> Result<Vec<(String, Versioned)>, StoreError> {
        let (namespace, pattern, at) = (namespace.to_string(), like_prefix(prefix), int(self.at()?));
        let limit = int(limit as u64);
        self.store.block(|pool| async move {
            let client = pool.get().await.map_err(storage)?;
            let rows = client
                .query(
                    "SELECT key, version, value FROM (
                         SELECT DISTINCT ON (key) key, version, value FROM txm_kv
                         WHERE namespace = $1 AND key LIKE $2 AND version <= $3
                         ORDER BY key, version DESC
                     ) AS latest WHERE value IS NOT NULL ORDER BY key LIMIT $4",
                    &[&namespace, &pattern, &at, &limit],
                )
                .await
                .map_err(storage)?;
            Ok(rows
                .into_iter()
                .map(|row| (row.get(0), Versioned { version: uint(row.get(1)), value: row.get(2) }))
                .collect())
        })
    }
}

impl StateStore for PostgresStore {
    fn snapshot(&self) -> Result<Arc<dyn StateSnapshot>, StoreError> {
        Ok(Arc::new(PostgresSnapshot {
            version: tokio::sync::OnceCell::new(),
            store: self.clone(),
            read: std::sync::Mutex::default(),
        }))
    }

    fn commit(&self, request: CommitRequest) -> Result<Version, CommitError> {
        let mut results = self.commit_batch(vec![request]);
        results.pop().unwrap_or_else(|| Err(CommitError::Store(StoreError::Committer(None))))
    }

    fn latest_versions(&self, keys: &[(String, String)]) -> Result<Vec<Version>, StoreError> {
        let (reads, keys) = (self.reads.clone(), keys.to_vec());
        self.block(|_| async move { reads.latest_versions(&keys).await })
    }

    fn latest_versions_async<'a>(&'a self, keys: &'a [(String, String)]) -> VersionsFuture<'a> {
        Box::pin(self.reads.latest_versions(keys))
    }

    fn commit_batch(&self, requests: Vec<CommitRequest>) -> Vec<Result<Version, CommitError>> {
        let count = requests.len();
        let answer: Result<Vec<Result<Version, CommitError>>, StoreError> =
            self.block(|pool| async move { Ok(commit_batch(pool, requests).await) });
        answer.unwrap_or_else(|error| (0..count).map(|_| Err(CommitError::Store(error.clone()))).collect())
    }

    fn commit_batch_open(
        &self,
        requests: Vec<CommitRequest>,
        more: &mut dyn FnMut() -> Vec<CommitRequest>,
    ) -> Vec<Result<Version, CommitError>> {
        let mut count = requests.len();
        let (ready, is_ready) = std::sync::mpsc::sync_channel(1);
        let (give, given) = tokio::sync::oneshot::channel();
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        let (pool, runtime) = self.database.pool_and_runtime();
        runtime.spawn(async move {
            let open = OpenBatch { ready, more: given };
            // The caller waits below for as long as this runs.
            let _ = answer.send(commit_all(pool, requests, Some(open)).await);
        });
        let answer = database::wait_off_worker(|| {
            // No signal: the commit failed before it held the lock, and
            // `more` stays unasked (what it would take stays queued).
            if is_ready.recv().is_ok() {
                let more = more();
                count += more.len();
                // Refused only if the commit is gone; then it answers with
                // its failure, which counts these too.
                let _ = give.send(more);
            }
            answered.recv()
        });
        match answer {
            Ok(Ok(results)) => results,
            Ok(Err(error)) => (0..count).map(|_| Err(CommitError::Store(error.clone()))).collect(),
            Err(_) => (0..count).map(|_| Err(CommitError::Store(StoreError::Committer(None)))).collect(),
        }
    }

    fn record_outcome(
        &self,
        record: TransactionRecord,
        idempotency: Option<IdempotencyClaim>,
        dead_letter: Option<DeadLetter>,
        fence: Option<&Fence>,
        events: Vec<EventEntry>,
    ) -> Result<(), StoreError> {
        let fence = fence.cloned();
        self.block(|pool| async move {
            let mut client = pool.get().await.map_err(storage)?;
            let txn = client.transaction().await.map_err(storage)?;
            // Events are numbered under the meta row's lock, as a commit's
            // are, and it is taken first, as a commit takes it, so that the
            // two never wait for each other's locks in opposite orders.
            if !events.is_empty() {
                let meta = txn
                    .query_one("SELECT version, event_sequence FROM txm_meta FOR UPDATE", &[])
                    .await
                    .map_err(storage)?;
                let (version, mut sequence) = (uint(meta.get(0)), uint(meta.get(1)));
                let mut rows = EventRows::default();
                for event in events {
                    sequence += 1;
                    rows.sequences.push(int(sequence));
                    rows.versions.push(int(version));
                    rows.transaction_ids.push(record.id.clone());
                    rows.streams.push(event.stream);
                    rows.payloads.push(event.payload);
                }
                let EventRows { sequences, versions, transaction_ids, streams, payloads } = &rows;
                txn.execute(
                    "INSERT INTO txm_events (sequence, version, transaction_id, stream, payload, committed_unix_ms)
                     SELECT e.*, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT
                     FROM unnest($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::BYTEA[]) AS e",
                    &[sequences, versions, transaction_ids, streams, payloads],
                )
                .await
                .map_err(storage)?;
                txn.execute("UPDATE txm_meta SET event_sequence = $1", &[&int(sequence)]).await.map_err(storage)?;
            }
            if let Some(fence) = &fence {
                inbox::check_fence(&txn, fence).await?;
                inbox::end_if_own(&txn, fence, &record.id).await?;
            }
            if let Some(letter) = &dead_letter {
                let bytes = encode_dead_letter(letter)?;
                txn.execute(
                    "INSERT INTO txm_dead_letters (transaction_id, dead_lettered_unix_ms, letter) VALUES ($1, $2, $3)
                     ON CONFLICT (transaction_id) DO UPDATE SET dead_lettered_unix_ms = EXCLUDED.dead_lettered_unix_ms,
                     letter = EXCLUDED.letter",
                    &[&letter.transaction_id, &int(letter.dead_lettered_unix_ms), &bytes],
                )
                .await
                .map_err(storage)?;
            }
            if let Some(wanted) = &idempotency {
                // A key held by a claim that has not lapsed stays its holder's.
                claim(&txn, wanted, &record.id).await?;
            }
            put_record(&txn, &record).await?;
            txn.commit().await.map_err(storage)
        })
    }

    fn dead_letters(&self, after: Option<&LetterPosition>, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let limit = int(limit as u64);
        // A first page starts before every letter: before time 0's empty id.
        let (after_ms, after_id) =
            after.map_or((-1, String::new()), |after| (int(after.dead_lettered_unix_ms), after.transaction_id.clone()));
        self.block(|pool| async move {
            let client = pool.get().await.map_err(storage)?;
            let rows = client
                .query(
                    "SELECT transaction_id, letter FROM txm_dead_letters
                     WHERE (dead_lettered_unix_ms, transaction_id) > ($1, $2)
                     ORDER BY dead_lettered_unix_ms, transaction_id LIMIT $3",
                    &[&after_ms, &after_id, &limit],
                )
                .await
                .map_err(storage)?;
            rows.iter().map(|row| decode_dead_letter(row.get(0), row.get(1))).collect()
        })
    }

    fn dead_letter(&self, transaction_id: &str) -> Result<Option<DeadLetter>, StoreError> {
        let id = transaction_id.to_string();
        self.block(|pool| async move {
            let client = pool.get().await.map_err(storage)?;
            let row = client
                .query_opt("SELECT letter FROM txm_dead_letters WHERE transaction_id = $1", &[&id])
                .await
                .map_err(storage)?;
            row.map(|row| decode_dead_letter(&id, row.get(0))).transpose()
        })
    }

    fn remove_dead_letter(&self, transaction_id: &str) -> Result<bool, StoreError> {
        let id = transaction_id.to_string();
        self.block(|pool| async move {
            let client = pool.get().await.map_err(storage)?;
            let removed = client
                .execute("DELETE FROM txm_dead_letters WHERE transaction_id = $1", &[&id])
                .await
                .map_err(storage)?;
            Ok(removed > 0)
        })
    }

    fn idempotency(&self, key: &str) -> Result<Option<IdempotencyEntry>, StoreError> {
        let key = key.to_string();
        self.block(|pool| async move {
            let client = pool.get().await.map_err(storage)?;
            let row = client
                .query_opt("SELECT transaction_id, expires_unix_ms FROM txm_idempotency WHERE key = $1", &[&key])
                .await
                .map_err(storage)?;
            Ok(row.map(|row| IdempotencyEntry { transaction_id: row.get(0), expires_unix_ms: uint(row.get(1)) }))
        })
    }

    fn purge_lapsed_keys(&self, now_unix_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let (now, limit) = (int(now_unix_ms), int(limit as u64));
        self.block(|pool| async move {
            let client = pool.get().await.map_err(storage)?;
            let removed = client
                .execute(
                    "DELETE FROM txm_idempotency WHERE key IN (
                         SELECT key FROM txm_idempotency WHERE expires_unix_ms <= $1 LIMIT $2
                     ) AND expires_unix_ms <= $1",
                    &[&now, &limit],
                )
                .await
                .map_err(storage)?;
            Ok(usize::try_from(removed).unwrap_or(usize::MAX))
        })
    }

    fn transaction(&self, id: &str) -> Result<Option<TransactionRecord>, StoreError> {
        let id = id.to_string();
        self.block(|pool| async move {
            let client = pool.get().await.map_err(storage)?;
            let row =
                client.query_opt("SELECT record FROM txm_transactions WHERE id = $1", &[&id]).await.map_err(storage)?;
            row.map(|row| decode_record(&id, row.get(0))).transpose()
        })
    }

    fn transactions(&self, after: Option<&str>, limit: usize) -> Result<Vec<TransactionRecord>, StoreError> {
        let (after, limit) = (after.map(str::to_string), int(limit as u64));
        self.block(|pool| async move {
            let client = pool.get().await.map_err(storage)?;
            let rows = client
                .query(
                    "SELECT id, record FROM txm_transactions WHERE $1::TEXT IS NULL OR id > $1 ORDER BY id LIMIT $2",
                    &[&after, &limit],
                )
                .await
                .map_err(storage)?;
            rows.iter().map(|row| decode_record(row.get(0), row.get(1))).collect()
        })
    }

    fn events(&self, stream: &str, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let (stream, after, limit) = (stream.to_string(), int(after), int(limit as u64));
        self.block(|pool| async move {
            let client = pool.get().await.map_err(storage)?;
            let rows = client
                .query(
                    "SELECT sequence, version, transaction_id, stream, payload FROM txm_events
                     WHERE stream = $1 AND sequence > $2 ORDER BY sequence LIMIT $3",
                    &[&stream, &after, &limit],
                )
                .await
                .map_err(storage)?;
            Ok(rows
                .iter()
                .map(|row| StoredEvent {
                    sequence: uint(row.get(0)),
                    version: uint(row.get(1)),
                    transaction_id: row.get(2),
                    stream: row.get(3),
                    payload: row.get(4),
                })
                .collect())
        })
    }

    fn group_offset(&self, stream: &str, group: &str) -> Result<Option<u64>, StoreError> {
        let (stream, group) = (stream.to_string(), group.to_string());
        self.block(|pool| async move {
            let client = pool.get().await.map_err(storage)?;
            let row = client
                .query_opt(
                    "SELECT acknowledged FROM txm_consumer_offsets WHERE stream = $1 AND consumer_group = $2",
                    &[&stream, &group],
                )
                .await
                .map_err(storage)?;
            Ok(row.map(|row| uint(row.get(0))))
        })
    }

    fn acknowledge(&self, stream: &str, group: &str, offset: u64) -> Result<u64, StoreError> {
        let (stream, group, offset) = (stream.to_string(), group.to_string(), int(offset));
        self.block(|pool| async move {
            let client = pool.get().await.map_err(storage)?;
            // One statement: concurrent acknowledgements keep the greatest.
            let row = client
                .query_one(
                    "INSERT INTO txm_consumer_offsets (stream, consumer_group, acknowledged) VALUES ($1, $2, $3)
                     ON CONFLICT (stream, consumer_group) DO UPDATE
                     SET acknowledged = GREATEST(txm_consumer_offsets.acknowledged, EXCLUDED.acknowledged)
                     RETURNING acknowledged",
                    &[&stream, &group, &offset],
                )
                .await
                .map_err(storage)?;
            Ok(uint(row.get(0)))
        })
    }

    fn consumer_groups(&self, stream: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let stream = stream.to_string();
        self.block(|pool| async move {
            let client = pool.get().await.map_err(storage)?;
            let rows = client
                .query(
                    "SELECT consumer_group, acknowledged FROM txm_consumer_offsets WHERE stream = $1
                     ORDER BY consumer_group",
                    &[&stream],
                )
                .await
                .map_err(storage)?;
            Ok(rows.iter().map(|row| (row.get(0), uint(row.get(1)))).collect())
        })
    }

    fn purge_stream(&self, stream: &str, retention: &StreamRetention, limit: usize) -> Result<usize, StoreError> {
        if !retention.limits_anything() {
            return Ok(0);
        }
        let stream = stream.to_string();
        // Past the cutoff, or before the first of the newest `keep_last`,
        // and (unless overridden) acknowledged by every group: the oldest
        // such, up to the first that stays, at most `limit`.
        let before = retention.committed_before_unix_ms.map_or(i64::MIN, int);
        let keep_last = retention.keep_last.map(int);
        let keep_unacknowledged = retention.keep_unacknowledged;
        let limit = int(limit as u64);
        self.block(|pool| async move {
            let client = pool.get().await.map_err(storage)?;
            let row = client
                .query_one(
                    "WITH kept_from AS (
                         SELECT CASE
                             WHEN $3::BIGINT IS NULL THEN 0
                             WHEN $3 = 0 THEN 9223372036854775807
                             ELSE COALESCE((SELECT sequence FROM txm_events WHERE stream = $1
                                            ORDER BY sequence DESC OFFSET $3 - 1 LIMIT 1), 0)
                         END AS sequence),
                     floor AS (
                         SELECT CASE WHEN $4 THEN COALESCE(MIN(acknowledged), 9223372036854775807)
                                ELSE 9223372036854775807 END AS sequence
                         FROM txm_consumer_offsets WHERE stream = $1),
                     ordered AS (
                         SELECT sequence,
                                (committed_unix_ms < $2 OR sequence < (SELECT sequence FROM kept_from))
                                AND sequence <= (SELECT sequence FROM floor) AS goes
                         FROM txm_events WHERE stream = $1 ORDER BY sequence LIMIT $5),
                     first_kept AS (SELECT MIN(sequence) AS sequence FROM ordered WHERE NOT goes),
                     gone AS (
                         DELETE FROM txm_events WHERE stream = $1 AND sequence IN (
                             SELECT sequence FROM ordered
                             WHERE goes AND sequence < COALESCE((SELECT sequence FROM first_kept), 9223372036854775807))
                         RETURNING 1)
                     SELECT COUNT(*) FROM gone",
                    &[&stream, &before, &keep_last, &keep_unacknowledged, &limit],
                )
                .await
                .map_err(storage)?;
            let purged: i64 = row.get(0);
            Ok(usize::try_from(purged).unwrap_or(0))
        })
    }

    fn learnt(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let name = name.to_string();
        self.block(|pool| async move {
            let client = pool.get().await.map_err(storage)?;
            let row =
                client.query_opt("SELECT bytes FROM txm_learnt WHERE name = $1", &[&name]).await.map_err(storage)?;
            Ok(row.map(|row| row.get(0)))
        })
    }

    fn save_learnt(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let (name, bytes) = (name.to_string(), bytes.to_vec());
        self.block(|pool| async move {
            let client = pool.get().await.map_err(storage)?;
            client
                .execute(
                    "INSERT INTO txm_learnt (name, bytes) VALUES ($1, $2)
                     ON CONFLICT (name) DO UPDATE SET bytes = EXCLUDED.bytes",
                    &[&name, &bytes],
                )
                .await
                .map_err(storage)?;
            Ok(())
        })
    }

    fn record_effects(&self, writes: &[EffectWrite]) -> Vec<Result<(), StoreError>> {
        let count = writes.len();
        let writes = writes.to_vec();
        let answer: Result<Vec<Result<(), StoreError>>, StoreError> = self.block(|pool| async move {
            let mut rows = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for write in &writes {
                let ordinal = i32::try_from(write.effect.ordinal)
                    .map_err(|_| StoreError::storage(std::io::Error::other("an effect's ordinal past i32")))?;
                rows.0.push(write.transaction_id.clone());
                rows.1.push(write.effect.path.clone());
                rows.2.push(ordinal);
                rows.3.push(encode_effect(&write.effect)?);
                rows.4.push(int(write.effect.sent_unix_ms));
            }
            let mut client = pool.get().await.map_err(storage)?;
            let txn = client.transaction().await.map_err(storage)?;
            // Answers alone need not wait for the log's flush (see
            // `record_effect`).
            if writes.iter().all(|write| write.effect.response.is_some()) {
                txn.batch_execute("SET LOCAL synchronous_commit = off").await.map_err(storage)?;
            }
            let mut results = Vec::with_capacity(writes.len());
            let mut kept = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (i, write) in writes.iter().enumerate() {
                let fenced = match &write.fence {
                    Some(fence) => inbox::check_fence(&txn, fence).await,
                    None => Ok(()),
                };
                // The same call written twice in one batch: the later write
                // stands (one statement cannot write a row twice).
                let later = writes[i + 1..].iter().any(|other| {
                    (&other.transaction_id, &other.effect.path, other.effect.ordinal)
                        == (&write.transaction_id, &write.effect.path, write.effect.ordinal)
                });
                match fenced {
                    Ok(()) if later => results.push(Ok(())),
                    Ok(()) => {
                        kept.0.push(rows.0[i].clone());
                        kept.1.push(rows.1[i].clone());
                        kept.2.push(rows.2[i]);
                        kept.3.push(rows.3[i].clone());
                        kept.4.push(rows.4[i]);
                        results.push(Ok(()));
                    }
                    Err(refused @ StoreError::Fenced { .. }) => results.push(Err(refused)),
                    Err(error) => return Err(error),
                }
            }
            let statement = cached(
                &txn,
                "INSERT INTO txm_effects (transaction_id, path, ordinal, effect, sent_unix_ms)
                 SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::INTEGER[], $4::BYTEA[], $5::BIGINT[])
                 ON CONFLICT (transaction_id, path, ordinal)
                 DO UPDATE SET effect = EXCLUDED.effect, sent_unix_ms = EXCLUDED.sent_unix_ms",
            )
            .await?;
            txn.execute(&statement, &[&kept.0, &kept.1, &kept.2, &kept.3, &kept.4]).await.map_err(storage)?;
            txn.commit().await.map_err(storage)?;
            Ok(results)
        });
        answer.unwrap_or_else(|error| (0..count).map(|_| Err(error.clone())).collect())
    }

    fn effects(&self, transaction_id: &str) -> Result<Vec<Effect>, StoreError> {
        let id = transaction_id.to_string();
        self.block(|pool| async move {
            let client = pool.get().await.map_err(storage)?;
            let statement =
                cached(&client, "SELECT effect FROM txm_effects WHERE transaction_id = $1 ORDER BY path, ordinal")
                    .await?;
            let rows = client.query(&statement, &[&id]).await.map_err(storage)?;
            rows.iter().map(|row| decode_effect(&id, row.get(0))).collect()
        })
    }

    fn purge_effects(&self, before_unix_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let (before, limit) = (int(before_unix_ms), int(limit as u64));
        self.block(|pool| async move {
            let client = pool.get().await.map_err(storage)?;
            let removed = client
                .execute(
                    "DELETE FROM txm_effects WHERE (transaction_id, path, ordinal) IN (
                         SELECT e.transaction_id, e.path, e.ordinal FROM txm_effects e
                         WHERE e.sent_unix_ms < $1
                           AND EXISTS (SELECT 1 FROM txm_transactions t WHERE t.id = e.transaction_id)
                           AND NOT EXISTS (SELECT 1 FROM txm_dead_letters d WHERE d.transaction_id = e.transaction_id)
                         LIMIT $2)",
                    &[&before, &limit],
                )
                .await
                .map_err(storage)?;
            Ok(usize::try_from(removed).unwrap_or(usize::MAX))
        })
    }

    fn accept(&self, request: AcceptRequest) -> Result<Acceptance, StoreError> {
        self.block(|pool| inbox::accept(pool, request))
    }

    fn accepted(&self, transaction_id: &str) -> Result<Option<Accepted>, StoreError> {
        let id = transaction_id.to_string();
        self.block(|pool| inbox::find(pool, id))
    }

    fn in_flight(&self, limit: usize) -> Result<Vec<Accepted>, StoreError> {
        self.block(|pool| inbox::in_flight(pool, limit))
    }

    fn submissions(&self, before: Option<u64>, limit: usize) -> Result<Vec<(u64, String)>, StoreError> {
        self.block(|pool| inbox::submissions(pool, before, limit))
    }

    fn finish(&self, fence: &Fence) -> Result<bool, StoreError> {
        let fence = fence.clone();
        self.block(|pool| inbox::finish(pool, fence))
    }

    fn renew_leases(&self, holder: &str, lease_ms: u64) -> Result<usize, StoreError> {
        let holder = holder.to_string();
        self.block(|pool| inbox::renew(pool, holder, lease_ms))
    }

    fn take_over(&self, holder: &str, lease_ms: u64, limit: usize) -> Result<Vec<Accepted>, StoreError> {
        let holder = holder.to_string();
        self.block(|pool| inbox::take_over(pool, holder, lease_ms, limit))
    }

    fn release_leases(&self, holder: &str) -> Result<usize, StoreError> {
        let holder = holder.to_string();
        self.block(|pool| inbox::release(pool, holder))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_only_what_starts_with_them() {
        assert_eq!(like_prefix("a_b%c\\"), "a\\_b\\%c\\\\%");
        assert_eq!(like_prefix(""), "%");
    }
}
