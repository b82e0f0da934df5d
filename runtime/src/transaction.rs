//! Transactions as the runtime's callers see them: requests and reports.

use crate::store::{Attempt, TransactionOutcome};
use crate::trace::Trace;
use serde::{Deserialize, Serialize};

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
}

/// Why an attempt failed. Traps (the first six kinds after `Rejected`…)
/// are detected by the runtime; the others are reported by the guest or by
/// the commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// The guest found the input invalid.
    Validation,
    /// The guest refused the transaction by a business rule.
    Rejected,
    /// The guest could not reach a dependency.
    Unavailable,
    /// The guest does not export the requested path.
    UnknownPath,
    /// The attempt burnt all its fuel.
    FuelExhausted,
    /// The attempt's memory grew past its limit.
    MemoryLimit,
    /// The attempt ran past its wall-time limit.
    WallTimeExceeded,
    /// The guest's call stack overflowed.
    StackOverflow,
    /// The guest trapped otherwise (a panic, an out-of-bounds access…).
    GuestTrap,
    /// The output did not meet the policy's success criteria.
    SuccessCriteria,
    /// Another commit changed a key this attempt read.
    Conflict,
    /// The instance could not be set up (for example a granted directory is missing).
    Setup,
    /// The effect gate stopped the primary before an unsafe call, to restart
    /// it on the next alternative path.
    Diverted,
    /// The effect gate stopped the primary before an unsafe call: the
    /// predictor found the failure certain.
    PredictedFailure,
    /// The attempt ran as a hedge (or was hedged) and the other path won:
    /// it was stopped before any unsafe call and committed nothing.
    Cancelled,
    /// The process stopped while the transaction was in flight, and its
    /// policy says such transactions go to the dead-letter queue
    /// (`recovery.in_flight = "dead_letter"`) rather than run again.
    Interrupted,
}

impl FailureKind {
    const ALL: [Self; 16] = [
        Self::Validation,
        Self::Rejected,
        Self::Unavailable,
        Self::UnknownPath,
        Self::FuelExhausted,
        Self::MemoryLimit,
        Self::WallTimeExceeded,
        Self::StackOverflow,
        Self::GuestTrap,
        Self::SuccessCriteria,
        Self::Conflict,
        Self::Setup,
        Self::Diverted,
        Self::PredictedFailure,
        Self::Cancelled,
        Self::Interrupted,
    ];

    /// The kind with this stable name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// The kind's stable name, as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Validation => "validation",
            Self::Rejected => "rejected",
            Self::Unavailable => "unavailable",
            Self::UnknownPath => "unknown_path",
            Self::FuelExhausted => "fuel_exhausted",
            Self::MemoryLimit => "memory_limit",
            Self::WallTimeExceeded => "wall_time_exceeded",
            Self::StackOverflow => "stack_overflow",
            Self::GuestTrap => "guest_trap",
            Self::SuccessCriteria => "success_criteria",
            Self::Conflict => "conflict",
            Self::Setup => "setup",
            Self::Diverted => "diverted",
            Self::PredictedFailure => "predicted_failure",
            Self::Cancelled => "cancelled",
            Self::Interrupted => "interrupted",
        }
    }

    /// Whether the runtime stopped the guest (as opposed to the guest reporting an error).
    pub fn is_trap(self) -> bool {
        matches!(
            self,
            Self::FuelExhausted | Self::MemoryLimit | Self::WallTimeExceeded | Self::StackOverflow | Self::GuestTrap
        )
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure with its explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The kind.
    pub kind: FailureKind,
    /// For a person to read.
    pub message: String,
}

impl Failure {
    pub(crate) fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
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
    pub fn from_record(record: crate::store::TransactionRecord) -> Self {
        let failure = match &record.outcome {
            TransactionOutcome::Failed { kind, message } => Some(Failure {
                kind: FailureKind::from_name(kind).unwrap_or(FailureKind::GuestTrap),
                message: message.clone(),
            }),
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
