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
//! A commit is one SQL transaction. It first locks the `txm_meta` row
//! (`SELECT … FOR UPDATE`), which orders commits as redb's single writer
//! does, then validates the read set against each key's newest row,
//! checks the id and the idempotency key, and writes the new rows, events,
//! record and version. Nothing in it is particular to PostgreSQL beyond
//! `FOR UPDATE`, `ON CONFLICT` and `DISTINCT ON`, which CockroachDB and
//! YugabyteDB speak too; no advisory lock is used.
//!
//! [`StateStore`] is synchronous, as redb is. The store runs PostgreSQL's
//! asynchronous client on a small runtime of its own and waits for each
//! call on the caller's thread, as a redb call waits for the disk; so it
//! can be called from inside the runtime's own tasks without nesting one
//! runtime in another.

use super::codec::{decode_dead_letter, decode_record, encode_dead_letter, encode_record};
use super::{
    AcceptRequest, Acceptance, Accepted, CommitError, CommitRequest, DeadLetter, Fence, IdempotencyClaim,
    IdempotencyEntry, StateSnapshot, StateStore, StoreError, StoredEvent, TransactionOutcome, TransactionRecord,
    Version, Versioned,
};
use deadpool_postgres::{GenericClient, Pool};
use std::future::Future;
use std::sync::Arc;

mod database;
mod inbox;

use database::storage;
pub use database::{PgDatabase, int, uint, valid_schema};

/// The migrations, in order: migration `n` (from 1) takes the schema from
/// version `n - 1` to `n`.
const MIGRATIONS: &[&str] = &[MIGRATION_1, inbox::MIGRATION];

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

/// The store on a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    database: PgDatabase,
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
        Ok(Self { database: PgDatabase::connect(url, schema, MIGRATIONS)? })
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

async fn latest_version(client: &impl GenericClient) -> Result<Version, StoreError> {
    let row = client.query_one("SELECT version FROM txm_meta", &[]).await.map_err(storage)?;
    Ok(uint(row.get(0)))
}

