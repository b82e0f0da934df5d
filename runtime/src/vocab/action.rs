//! What a rule suggests and the gate may do.

use serde::{Deserialize, Serialize};

/// What a rule suggests doing when it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Action {
    /// Nothing beyond recording the prediction.
    None,
    /// Restart the primary on the next alternative path.
    Divert,
    /// Raise the primary's timeouts and retry budget.
    AdjustTimeouts,
    /// Grant the primary more fuel.
    GrantFuel,
    /// Grant the primary more memory.
    GrantMemory,
    /// Start an alternative path beside the primary.
    Hedge,
    /// Stop without any effect: the failure is certain.
    FailFast,
    /// Hold the primary's unsafe call until the endpoint's rate-limit
    /// window frees (at most `prediction.max_delay_ms`), then send it.
    Delay,
}

impl Action {
    /// The action's name, as written in policies.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Divert => "divert",
            Self::AdjustTimeouts => "adjust_timeouts",
            Self::GrantFuel => "grant_fuel",
            Self::GrantMemory => "grant_memory",
            Self::Hedge => "hedge",
            Self::FailFast => "fail_fast",
            Self::Delay => "delay",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Action {
    const ALL: [Self; 8] = [
        Self::None,
        Self::Divert,
        Self::AdjustTimeouts,
        Self::GrantFuel,
        Self::GrantMemory,
        Self::Hedge,
        Self::FailFast,
        Self::Delay,
    ];

    /// The action with this stable name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|action| action.as_str() == name)
    }
}
