//! Transactions as the runtime's callers see them: requests, reports, and
//! the durable records and dead letters with their histories decoded.

mod dead_letter_filter;
pub(crate) mod history;
pub(crate) mod path_order;
pub(crate) mod plan;
mod predicted;
pub(crate) mod split;
pub mod split_report;
pub(crate) mod status;

use crate::store::{
    Attempt, Compensation, DeadLetter, Effect, Fence, StoreError, TransactionOutcome, TransactionRecord,
};
use crate::trace::Trace;
use crate::vocab::{CancelToken, Failure};
use serde::{Deserialize, Serialize};

pub use dead_letter_filter::DeadLetterFilter;
pub(crate) use predicted::PredictedStreams;
pub use predicted::{KEPT_NOTICES, NoticeKind, PredictionNotice, PredictionStats};

/// A request to run one transaction.
#[derive(Debug, Clone, Default)]
pub struct TxRequest {
    /// The transaction id; a fresh one is generated if unset.
    pub transaction_id: Option<String>,
    /// The path to run; the policy's default path if unset.
    pub path: Option<String>,
    /// The input document (JSON for guests built with the Rust SDK).
    pub input: Vec<u8>,
    /// A key that makes the request idempotent: while the key's claim lasts
    /// (`idempotency.retention_secs`), a request with the same key runs
    /// nothing and gets the first one's outcome.
    pub idempotency_key: Option<String>,
    /// Who sends it (a service token's name, say), for the prior of
    /// adaptive mirroring (`[mirror] mode = "adaptive"`); one anonymous
    /// caller if unset.
    pub caller: Option<String>,
    /// The caller's profile (`[profiles.NAME]` in the policy), which
    /// weighs the order of the paths; the policy's `default` if unset.
    pub profile: Option<String>,
    /// The lease the transaction runs under, when a service accepted it
    /// (see [`Fence`]): its commit, or its failure's record, is refused
    /// once another node has taken the lease over.
    pub fence: Option<Fence>,
    /// The flag a caller sets to stop the transaction (see [`CancelToken`]);
    /// `None` if nobody can cancel it.
    pub cancel: Option<CancelToken>,
    /// Whom to tell of the transaction's end (a webhook's name, say):
    /// copied, unread, into its event on the status stream, when the runtime
    /// publishes statuses (see `Runtime::publish_statuses`).
    pub notify: Option<String>,
}

/// One attempt, with the traces of both twins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptReport {
    /// What is stored durably about the attempt.
    pub attempt: Attempt,
    /// The primary's trace.
    pub primary: Trace,
    /// The mirror's trace, if the mirror ran.
    pub mirror: Option<Trace>,
    /// The predictor's verdict on the mirror's trace, if the mirror ran.
    pub prediction: Option<crate::predict::Prediction>,
    /// The prediction at the gate before the primary's first unsafe call,
    /// on the mirror's trace so far: the one the gate acted on.
    #[serde(default)]
    pub gate_prediction: Option<crate::predict::Prediction>,
    /// The attempt was in the policy's exploration share: it ran without any
    /// adjustment, so its outcome is an honest label.
    #[serde(default)]
    pub explored: bool,
    /// The attempt ran as the hedge of another: which, when, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hedge: Option<HedgeStart>,
    /// On a transaction's first attempt, when the policy describes its
    /// paths: the order they are tried in, and each one's reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path_order: Vec<path_order::PathChoice>,
    /// On a transaction's first attempt, when the policy splits its
    /// transactions (`[split]`): the arm it ran on (`control`: the usual
    /// order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_arm: Option<String>,
}

/// When and why a hedge started beside its primary attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HedgeStart {
    /// The number of the attempt it hedged.
    pub of_attempt: u32,
    /// How long that attempt had run when the hedge started (µs).
    pub after_micros: u64,
    /// What started it.
    pub by: HedgeTrigger,
}

/// What started a hedge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HedgeTrigger {
    /// The primary ran longer than the policy's `[hedge]` delay.
    Delay,
    /// The primary's gate asked for it: the predictor doubted the primary.
    Predictor,
}