/// The newest version of a key, 0 if absent or deleted, as a commit sees it.
async fn current_version(client: &impl GenericClient, namespace: &str, key: &str) -> Result<Version, StoreError> {
    let row = client
        .query_opt(
            "SELECT version, value IS NULL FROM txm_kv WHERE namespace = $1 AND key = $2 ORDER BY version DESC LIMIT 1",
            &[&namespace, &key],
        )
        .await
        .map_err(storage)?;
    Ok(match row {
        Some(row) if !row.get::<_, bool>(1) => uint(row.get(0)),
        _ => 0,
    })
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
    let claimed = client
        .execute(
            "INSERT INTO txm_idempotency (key, transaction_id, expires_unix_ms) VALUES ($1, $2, $3)
             ON CONFLICT (key) DO UPDATE SET transaction_id = EXCLUDED.transaction_id,
             expires_unix_ms = EXCLUDED.expires_unix_ms
             WHERE txm_idempotency.expires_unix_ms <= $4",
            &[&claim.key, &transaction_id, &expires, &int(claim.now_unix_ms)],
        )
        .await
        .map_err(storage)?;
    if claimed == 1 {
        return Ok(None);
    }
    let holder = client
        .query_one("SELECT transaction_id FROM txm_idempotency WHERE key = $1", &[&claim.key])
        .await
        .map_err(storage)?;
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

/// One commit, in one SQL transaction (see the module's documentation).
async fn commit(pool: Pool, request: CommitRequest) -> Result<Version, CommitError> {
    let mut client = pool.get().await.map_err(storage)?;
    let txn = client.transaction().await.map_err(storage)?;
    let meta = txn.query_one("SELECT version, event_sequence FROM txm_meta FOR UPDATE", &[]).await.map_err(storage)?;
    let (latest, mut sequence) = (uint(meta.get(0)), uint(meta.get(1)));
    if let Some(fence) = &request.fence {
        inbox::check_fence(&txn, fence, &request.record.id).await?;
    }
    for read in &request.reads {
        read.check(current_version(&txn, &read.namespace, &read.key).await?)?;
    }
    let duplicate =
        txn.query_opt("SELECT 1 FROM txm_transactions WHERE id = $1", &[&request.record.id]).await.map_err(storage)?;
    if duplicate.is_some() {
        return Err(CommitError::DuplicateId(request.record.id.clone()));
    }
    if let Some(wanted) = &request.idempotency
        && let Some(holder) = claim(&txn, wanted, &request.record.id).await?
    {
        return Err(CommitError::DuplicateIdempotencyKey { key: wanted.key.clone(), transaction_id: holder });
    }
    let version = latest + 1;
    for write in &request.writes {
        txn.execute(
            "INSERT INTO txm_kv (namespace, key, version, value) VALUES ($1, $2, $3, $4)",
            &[&write.namespace, &write.key, &int(version), &write.value],
        )
        .await
        .map_err(storage)?;
    }
    for event in &request.events {
        sequence += 1;
        txn.execute(
            "INSERT INTO txm_events (sequence, version, transaction_id, stream, payload) VALUES ($1, $2, $3, $4, $5)",
            &[&int(sequence), &int(version), &request.record.id, &event.stream, &event.payload],
        )
        .await
        .map_err(storage)?;
    }
    txn.execute("UPDATE txm_meta SET version = $1, event_sequence = $2", &[&int(version), &int(sequence)])
        .await
        .map_err(storage)?;
    let mut record = request.record;
    if let TransactionOutcome::Committed { version: committed, .. } = &mut record.outcome {
        *committed = version;
    }
    put_record(&txn, &record).await?;
    txn.commit().await.map_err(storage)?;
    Ok(version)
}

/// A read view at one version: only the number, and the store to ask.
#[derive(Debug)]
struct PostgresSnapshot {
    version: Version,
    store: PostgresStore,
}

impl StateSnapshot for PostgresSnapshot {
    fn version(&self) -> Version {
        self.version
    }

    fn get(&self, namespace: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        let (namespace, key, at) = (namespace.to_string(), key.to_string(), int(self.version));
        self.store.block(|pool| async move {
            let client = pool.get().await.map_err(storage)?;
            let row = client
                .query_opt(
                    "SELECT version, value FROM txm_kv WHERE namespace = $1 AND key = $2 AND version <= $3
                     ORDER BY version DESC LIMIT 1",
                    &[&namespace, &key, &at],
                )
                .await
                .map_err(storage)?;
            Ok(row.and_then(|row| {
                let value: Option<Vec<u8>> = row.get(1);
                value.map(|value| Versioned { version: uint(row.get(0)), value })
            }))
        })
    }

    fn scan(&self, namespace: &str, prefix: &str, limit: usize) -> Result<Vec<(String, Versioned)>, StoreError> {
        let (namespace, pattern, at) = (namespace.to_string(), like_prefix(prefix), int(self.version));
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
        let version = self.version()?;
        Ok(Arc::new(PostgresSnapshot { version, store: self.clone() }))
    }

    fn commit(&self, request: CommitRequest) -> Result<Version, CommitError> {
        self.block(|pool| commit(pool, request))
    }

    fn record_outcome(
        &self,
        record: TransactionRecord,
        idempotency: Option<IdempotencyClaim>,
        dead_letter: Option<DeadLetter>,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        let fence = fence.cloned();
        self.block(|pool| async move {
            let mut client = pool.get().await.map_err(storage)?;
            let txn = client.transaction().await.map_err(storage)?;
            if let Some(fence) = &fence {
                inbox::check_fence(&txn, fence, &record.id).await?;
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

    fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let limit = int(limit as u64);
        self.block(|pool| async move {
            let client = pool.get().await.map_err(storage)?;
            let rows = client
                .query(
                    "SELECT transaction_id, letter FROM txm_dead_letters
                     ORDER BY dead_lettered_unix_ms, transaction_id LIMIT $1",
                    &[&limit],
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
