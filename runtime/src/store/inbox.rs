//! Accepted transactions, their leases and their fences.
//!
//! A service acknowledges a transaction only once the store holds it
//! ([`StateStore::accept`](super::StateStore::accept)): its id, its
//! idempotency key and the request (bytes the store never reads), leased to
//! the node that runs it. The owner renews its leases; when it stops
//! renewing (it died, or stalled), another node takes the lapsed lease
//! over, which raises the lease's **epoch**. Every write the transaction
//! makes carries the epoch it runs under as a [`Fence`], checked inside the
//! same storage transaction as the write: a node that wakes up after its
//! lease was taken cannot commit, so the transaction's effects are written
//! once, by the lease's current holder.
//!
//! Lease times are the store's own clock (the database's, for PostgreSQL),
//! never a node's: nodes whose clocks disagree still agree on what lapsed.

/// Who holds an accepted transaction, and until when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    /// The node holding it (its id for this run of the process).
    pub holder: String,
    /// Raised by one at each takeover; writes under an older epoch are refused.
    pub epoch: u64,
    /// When the lease lapses unless renewed, in milliseconds since the Unix
    /// epoch on the store's clock.
    pub expires_unix_ms: u64,
}

/// A transaction accepted and not yet ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Its id.
    pub transaction_id: String,
    /// Its idempotency key, if it has one: no other transaction can be
    /// accepted with the key while this one is in flight.
    pub idempotency_key: Option<String>,
    /// The request as the service encoded it; the store never reads it.
    pub request: Vec<u8>,
    /// Its place among the store's acceptances, from 1.
    pub sequence: u64,
    /// Its lease.
    pub lease: Lease,
}

/// A transaction to accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptRequest {
    /// Its id.
    pub transaction_id: String,
    /// Its idempotency key, if it has one.
    pub idempotency_key: Option<String>,
    /// The request, as bytes the store keeps and never reads.
    pub request: Vec<u8>,
    /// The node that will run it.
    pub holder: String,
    /// How long the lease lasts before it must be renewed, in milliseconds.
    pub lease_ms: u64,
    /// Now, in milliseconds since the Unix epoch, for the idempotency key's
    /// claims (which lapse on the clock of the nodes that write them).
    pub now_unix_ms: u64,
}

/// What became of an [`AcceptRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Acceptance {
    /// Accepted, durably, and leased to the requester at epoch 1.
    Accepted {
        /// Its place among the store's acceptances.
        sequence: u64,
        /// Its lease.
        lease: Lease,
    },
    /// Another transaction holds the idempotency key: one in flight, or one
    /// recorded whose claim has not lapsed. Nothing was accepted.
    KeyHeld {
        /// The transaction holding it.
        transaction_id: String,
    },
    /// A transaction with this id is in flight or recorded already.
    IdTaken,
}

/// The lease a write is made under: the accepted transaction's id (a
/// compensation writes under the lease of the transaction it compensates)
/// and the epoch its writer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The accepted transaction.
    pub transaction_id: String,
    /// The epoch of the lease its writer holds.
    pub epoch: u64,
}

impl Fence {
    /// Refuses a write unless `current` (the lease's epoch now, `None` if
    /// the transaction is no longer in flight) is the fence's epoch.
    pub(crate) fn check(&self, current: Option<u64>) -> Result<(), super::StoreError> {
        if current == Some(self.epoch) {
            return Ok(());
        }
        Err(super::StoreError::Fenced { transaction_id: self.transaction_id.clone(), epoch: self.epoch, current })
    }

    /// Whether a write of the record `record_id` ends the accepted
    /// transaction (it is the transaction's own record, not that of its
    /// compensation).
    pub(crate) fn ends_with(&self, record_id: &str) -> bool {
        self.transaction_id == record_id
    }
}
