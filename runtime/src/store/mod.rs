//! The transactional key-value store.
//!
//! [`StateStore`] is the seam between the runtime and a storage engine. It
//! is shaped for an embedded engine ([`RedbStore`]) as much as for a
//! networked SQL database: a snapshot is a consistent read view at one
//! version, and a commit validates a read set and applies a write set,
//! events and a transaction record in one atomic, durable step.
//!
//! The on-disk format of the embedded store is described in `docs/design.md`.
//! [`PostgresStore`] keeps the same data on a PostgreSQL database.

mod codec;
mod dead_letter;
mod effects;
mod fault;
mod group_commit;
mod inbox;
mod journal_writes;
pub mod postgres;
mod record;
mod redb_store;
mod retention;

pub use dead_letter::{Compensation, DeadLetter, LetterPosition};
pub use effects::{Effect, EffectResponse, EffectWrite};
pub use fault::{FaultInjectingBackend, FaultPlan};
pub(crate) use group_commit::GroupCommit;
pub use group_commit::{DEFAULT_BATCH_LIMIT, GroupCommitStats};
pub use inbox::{AcceptRequest, Acceptance, Accepted, Fence, Lease};
pub(crate) use journal_writes::JournalWrites;
pub use postgres::{PgDatabase, PostgresStore};
pub use record::{Attempt, AttemptOutcome, History, TransactionOutcome, TransactionRecord};
pub use redb_store::RedbStore;
pub use retention::StreamRetention;
// Names are checked where they enter; the store keeps them as given.
pub use crate::vocab::{MAX_NAME_LEN, validate_name};

use std::future::Future;
use std::sync::Arc;

/// A commit version. Version 0 is the empty store; each commit adds one.
pub type Version = u64;

/// A value together with the version of the commit that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The version of the commit that last wrote this key.
    pub version: Version,
    /// The value.
    pub value: Vec<u8>,
}

/// A key read by a transaction, and the version it saw (0 if absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEntry {
    /// The namespace.
    pub namespace: String,
    /// The key.
    pub key: String,
    /// The version seen, or 0 if the key was absent.
    pub version: Version,
}

impl ReadEntry {
    /// Refuses the commit if the key has moved since it was read: `current`
    /// is its version now (0 if absent).
    pub(crate) fn check(&self, current: Version) -> Result<(), CommitError> {
        if current == self.version {
            return Ok(());
        }
        Err(CommitError::Conflict {
            namespace: self.namespace.clone(),
            key: self.key.clone(),
            read_version: self.version,
            current_version: current,
        })
    }
}

/// A write of a transaction: `None` deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteEntry {
    /// The namespace.
    pub namespace: String,
    /// The key.
    pub key: String,
    /// The new value, or `None` to delete.
    pub value: Option<Vec<u8>>,
}

/// An event to append to a stream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventEntry {
    /// The stream.
    pub stream: String,
    /// The payload.
    pub payload: Vec<u8>,
}

/// An event as stored, with its position.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredEvent {
    /// Position in the global event log, from 1.
    pub sequence: u64,
    /// The commit that emitted it.
    pub version: Version,
    /// The transaction that emitted it.
    pub transaction_id: String,
    /// The stream.
    pub stream: String,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Everything one transaction commits.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    /// Keys read, with the versions seen; any that moved refuses the commit.
    pub reads: Vec<ReadEntry>,
    /// Keys written.
    pub writes: Vec<WriteEntry>,
    /// Events emitted.
    pub events: Vec<EventEntry>,
    /// The transaction record, stored with the state.
    pub record: TransactionRecord,
    /// The idempotency key the transaction claims, stored with the state.
    pub idempotency: Option<IdempotencyClaim>,
    /// The lease the commit is made under, checked in the commit; if it is
    /// the transaction's own (not a compensation's), the commit ends it.
    pub fence: Option<Fence>,
}

/// A transaction's claim on an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyClaim {
    /// The key.
    pub key: String,
    /// Now, in milliseconds since the Unix epoch.
    pub now_unix_ms: u64,
    /// How long the key stays claimed, in milliseconds.
    pub retention_ms: u64,
}

/// What an idempotency key is bound to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdempotencyEntry {
    /// The transaction that claimed the key.
    pub transaction_id: String,
    /// When the claim lapses, in milliseconds since the Unix epoch.
    pub expires_unix_ms: u64,
}

/// What [`StateStore::latest_versions_async`] answers.
pub type VersionsFuture<'a> = std::pin::Pin<Box<dyn Future<Output = Result<Vec<Version>, StoreError>> + Send + 'a>>;

/// What [`StateSnapshot::get_async`] answers.
pub type ReadFuture<'a> = std::pin::Pin<Box<dyn Future<Output = Result<Option<Versioned>, StoreError>> + Send + 'a>>;