/// The whole story of one transaction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TxReport {
    /// The transaction id.
    pub transaction_id: String,
    /// The module's content hash.
    pub module: String,
    /// The last path run.
    pub path: String,
    /// How it ended.
    pub outcome: TransactionOutcome,
    /// The kind of the last failure, if it failed.
    pub failure: Option<Failure>,
    /// Every attempt, with the traces of both twins.
    pub attempts: Vec<AttemptReport>,
    /// Whether this is the recorded outcome of an earlier request with the
    /// same idempotency key, rather than an execution of its own.
    #[serde(default)]
    pub deduplicated: bool,
}

impl TxReport {
    /// The report of a recorded transaction, as answered to a duplicate.
    pub fn from_record(record: RecordedTransaction) -> Self {
        let failure = match &record.outcome {
            TransactionOutcome::Failed { kind, message } => Some(Failure { kind: *kind, message: message.clone() }),
            _ => None,
        };
        Self {
            transaction_id: record.id,
            module: record.module,
            path: record.path,
            outcome: record.outcome,
            failure,
            attempts: record.history,
            deduplicated: true,
        }
    }

    /// The commit version, if it committed.
    pub fn commit_version(&self) -> Option<u64> {
        match &self.outcome {
            TransactionOutcome::Committed { version, .. } => Some(*version),
            _ => None,
        }
    }

    /// The output decoded as JSON, if it committed with a JSON output.
    pub fn output_json(&self) -> Option<serde_json::Value> {
        match &self.outcome {
            TransactionOutcome::Committed { output, .. } => serde_json::from_slice(output).ok(),
            _ => None,
        }
    }
}

/// What a transaction would do: the mirror's run alone, with no effect.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DryRun {
    /// The path run.
    pub path: String,
    /// The mirror's trace.
    pub trace: Trace,
    /// The output, or why the path failed.
    pub result: Result<String, Failure>,
}

/// A transaction's durable record, with its history decoded: what
/// `txmirror tx show` and `GET /v1/transactions/{id}` tell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedTransaction {
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
    /// Every attempt's report: traces of both twins, predictions and gate
    /// decisions.
    pub history: Vec<AttemptReport>,
}

impl RecordedTransaction {
    /// The record with its history decoded.
    pub(crate) fn decode(record: TransactionRecord) -> Result<Self, StoreError> {
        let history = history::decode(&format!("transaction {}", record.id), &record.history)?;
        Ok(Self {
            id: record.id,
            module: record.module,
            path: record.path,
            input_hash: record.input_hash,
            outcome: record.outcome,
            attempts: record.attempts,
            history,
        })
    }
}

/// A dead letter with its attempts decoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterReport {
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
    /// Every attempt, with traces and predictions.
    pub attempts: Vec<AttemptReport>,
    /// The compensation path's run, if the policy names one.
    pub compensation: Option<Compensation>,
    /// When it was dead-lettered, in milliseconds since the Unix epoch.
    pub dead_lettered_unix_ms: u64,
    /// The request's idempotency key, which its replay claims in turn.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// The unsafe calls it sent, from its effect journal: what its
    /// compensation was told of, and what an operator must know.
    #[serde(default)]
    pub effects: Vec<Effect>,
}

impl DeadLetterReport {
    /// The letter with its attempts decoded, and the calls it sent.
    pub(crate) fn decode(letter: DeadLetter, effects: Vec<Effect>) -> Result<Self, StoreError> {
        let attempts = history::decode(&format!("dead letter {}", letter.transaction_id), &letter.attempts)?;
        Ok(Self {
            transaction_id: letter.transaction_id,
            module: letter.module,
            path: letter.path,
            input: letter.input,
            failure: letter.failure,
            attempts,
            compensation: letter.compensation,
            dead_lettered_unix_ms: letter.dead_lettered_unix_ms,
            idempotency_key: letter.idempotency_key,
            effects,
        })
    }
}
