//! The embedded store, on [redb](https://docs.rs/redb).
//!
//! Tables (see `docs/design.md` for the format, `codec.rs` for its values):
//! - `kv`: `namespace NUL key` → the version that wrote it and the value;
//! - `meta`: `"version"`, `"event_sequence"` and `"format"` → `u64`;
//! - `events`: sequence → [`StoredEvent`];
//! - `transactions`: id → [`TransactionRecord`];
//! - `idempotency`: key → [`IdempotencyEntry`];
//! - `dead_letters`: id → [`DeadLetter`];
//! - `learnt`: name → bytes the store never reads;
//! - `effects`: the effect journal, `id NUL path NUL ordinal` → [`Effect`];
//! - `inbox`, `inbox_keys`, `submissions`: accepted transactions and their
//!   leases (see `inbox.rs`);
//! - `stream_events`, `consumer_offsets`: each stream's index over the
//!   events, and consumer groups' offsets (see `streams.rs`).
//!
//! redb gives snapshot isolation to readers and serialises writers, so a
//! commit validates its read set inside the write transaction and no other
//! commit can slip in between the check and the write.

use super::codec::{
    FORMAT_KEY, FORMAT_VERSION, decode, decode_dead_letter, decode_effect, decode_record, decode_versioned, encode,
    encode_dead_letter, encode_effect, encode_record, encode_versioned,
};
use super::{
    AcceptRequest, Acceptance, Accepted, CommitError, CommitRequest, DeadLetter, Effect, EffectWrite, EventEntry,
    Fence, IdempotencyClaim, IdempotencyEntry, LetterPosition, StateSnapshot, StateStore, StoreError, StoredEvent,
    StreamRetention, TransactionRecord, Version, Versioned,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::Arc;

const KV: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const EVENTS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("events");
const TRANSACTIONS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("transactions");
const IDEMPOTENCY: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("idempotency");
const DEAD_LETTERS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("dead_letters");
/// What the runtime has learnt (the online model), by name: bytes the
/// store never reads. Added within format 2: a store opened before it
/// existed gets it, empty, when next opened.
const LEARNT: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("learnt");
/// The effect journal: `transaction id NUL path NUL ordinal` (the ordinal
/// in ten digits, so a transaction's entries sort by path, then ordinal) →
/// [`Effect`]. Added within format 2, as `learnt` was.
const EFFECTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("effects");

/// The key of an effect in [`EFFECTS`].
fn effect_key(transaction_id: &str, path: &str, ordinal: u32) -> String {
    format!("{transaction_id}\0{path}\0{ordinal:010}")
}

mod inbox;
mod streams;

const VERSION_KEY: &str = "version";
const EVENT_SEQUENCE_KEY: &str = "event_sequence";

/// The embedded, durable store.
#[derive(Debug, Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    /// The lease holders that have written through this handle: any other
    /// holder's lease was written by a process that has ended (see `inbox.rs`).
    live_holders: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

fn storage(err: impl Into<redb::Error>) -> StoreError {
    StoreError::storage(err.into())
}

fn kv_key(namespace: &str, key: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(namespace.len() + 1 + key.len());
    bytes.extend_from_slice(namespace.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(key.as_bytes());
    bytes
}

fn decode_value(bytes: &[u8]) -> Result<Versioned, StoreError> {
    let (version, value) = decode_versioned(bytes)?;
    Ok(Versioned { version, value: value.to_vec() })
}

fn encode_value(version: Version, value: &[u8]) -> Vec<u8> {
    encode_versioned(version, value)
}

fn decode_claim(key: &str, bytes: &[u8]) -> Result<IdempotencyEntry, StoreError> {
    decode(|| format!("idempotency key {key}"), bytes)
}

/// The transaction holding `claim.key`, if its claim has not lapsed.
fn live_claim(
    keys: &redb::Table<'_, &'static str, &'static [u8]>,
    claim: &IdempotencyClaim,
) -> Result<Option<String>, StoreError> {
    match keys.get(claim.key.as_str()).map_err(storage)? {
        Some(bytes) => {
            let entry = decode_claim(&claim.key, bytes.value())?;
            Ok((entry.expires_unix_ms > claim.now_unix_ms).then_some(entry.transaction_id))
        }
        None => Ok(None),
    }
}

fn put_claim(
    keys: &mut redb::Table<'_, &'static str, &'static [u8]>,
    claim: &IdempotencyClaim,
    transaction_id: &str,
) -> Result<(), StoreError> {
    let entry = IdempotencyEntry {
        transaction_id: transaction_id.to_string(),
        expires_unix_ms: claim.now_unix_ms.saturating_add(claim.retention_ms),
    };
    let bytes = encode(&entry)?;
    keys.insert(claim.key.as_str(), bytes.as_slice()).map_err(storage)?;
    Ok(())
}

/// Appends the events of transaction `id`, written at `version`, to the
/// log and its streams' index.
fn append_events(
    txn: &redb::WriteTransaction,
    meta: &mut redb::Table<'_, &str, u64>,
    (id, version): (&str, Version),
    appended: &[EventEntry],
) -> Result<(), StoreError> {
    if appended.is_empty() {
        return Ok(());
    }
    let mut events = txn.open_table(EVENTS).map_err(storage)?;
    let mut sequence = meta.get(EVENT_SEQUENCE_KEY).map_err(storage)?.map_or(0, |v| v.value());
    let first = sequence + 1;
    for event in appended {
        sequence += 1;
        let stored = StoredEvent {
            sequence,
            version,
            transaction_id: id.to_string(),
            stream: event.stream.clone(),
            payload: event.payload.clone(),
        };
        let bytes = encode(&stored)?;
        events.insert(sequence, bytes.as_slice()).map_err(storage)?;
    }
    meta.insert(EVENT_SEQUENCE_KEY, sequence).map_err(storage)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let indexed = appended.iter().zip(first..).map(|(event, sequence)| (event.stream.as_str(), sequence));
    streams::index(txn, meta, indexed, u64::try_from(now).unwrap_or(u64::MAX))
}

/// Checks one transaction against the state `txn` sees (the latest commit
/// plus what earlier requests of the same batch applied) and, if nothing it
/// read has moved, applies it. Every check comes before the first change, so
/// a refused request leaves nothing behind.
fn apply(txn: &redb::WriteTransaction, request: CommitRequest) -> Result<Version, CommitError> {
    if let Some(fence) = &request.fence {
        inbox::check_fence(txn, fence)?;
    }
    let mut meta = txn.open_table(META).map_err(storage)?;
    let mut kv = txn.open_table(KV).map_err(storage)?;
    for read in &request.reads {
        let current = match kv.get(kv_key(&read.namespace, &read.key).as_slice()).map_err(storage)? {
            Some(value) => decode_value(value.value())?.version,
            None => 0,
        };
        read.check(current)?;
    }
    let mut transactions = txn.open_table(TRANSACTIONS).map_err(storage)?;
    if transactions.get(request.record.id.as_str()).map_err(storage)?.is_some() {
        return Err(CommitError::DuplicateId(request.record.id.clone()));
    }
    if let Some(claim) = &request.idempotency {
        let mut keys = txn.open_table(IDEMPOTENCY).map_err(storage)?;
        if let Some(holder) = live_claim(&keys, claim)? {
            return Err(CommitError::DuplicateIdempotencyKey { key: claim.key.clone(), transaction_id: holder });
        }
        put_claim(&mut keys, claim, &request.record.id)?;
    }
    // Every check has passed: from here on, the request changes the store.
    if let Some(fence) = &request.fence {
        inbox::end_if_own(txn, fence, &request.record.id)?;
    }
    let version = meta.get(VERSION_KEY).map_err(storage)?.map_or(0, |v| v.value()) + 1;
    for write in &request.writes {
        let key = kv_key(&write.namespace, &write.key);
        match &write.value {
            Some(value) => {
                kv.insert(key.as_slice(), encode_value(version, value).as_slice()).map_err(storage)?;
            }
            None => {
                kv.remove(key.as_slice()).map_err(storage)?;
            }
        }
    }
    append_events(txn, &mut meta, (&request.record.id, version), &request.events)?;
    meta.insert(VERSION_KEY, version).map_err(storage)?;
    let mut record = request.record;
    if let super::TransactionOutcome::Committed { version: v, .. } = &mut record.outcome {
        *v = version;
    }
    let bytes = encode_record(&record)?;
    transactions.insert(record.id.as_str(), bytes.as_slice()).map_err(storage)?;
    Ok(version)
}

impl RedbStore {
    /// Opens the store at `path`, creating it if needed.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Open { path: path.display().to_string(), source: Arc::new(e) })?;
        }
        let db = Database::create(path)
            .map_err(|e| StoreError::Open { path: path.display().to_string(), source: Arc::new(e) })?;
        Self::init(db).map_err(|error| match error {
            StoreError::Format { found, supported, .. } => {
                StoreError::Format { path: path.display().to_string(), found, supported }
            }
            other => other,
        })
    }

    /// A store in memory: real redb, no file and no fsync. For benchmarks
    /// and tests that measure the runtime rather than the disk.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::open_with_backend(redb::backends::InMemoryBackend::new())
    }

    /// Opens a store on a custom storage backend: the I/O seam used for
    /// crash and fault injection in tests.
    pub fn open_with_backend(backend: impl redb::StorageBackend) -> Result<Self, StoreError> {
        let db = Database::builder()
            .create_with_backend(backend)
            .map_err(|e| StoreError::Open { path: "<backend>".into(), source: Arc::new(e) })?;
        Self::init(db)
    }

    /// Creates the tables of a new store and stamps its format, or checks
    /// the format of an existing one: a store in another format is refused,
    /// never read with guesses.
    fn init(db: Database) -> Result<Self, StoreError> {
        let txn = db.begin_write().map_err(storage)?;
        {
            let existed = txn.list_tables().map_err(storage)?.next().is_some();
            let mut meta = txn.open_table(META).map_err(storage)?;
            let found = meta.get(FORMAT_KEY).map_err(storage)?.map(|v| v.value());
            match (existed, found) {
                (false, _) => {
                    meta.insert(FORMAT_KEY, FORMAT_VERSION).map_err(storage)?;
                }
                (true, Some(FORMAT_VERSION)) => {}
                // Format 1 had no format key.
                (true, found) => {
                    return Err(StoreError::Format {
                        path: "<backend>".into(),
                        found: found.unwrap_or(1),
                        supported: FORMAT_VERSION,
                    });
                }
            }
            txn.open_table(KV).map_err(storage)?;
            txn.open_table(EVENTS).map_err(storage)?;
            txn.open_table(TRANSACTIONS).map_err(storage)?;
            txn.open_table(IDEMPOTENCY).map_err(storage)?;
            txn.open_table(DEAD_LETTERS).map_err(storage)?;
            txn.open_table(LEARNT).map_err(storage)?;
            txn.open_table(EFFECTS).map_err(storage)?;
            txn.open_table(inbox::INBOX).map_err(storage)?;
            txn.open_table(inbox::INBOX_KEYS).map_err(storage)?;
            txn.open_table(inbox::SUBMISSIONS).map_err(storage)?;
            txn.open_table(streams::CONSUMER_OFFSETS).map_err(storage)?;
            txn.open_table(streams::EVENT_TIMES).map_err(storage)?;
        }
        streams::catch_up(&txn)?;
        txn.commit().map_err(storage)?;
        Ok(Self { db: Arc::new(db), live_holders: Arc::default() })
    }

    /// The latest committed version.
    pub fn version(&self) -> Result<Version, StoreError> {
        Ok(self.snapshot()?.version())
    }
}