/// A consistent read view of the store at one version.
pub trait StateSnapshot: Send + Sync + std::fmt::Debug {
    /// The version this snapshot reads at.
    fn version(&self) -> Version;
    /// The value of a key at this version.
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Versioned>, StoreError>;
    /// As [`StateSnapshot::get`], awaited rather than blocked on: a guest's
    /// read from a networked store leaves its thread to other instances
    /// while the answer travels. The default answers at once with `get`,
    /// right for an embedded store, whose reads do not wait on a network.
    fn get_async<'a>(&'a self, namespace: &'a str, key: &'a str) -> ReadFuture<'a> {
        Box::pin(std::future::ready(self.get(namespace, key)))
    }
    /// Up to `limit` entries of `namespace` whose key starts with `prefix`, in key order.
    fn scan(&self, namespace: &str, prefix: &str, limit: usize) -> Result<Vec<(String, Versioned)>, StoreError>;
}

/// A transactional, durable key-value store.
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// A read view at one committed version, no older than the latest at
    /// this call. Its view is fixed at the latest no later than its first
    /// read (an embedded store fixes it now; a networked one with that
    /// read, saving a statement): any committed version is a consistent
    /// view, and a commit validates the version of every key it read.
    fn snapshot(&self) -> Result<Arc<dyn StateSnapshot>, StoreError>;
    /// Validates `request.reads` against the current versions and, if none
    /// moved, applies the writes, events and record atomically and durably.
    fn commit(&self, request: CommitRequest) -> Result<Version, CommitError>;
    /// The newest version of each key (0 if absent), one per key, in order:
    /// what a commit's read-set check would compare against now.
    ///
    /// The default reads them from a fresh snapshot.
    fn latest_versions(&self, keys: &[(String, String)]) -> Result<Vec<Version>, StoreError> {
        let snapshot = self.snapshot()?;
        keys.iter().map(|(namespace, key)| Ok(snapshot.get(namespace, key)?.map_or(0, |v| v.version))).collect()
    }
    /// As [`StateStore::latest_versions`], awaited rather than blocked on
    /// (see [`StateSnapshot::get_async`]). The default answers at once.
    fn latest_versions_async<'a>(&'a self, keys: &'a [(String, String)]) -> VersionsFuture<'a> {
        Box::pin(std::future::ready(self.latest_versions(keys)))
    }
    /// Commits several transactions in one atomic, durable step (group
    /// commit: one fsync for all), with one result per request, in order.
    /// Each request is validated against the state left by the ones before
    /// it, and one that is refused (a conflict, a duplicate) leaves the
    /// others alone; a storage failure fails them all and applies nothing.
    ///
    /// The default commits them one at a time.
    fn commit_batch(&self, requests: Vec<CommitRequest>) -> Vec<Result<Version, CommitError>> {
        requests.into_iter().map(|request| self.commit(request)).collect()
    }
    /// As [`StateStore::commit_batch`], with the batch closed as late as
    /// the store can: `more` is called once, when the store is ready to
    /// apply the batch, for the requests that arrived since `requests` were
    /// taken; the results are `requests`' then those, in order. On a store
    /// whose commits wait for one another's (PostgreSQL's, several nodes
    /// on one database), the wait grows the batch instead of delaying
    /// whatever arrives during it. If the store fails before it is ready,
    /// `more` is not called.
    ///
    /// The default calls `more` at once.
    fn commit_batch_open(
        &self,
        mut requests: Vec<CommitRequest>,
        more: &mut dyn FnMut() -> Vec<CommitRequest>,
    ) -> Vec<Result<Version, CommitError>> {
        requests.extend(more());
        self.commit_batch(requests)
    }
    /// Stores the record of a transaction that changes no state (a failure),
    /// with its idempotency claim unless the key is claimed already, its
    /// dead letter if it has one, and `events` (at the store's current
    /// version), atomically; under `fence`, as a commit is.
    fn record_outcome(
        &self,
        record: TransactionRecord,
        idempotency: Option<IdempotencyClaim>,
        dead_letter: Option<DeadLetter>,
        fence: Option<&Fence>,
        events: Vec<EventEntry>,
    ) -> Result<(), StoreError>;
    /// Dead letters in the queue's order (oldest first, then by id), at
    /// most `limit`, starting after `after` if given: a page of the queue.
    fn dead_letters(&self, after: Option<&LetterPosition>, limit: usize) -> Result<Vec<DeadLetter>, StoreError>;
    /// One dead letter.
    fn dead_letter(&self, transaction_id: &str) -> Result<Option<DeadLetter>, StoreError>;
    /// Removes a dead letter; whether it was there.
    fn remove_dead_letter(&self, transaction_id: &str) -> Result<bool, StoreError>;
    /// What an idempotency key is bound to, lapsed or not.
    fn idempotency(&self, key: &str) -> Result<Option<IdempotencyEntry>, StoreError>;
    /// Removes up to `limit` idempotency keys whose claim lapsed at or
    /// before `now_unix_ms`; how many it removed. A lapsed key binds
    /// nothing, so removing it changes no answer, only the store's size.
    fn purge_lapsed_keys(&self, now_unix_ms: u64, limit: usize) -> Result<usize, StoreError>;
    /// The record of a transaction.
    fn transaction(&self, id: &str) -> Result<Option<TransactionRecord>, StoreError>;
    /// Transaction records in id order, after `after` (exclusive) if given,
    /// at most `limit`: page through them by passing the last id back.
    fn transactions(&self, after: Option<&str>, limit: usize) -> Result<Vec<TransactionRecord>, StoreError>;
    /// Events of `stream` from sequence `after` (exclusive), at most
    /// `limit`, in sequence order, in time proportional to what is read.
    fn events(&self, stream: &str, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError>;
    /// The last sequence consumer group `group` acknowledged on `stream`;
    /// `None` for a group that never acknowledged.
    fn group_offset(&self, stream: &str, group: &str) -> Result<Option<u64>, StoreError>;
    /// Moves `group`'s offset on `stream` forward to `offset`, durably, and
    /// never back (an older acknowledgement, late or repeated, changes
    /// nothing); the offset the group has now.
    fn acknowledge(&self, stream: &str, group: &str, offset: u64) -> Result<u64, StoreError>;
    /// The consumer groups of `stream` and their offsets, by name.
    fn consumer_groups(&self, stream: &str) -> Result<Vec<(String, u64)>, StoreError>;
    /// Removes up to `limit` of the oldest events of `stream` that
    /// `retention` lets go (stopping at the first it keeps); how many.
    fn purge_stream(&self, stream: &str, retention: &StreamRetention, limit: usize) -> Result<usize, StoreError>;
    /// What the runtime last saved under `name` of what it has learnt (the
    /// online model); the store keeps the bytes as given and never reads them.
    fn learnt(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Saves what the runtime has learnt under `name`, replacing what was there.
    fn save_learnt(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError>;

    /// Accepts a transaction durably, leased to `request.holder` at epoch
    /// 1, unless its id is taken or another transaction holds its
    /// idempotency key (see [`Acceptance`]).
    fn accept(&self, request: AcceptRequest) -> Result<Acceptance, StoreError>;
    /// An accepted transaction that has not ended.
    fn accepted(&self, transaction_id: &str) -> Result<Option<Accepted>, StoreError>;
    /// Accepted transactions that have not ended, oldest first, at most `limit`.
    fn in_flight(&self, limit: usize) -> Result<Vec<Accepted>, StoreError>;
    /// The ids of accepted transactions, ended or not, newest first: those
    /// before sequence `before` (exclusive) if given, at most `limit`.
    fn submissions(&self, before: Option<u64>, limit: usize) -> Result<Vec<(u64, String)>, StoreError>;
    /// Ends an accepted transaction whose record is stored, if `fence` is
    /// still its lease; whether it did.
    fn finish(&self, fence: &Fence) -> Result<bool, StoreError>;
    /// Extends every lease `holder` holds to `lease_ms` from now; how many.
    fn renew_leases(&self, holder: &str, lease_ms: u64) -> Result<usize, StoreError>;
    /// Takes over up to `limit` accepted transactions whose leases lapsed
    /// and that another holder held, oldest first: each is leased to
    /// `holder` for `lease_ms` at the next epoch, so that the writes of its
    /// previous holder are refused from now on. Two holders taking over at
    /// once never take the same transaction. A store that one process
    /// holds alone (redb) also takes, lapsed or not, the leases of holders
    /// that never wrote through its handle: they were a process that ended.
    fn take_over(&self, holder: &str, lease_ms: u64, limit: usize) -> Result<Vec<Accepted>, StoreError>;
    /// Lets every lease `holder` holds lapse now, for another node to take
    /// over at once (a node that drains); how many.
    fn release_leases(&self, holder: &str) -> Result<usize, StoreError>;

    /// Writes `effect` into the journal of `transaction_id`, replacing the
    /// entry of the same path and ordinal: before the call is sent (its
    /// intent, durable when this returns) and after it is answered (its
    /// response, durable with the store's next durable write at the latest,
    /// which the transaction's own commit or record is: lost in a crash
    /// before that, the call is only in doubt again). Under `fence`,
    /// refused with [`StoreError::Fenced`] once another node took the
    /// transaction over, so a stalled node never sends what it no longer owns.
    fn record_effect(&self, transaction_id: &str, effect: &Effect, fence: Option<&Fence>) -> Result<(), StoreError> {
        let write =
            EffectWrite { transaction_id: transaction_id.to_string(), effect: effect.clone(), fence: fence.cloned() };
        self.record_effects(std::slice::from_ref(&write)).pop().unwrap_or(Err(StoreError::Committer(None)))
    }
    /// Several writes of [`StateStore::record_effect`], of any transactions,
    /// in one step: one durable write for all the intents among them (none
    /// of its own when all are answers). Each has its own result; one
    /// refused by its fence leaves the others alone, and a storage failure
    /// fails them all.
    fn record_effects(&self, writes: &[EffectWrite]) -> Vec<Result<(), StoreError>>;
    /// The journal of `transaction_id`: its effects by path, then ordinal.
    fn effects(&self, transaction_id: &str) -> Result<Vec<Effect>, StoreError>;
    /// Removes up to `limit` journal entries last sent before
    /// `before_unix_ms` whose transaction has ended (its record is written)
    /// and is not a dead letter (whose replay and operator still need
    /// them); how many it removed.
    fn purge_effects(&self, before_unix_ms: u64, limit: usize) -> Result<usize, StoreError>;
}

/// What made the storage engine fail, kept as a [`StoreError`]'s source.
///
/// Shared rather than boxed because one failure of a group commit answers
/// every transaction of the group (see [`StateStore::commit_batch`]).
pub type StorageCause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// A storage failure. The engine's own error, where there is one, is the
/// [`source`](std::error::Error::source) of the variant.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened.
    #[error("cannot open the store at {path}")]
    Open {
        /// The database file.
        path: String,
        /// Why.
        #[source]
        source: StorageCause,
    },
    /// The storage engine failed (I/O error, corruption it detected).
    #[error("the storage engine failed")]
    Storage(#[source] StorageCause),
    /// A value could not be encoded for storage.
    #[error("cannot encode {what} for the store")]
    Encode {
        /// Which value.
        what: &'static str,
        /// Why.
        #[source]
        source: StorageCause,
    },
    /// The thread that commits queued transactions could not be started or
    /// has stopped; nothing more can be committed through it.
    #[error("the committer thread is not running")]
    Committer(#[source] Option<StorageCause>),
    /// The store was written in a format this build does not read.
    #[error(
        "the store at {path} is in format {found}; this build reads format {supported} only \
         (start a new data directory or database, or open this one with the build that wrote it)"
    )]
    Format {
        /// The database file.
        path: String,
        /// The format found.
        found: u64,
        /// The format this build reads and writes.
        supported: u64,
    },
    /// A write was made under a lease that another node has taken over
    /// since, or that has ended: the transaction is no longer this writer's.
    #[error(
        "transaction `{transaction_id}` is no longer leased at epoch {epoch} (now: {}); another node has taken it over",
        current.map_or_else(|| "ended".to_string(), |epoch| format!("epoch {epoch}"))
    )]
    Fenced {
        /// The accepted transaction.
        transaction_id: String,
        /// The epoch the write was made under.
        epoch: u64,
        /// The lease's epoch now, if the transaction is still in flight.
        current: Option<u64>,
    },
    /// A stored value could not be decoded.
    #[error("corrupt record {what}: {reason}")]
    Corrupt {
        /// Which record.
        what: String,
        /// Why.
        reason: String,
    },
}

