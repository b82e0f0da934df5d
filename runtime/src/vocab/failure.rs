//! Why an attempt failed: the kinds the runtime, the guest and the commit
//! report, with their stable names.

use serde::{Deserialize, Serialize};

/// Why an attempt failed. Five kinds are traps, detected by the runtime
/// (see [`FailureKind::is_trap`]); the guest reports `Validation`,
/// `Rejected` and `Unavailable`, the commit `Conflict`, and the runtime's
/// own decisions the rest.
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
    /// An attempt made an unsafe call, at a point where an earlier attempt
    /// of the same transaction had sent a different one: what was sent
    /// cannot be matched, so nothing more is sent.
    EffectMismatch,
    /// An earlier attempt sent an unsafe call and never learnt its answer,
    /// and the policy says not to send it again
    /// (`effects.in_doubt = "dead_letter"`).
    EffectInDoubt,
    /// The caller cancelled the transaction (`POST /v1/transactions/{id}/cancel`):
    /// it was stopped where stopping is safe and committed nothing; what an
    /// attempt had sent already is compensated.
    CancelledByCaller,
}

impl FailureKind {
    const ALL: [Self; 19] = [
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
        Self::EffectMismatch,
        Self::EffectInDoubt,
        Self::CancelledByCaller,
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
            Self::EffectMismatch => "effect_mismatch",
            Self::EffectInDoubt => "effect_in_doubt",
            Self::CancelledByCaller => "cancelled_by_caller",
        }
    }

    /// Whether the effect gate stopped the attempt before any unsafe call:
    /// diverted it, failed it fast, or cancelled the hedge that lost. The
    /// path did not fail; the predictor acted.
    pub fn stopped_by_gate(self) -> bool {
        matches!(self, Self::Diverted | Self::PredictedFailure | Self::Cancelled)
    }

    /// Whether the failure says nothing of the path it ran on: the gate
    /// stopped it, or its caller did. Such a failure is not learnt as the
    /// path's, nor taken as a label for the predictor.
    pub fn says_nothing_of_the_path(self) -> bool {
        self.stopped_by_gate() || self == Self::CancelledByCaller
    }

    /// Whether the failure ends the transaction whatever the retry policy
    /// says, into the dead-letter queue: what an earlier attempt sent cannot
    /// be matched or confirmed, and another attempt or path could send it
    /// twice.
    pub fn ends_the_transaction(self) -> bool {
        matches!(self, Self::EffectMismatch | Self::EffectInDoubt)
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