#[derive(Debug)]
struct RedbSnapshot {
    version: Version,
    kv: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
}

impl StateSnapshot for RedbSnapshot {
    fn version(&self) -> Version {
        self.version
    }

    fn get(&self, namespace: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        match self.kv.get(kv_key(namespace, key).as_slice()).map_err(storage)? {
            Some(value) => Ok(Some(decode_value(value.value())?)),
            None => Ok(None),
        }
    }

    fn scan(&self, namespace: &str, prefix: &str, limit: usize) -> Result<Vec<(String, Versioned)>, StoreError> {
        let start = kv_key(namespace, prefix);
        let mut entries = Vec::new();
        for item in self.kv.range(start.as_slice()..).map_err(storage)? {
            if entries.len() >= limit {
                break;
            }
            let (key, value) = item.map_err(storage)?;
            let key = key.value();
            if !key.starts_with(&start) {
                break;
            }
            let name = String::from_utf8_lossy(&key[namespace.len() + 1..]).into_owned();
            entries.push((name, decode_value(value.value())?));
        }
        Ok(entries)
    }
}

impl StateStore for RedbStore {
    fn snapshot(&self) -> Result<Arc<dyn StateSnapshot>, StoreError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let version =
            txn.open_table(META).map_err(storage)?.get(VERSION_KEY).map_err(storage)?.map_or(0, |v| v.value());
        let kv = txn.open_table(KV).map_err(storage)?;
        Ok(Arc::new(RedbSnapshot { version, kv }))
    }

    fn commit(&self, request: CommitRequest) -> Result<Version, CommitError> {
        let txn = self.db.begin_write().map_err(storage)?;
        let version = apply(&txn, request)?;
        txn.commit().map_err(storage)?;
        Ok(version)
    }

    fn commit_batch(&self, requests: Vec<CommitRequest>) -> Vec<Result<Version, CommitError>> {
        let count = requests.len();
        let all_failed = |error: StoreError| (0..count).map(|_| Err(CommitError::Store(error.clone()))).collect();
        let txn = match self.db.begin_write() {
            Ok(txn) => txn,
            Err(error) => return all_failed(storage(error)),
        };
        let mut results = Vec::with_capacity(count);
        for request in requests {
            match apply(&txn, request) {
                // A storage failure leaves the write transaction unusable:
                // it is dropped, which aborts it, and every request fails.
                // A fenced request is refused before it changes anything.
                Err(CommitError::Store(error)) if !matches!(error, StoreError::Fenced { .. }) => {
                    return all_failed(error);
                }
                result => results.push(result),
            }
        }
        match txn.commit() {
            Ok(()) => results,
            Err(error) => all_failed(storage(error)),
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
        let txn = self.db.begin_write().map_err(storage)?;
        {
            if let Some(fence) = fence {
                inbox::check_fence(&txn, fence)?;
                inbox::end_if_own(&txn, fence, &record.id)?;
            }
            // A record that changes no state: its events carry the version
            // the store is at.
            if !events.is_empty() {
                let mut meta = txn.open_table(META).map_err(storage)?;
                let version = meta.get(VERSION_KEY).map_err(storage)?.map_or(0, |v| v.value());
                append_events(&txn, &mut meta, (&record.id, version), &events)?;
            }
            if let Some(letter) = &dead_letter {
                let bytes = encode_dead_letter(letter)?;
                let mut letters = txn.open_table(DEAD_LETTERS).map_err(storage)?;
                letters.insert(letter.transaction_id.as_str(), bytes.as_slice()).map_err(storage)?;
            }
            if let Some(claim) = &idempotency {
                let mut keys = txn.open_table(IDEMPOTENCY).map_err(storage)?;
                if live_claim(&keys, claim)?.is_none() {
                    put_claim(&mut keys, claim, &record.id)?;
                }
            }
            let bytes = encode_record(&record)?;
            txn.open_table(TRANSACTIONS)
                .map_err(storage)?
                .insert(record.id.as_str(), bytes.as_slice())
                .map_err(storage)?;
        }
        txn.commit().map_err(storage)
    }

    fn dead_letters(&self, after: Option<&LetterPosition>, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        // The table is keyed by id, not by time: a page is a whole scan.
        // The queue is meant to stay short (an operator's worklist).
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(DEAD_LETTERS).map_err(storage)?;
        let mut letters = Vec::new();
        for item in table.iter().map_err(storage)? {
            let (id, bytes) = item.map_err(storage)?;
            let letter = decode_dead_letter(id.value(), bytes.value())?;
            if after.is_none_or(|after| letter.position() > *after) {
                letters.push(letter);
            }
        }
        letters.sort_by_key(DeadLetter::position);
        letters.truncate(limit);
        Ok(letters)
    }

    fn dead_letter(&self, transaction_id: &str) -> Result<Option<DeadLetter>, StoreError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(DEAD_LETTERS).map_err(storage)?;
        match table.get(transaction_id).map_err(storage)? {
            Some(bytes) => decode_dead_letter(transaction_id, bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    fn remove_dead_letter(&self, transaction_id: &str) -> Result<bool, StoreError> {
        let txn = self.db.begin_write().map_err(storage)?;
        let removed = txn.open_table(DEAD_LETTERS).map_err(storage)?.remove(transaction_id).map_err(storage)?.is_some();
        txn.commit().map_err(storage)?;
        Ok(removed)
    }

    fn idempotency(&self, key: &str) -> Result<Option<IdempotencyEntry>, StoreError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(IDEMPOTENCY).map_err(storage)?;
        match table.get(key).map_err(storage)? {
            Some(bytes) => decode_claim(key, bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    fn purge_lapsed_keys(&self, now_unix_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let txn = self.db.begin_write().map_err(storage)?;
        let removed = {
            let mut keys = txn.open_table(IDEMPOTENCY).map_err(storage)?;
            let mut lapsed = Vec::new();
            for item in keys.iter().map_err(storage)? {
                if lapsed.len() >= limit {
                    break;
                }
                let (key, bytes) = item.map_err(storage)?;
                if decode_claim(key.value(), bytes.value())?.expires_unix_ms <= now_unix_ms {
                    lapsed.push(key.value().to_string());
                }
            }
            for key in &lapsed {
                keys.remove(key.as_str()).map_err(storage)?;
            }
            lapsed.len()
        };
        txn.commit().map_err(storage)?;
        Ok(removed)
    }

    fn transaction(&self, id: &str) -> Result<Option<TransactionRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(TRANSACTIONS).map_err(storage)?;
        match table.get(id).map_err(storage)? {
            Some(bytes) => decode_record(id, bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    fn transactions(&self, after: Option<&str>, limit: usize) -> Result<Vec<TransactionRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(TRANSACTIONS).map_err(storage)?;
        let range = match after {
            Some(after) => table.range::<&str>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => table.range::<&str>(..),
        }
        .map_err(storage)?;
        let mut records = Vec::new();
        for item in range.take(limit) {
            let (id, bytes) = item.map_err(storage)?;
            records.push(decode_record(id.value(), bytes.value())?);
        }
        Ok(records)
    }

    fn events(&self, stream: &str, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let txn = self.db.begin_read().map_err(storage)?;
        streams::read(&txn, stream, after, limit)
    }

    fn group_offset(&self, stream: &str, group: &str) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read().map_err(storage)?;
        streams::group_offset(&txn, stream, group)
    }

    fn acknowledge(&self, stream: &str, group: &str, offset: u64) -> Result<u64, StoreError> {
        let txn = self.db.begin_write().map_err(storage)?;
        let kept = streams::acknowledge(&txn, stream, group, offset)?;
        txn.commit().map_err(storage)?;
        Ok(kept)
    }

    fn consumer_groups(&self, stream: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let txn = self.db.begin_read().map_err(storage)?;
        streams::groups(&txn, stream)
    }

    fn purge_stream(&self, stream: &str, retention: &StreamRetention, limit: usize) -> Result<usize, StoreError> {
        let txn = self.db.begin_write().map_err(storage)?;
        let purged = streams::purge(&txn, stream, retention, limit)?;
        txn.commit().map_err(storage)?;
        Ok(purged)
    }

    fn learnt(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(LEARNT).map_err(storage)?;
        Ok(table.get(name).map_err(storage)?.map(|bytes| bytes.value().to_vec()))
    }

    fn save_learnt(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(storage)?;
        txn.open_table(LEARNT).map_err(storage)?.insert(name, bytes).map_err(storage)?;
        txn.commit().map_err(storage)
    }

    fn accept(&self, request: AcceptRequest) -> Result<Acceptance, StoreError> {
        self.accept_transaction(request)
    }

    fn record_effects(&self, writes: &[EffectWrite]) -> Vec<Result<(), StoreError>> {
        let all_failed = |error: StoreError| writes.iter().map(|_| Err(error.clone())).collect();
        let encoded: Result<Vec<Vec<u8>>, StoreError> =
            writes.iter().map(|write| encode_effect(&write.effect)).collect();
        let encoded = match encoded {
            Ok(encoded) => encoded,
            Err(error) => return all_failed(error),
        };
        let mut txn = match self.db.begin_write() {
            Ok(txn) => txn,
            Err(error) => return all_failed(storage(error)),
        };
        // Answers alone need no fsync of their own (see `record_effect`).
        if writes.iter().all(|write| write.effect.response.is_some())
            && let Err(error) = txn.set_durability(redb::Durability::None)
        {
            return all_failed(storage(error));
        }
        let mut results = Vec::with_capacity(writes.len());
        for (write, bytes) in writes.iter().zip(&encoded) {
            let written = (|| {
                if let Some(fence) = &write.fence {
                    inbox::check_fence(&txn, fence)?;
                }
                let key = effect_key(&write.transaction_id, &write.effect.path, write.effect.ordinal);
                txn.open_table(EFFECTS).map_err(storage)?.insert(key.as_str(), bytes.as_slice()).map_err(storage)?;
                Ok(())
            })();
            match written {
                Err(StoreError::Fenced { .. }) | Ok(()) => results.push(written),
                Err(error) => return all_failed(error),
            }
        }
        match txn.commit() {
            Ok(()) => results,
            Err(error) => all_failed(storage(error)),
        }
    }

    fn effects(&self, transaction_id: &str) -> Result<Vec<Effect>, StoreError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(EFFECTS).map_err(storage)?;
        let (from, to) = (format!("{transaction_id}\0"), format!("{transaction_id}\u{1}"));
        let mut effects = Vec::new();
        for item in table.range(from.as_str()..to.as_str()).map_err(storage)? {
            let (_, bytes) = item.map_err(storage)?;
            effects.push(decode_effect(transaction_id, bytes.value())?);
        }
        Ok(effects)
    }

    fn purge_effects(&self, before_unix_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let txn = self.db.begin_write().map_err(storage)?;
        let removed = {
            let records = txn.open_table(TRANSACTIONS).map_err(storage)?;
            let letters = txn.open_table(DEAD_LETTERS).map_err(storage)?;
            let mut effects = txn.open_table(EFFECTS).map_err(storage)?;
            let mut done = Vec::new();
            for item in effects.iter().map_err(storage)? {
                if done.len() >= limit {
                    break;
                }
                let (key, bytes) = item.map_err(storage)?;
                let Some((id, _)) = key.value().split_once('\0') else { continue };
                let ended = records.get(id).map_err(storage)?.is_some() && letters.get(id).map_err(storage)?.is_none();
                if ended && decode_effect(id, bytes.value())?.sent_unix_ms < before_unix_ms {
                    done.push(key.value().to_string());
                }
            }
            for key in &done {
                effects.remove(key.as_str()).map_err(storage)?;
            }
            done.len()
        };
        txn.commit().map_err(storage)?;
        Ok(removed)
    }

    fn accepted(&self, transaction_id: &str) -> Result<Option<Accepted>, StoreError> {
        self.accepted_transaction(transaction_id)
    }

    fn in_flight(&self, limit: usize) -> Result<Vec<Accepted>, StoreError> {
        self.accepted_in_flight(limit)
    }

    fn submissions(&self, before: Option<u64>, limit: usize) -> Result<Vec<(u64, String)>, StoreError> {
        self.submitted(before, limit)
    }

    fn finish(&self, fence: &Fence) -> Result<bool, StoreError> {
        self.finish_accepted(fence)
    }

    fn renew_leases(&self, holder: &str, lease_ms: u64) -> Result<usize, StoreError> {
        self.renew(holder, lease_ms)
    }

    fn take_over(&self, holder: &str, lease_ms: u64, limit: usize) -> Result<Vec<Accepted>, StoreError> {
        self.take_over_leases(holder, lease_ms, limit)
    }

    fn release_leases(&self, holder: &str) -> Result<usize, StoreError> {
        self.release(holder)
    }
}

#[cfg(test)]
mod tests {
    // What every store must do is checked on both stores by one suite
    // (`tests/all/store.rs`); what is the embedded store's own is here.
    use super::*;

    /// Events that a build without the stream index appended (to the log
    /// only) are indexed when the store is next opened.
    #[test]
    fn events_appended_without_the_index_are_indexed_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.redb");
        drop(RedbStore::open(&path).expect("create"));
        {
            let db = Database::create(&path).expect("open");
            let txn = db.begin_write().expect("write");
            {
                let mut events = txn.open_table(EVENTS).expect("events");
                for sequence in 1..=3 {
                    let event = StoredEvent {
                        sequence,
                        version: sequence,
                        transaction_id: format!("t{sequence}"),
                        stream: if sequence == 2 { "other".into() } else { "s".into() },
                        payload: vec![],
                    };
                    events.insert(sequence, encode(&event).expect("encode").as_slice()).expect("insert");
                }
                txn.open_table(META).expect("meta").insert(EVENT_SEQUENCE_KEY, 3).expect("insert");
            }
            txn.commit().expect("commit");
        }
        let store = RedbStore::open(&path).expect("open again");
        let sequences: Vec<u64> = store.events("s", 0, 10).expect("read").iter().map(|e| e.sequence).collect();
        assert_eq!(sequences, [1, 3]);
        assert_eq!(store.events("other", 0, 10).expect("read").len(), 1);
    }

    #[test]
    fn a_store_of_another_format_is_refused_naming_the_format_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        // What format 1 left: tables of JSON values and no format key.
        let old = dir.path().join("old.redb");
        {
            let db = Database::create(&old).expect("create");
            let txn = db.begin_write().expect("write");
            txn.open_table(META).expect("meta").insert(VERSION_KEY, 3).expect("insert");
            txn.open_table(TRANSACTIONS)
                .expect("transactions")
                .insert("t", b"{\"id\":\"t\"}".as_slice())
                .expect("insert");
            txn.commit().expect("commit");
        }
        let error = RedbStore::open(&old).expect_err("format 1 is refused");
        assert!(matches!(error, StoreError::Format { found: 1, supported: FORMAT_VERSION, .. }), "{error}");
        let message = error.to_string();
        assert!(message.contains("old.redb") && message.contains("format 1"), "{message}");

        // A newer build's store is refused too, and a new store opens again.
        let newer = dir.path().join("newer.redb");
        drop(RedbStore::open(&newer).expect("a new store"));
        {
            let db = Database::create(&newer).expect("open");
            let txn = db.begin_write().expect("write");
            txn.open_table(META).expect("meta").insert(FORMAT_KEY, FORMAT_VERSION + 1).expect("insert");
            txn.commit().expect("commit");
        }
        let error = RedbStore::open(&newer).expect_err("a newer format is refused");
        assert!(matches!(error, StoreError::Format { found, .. } if found == FORMAT_VERSION + 1), "{error}");
        let fresh = dir.path().join("fresh.redb");
        drop(RedbStore::open(&fresh).expect("create"));
        RedbStore::open(&fresh).expect("a store of this format opens again");
    }
}