impl StoreError {
    /// A failure of the storage engine, with `cause` as its source.
    pub fn storage(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Storage(Arc::new(cause))
    }
}

/// Why a commit did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// A key the transaction read was changed by another commit since.
    #[error("conflict on {namespace}/{key}: read at version {read_version}, now at {current_version}")]
    Conflict {
        /// The namespace.
        namespace: String,
        /// The key.
        key: String,
        /// The version the transaction read.
        read_version: Version,
        /// The version committed since.
        current_version: Version,
    },
    /// A transaction with this id is already recorded.
    #[error("transaction `{0}` is already recorded")]
    DuplicateId(String),
    /// Another transaction holds the idempotency key.
    #[error("idempotency key `{key}` is held by transaction `{transaction_id}`")]
    DuplicateIdempotencyKey {
        /// The key.
        key: String,
        /// The transaction holding it.
        transaction_id: String,
    },
    /// The commit failed in storage; nothing of it was applied.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The view of an empty store, for running `init` and `paths` at load time.
#[derive(Debug)]
pub(crate) struct EmptySnapshot;

impl StateSnapshot for EmptySnapshot {
    fn version(&self) -> Version {
        0
    }

    fn get(&self, _namespace: &str, _key: &str) -> Result<Option<Versioned>, StoreError> {
        Ok(None)
    }

    fn scan(&self, _namespace: &str, _prefix: &str, _limit: usize) -> Result<Vec<(String, Versioned)>, StoreError> {
        Ok(Vec::new())
    }
}
