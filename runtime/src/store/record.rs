//! The durable record of a transaction, as the store keeps it.
//!
//! The store knows outcomes and attempts as typed values, and the attempts'
//! whole story (traces, predictions, gate decisions) only as a [`History`]:
//! bytes the runtime encodes and decodes, which the store never reads.

use crate::vocab::FailureKind;
use serde::{Deserialize, Serialize};

/// How a transaction ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TransactionOutcome {
    /// Committed at this version, with this output.
    Committed {
        /// The commit version.
        version: u64,
        /// The path's output (JSON bytes, as the guest returned them).
        output: Vec<u8>,
    },
    /// Failed; nothing was committed.
    Failed {
        /// The kind of the last failure.
        kind: FailureKind,
        /// A readable message.
        message: String,
    },
}

/// One attempt of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// From 1.
    pub number: u32,
    /// The path run.
    pub path: String,
    /// What happened.
    pub outcome: AttemptOutcome,
    /// The store version the attempt read at.
    pub snapshot_version: u64,
    /// How long it took, in microseconds.
    pub duration_micros: u64,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// It committed.
    Committed,
    /// It failed with this kind and message.
    Failed {
        /// The failure kind.
        kind: FailureKind,
        /// A readable message.
        message: String,
    },
}

/// The attempts' whole story, encoded by the runtime: the store keeps these
/// bytes as given and never reads them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct History(Vec<u8>);

impl History {
    /// A history of these bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether there is no history (a transaction that never ran).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The durable record of a transaction, written atomically with its state.
#[derive(Debug, Clone, PartialEq)]
pub struct TransactionRecord {
    /// The transaction id.
    pub id: String,
    /// The content hash of the module.
    pub module: String,
    /// The path that ended the transaction.
    pub path: String,
    /// BLAKE3 hash of the input, hex.
    pub input_hash: String,
    /// How it ended.
    pub outcome: TransactionOutcome,
    /// Every attempt, in order.
    pub attempts: Vec<Attempt>,
    /// Every attempt's report (both twins' traces, predictions and gate
    /// decisions), encoded by the runtime.
    pub history: History,
}
