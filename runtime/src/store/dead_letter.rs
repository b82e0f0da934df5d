//! The dead-letter queue: transactions that failed on every path.

use super::{History, TransactionOutcome};
use crate::vocab::Failure;
use serde::{Deserialize, Serialize};

/// What became of the compensation path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compensation {
    /// The compensation path.
    pub path: String,
    /// Its own transaction id.
    pub transaction_id: String,
    /// How it ended.
    pub outcome: TransactionOutcome,
}

/// A transaction that failed on every path and every retry, kept with its
/// whole history so that an operator can inspect and replay it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The transaction id.
    pub transaction_id: String,
    /// The module's content hash; a replay needs the same module.
    pub module: String,
    /// The path the transaction was asked to run.
    pub path: String,
    /// The input, as received.
    pub input: Vec<u8>,
    /// The last failure.
    pub failure: Failure,
    /// Every attempt, with traces and predictions, encoded by the runtime.
    pub attempts: History,
    /// The compensation path's run, if the policy names one.
    pub compensation: Option<Compensation>,
    /// When it was dead-lettered, in milliseconds since the Unix epoch.
    pub dead_lettered_unix_ms: u64,
    /// The request's idempotency key, which its replay claims in turn.
    pub idempotency_key: Option<String>,
}

/// A letter's place in the queue, whose order is oldest first and then by
/// transaction id: where a page of letters starts (after it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LetterPosition {
    /// When the letter was written, in milliseconds since the Unix epoch.
    pub dead_lettered_unix_ms: u64,
    /// Its transaction id, which orders letters written in one millisecond.
    pub transaction_id: String,
}

impl DeadLetter {
    /// The letter's place in the queue.
    pub fn position(&self) -> LetterPosition {
        LetterPosition {
            dead_lettered_unix_ms: self.dead_lettered_unix_ms,
            transaction_id: self.transaction_id.clone(),
        }
    }
}
