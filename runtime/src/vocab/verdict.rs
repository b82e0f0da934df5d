//! What the effect gate decided, and where it stood.
//!
//! Both are stored in traces as the strings they always were (`"divert"`,
//! `"explored:hedge"`, `"unsafe call"`), so records written before these
//! types existed read back the same; a string that names no verdict is
//! refused when read, never guessed.

use super::Action;
use serde::{Deserialize, Serialize};

/// The effect gate's decision on a prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
#[non_exhaustive]
pub enum GateVerdict {
    /// The primary goes on.
    Pass,
    /// The primary stops and the next alternative path runs.
    Divert,
    /// The primary stops without any effect: the failure is certain.
    FailFast,
    /// The next path starts beside the primary; the first ready commits.
    Hedge,
    /// The primary's timeouts were raised.
    AdjustTimeouts,
    /// The primary's call was held until the endpoint's rate-limit window freed.
    Delay,
    /// The primary lost its hedge race and stopped.
    Cancelled,
    /// The attempt is in the exploration share: the gate would have taken
    /// this action and did not, so that the outcome stays an honest label.
    Explored(Action),
    /// Only the model's share carried the prediction over the threshold,
    /// and the model's record of such lone calls does not earn it this
    /// one: the gate would have taken this action and let the call go, so
    /// that its outcome adds to that record (see `predict/standing.rs`).
    Trial(Action),
    /// The endpoint's calls (or those under one of the request's input
    /// conditions) are held back, and this one went as a probe to measure
    /// it again, like a half-open circuit breaker's trial call: the gate
    /// would have taken this action otherwise.
    Probe(Action),
}

impl GateVerdict {
    /// Whether the verdict stops the primary.
    pub fn stops(self) -> bool {
        matches!(self, Self::Divert | Self::FailFast | Self::Cancelled)
    }

    /// The verdict with this stable name.
    pub fn from_name(name: &str) -> Option<Self> {
        if let Some(action) = name.strip_prefix("explored:") {
            return Action::from_name(action).map(Self::Explored);
        }
        if let Some(action) = name.strip_prefix("trial:") {
            return Action::from_name(action).map(Self::Trial);
        }
        if let Some(action) = name.strip_prefix("probe:") {
            return Action::from_name(action).map(Self::Probe);
        }
        Some(match name {
            "pass" => Self::Pass,
            "divert" => Self::Divert,
            "fail_fast" => Self::FailFast,
            "hedge" => Self::Hedge,
            "adjust_timeouts" => Self::AdjustTimeouts,
            "delay" => Self::Delay,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }
}

impl std::fmt::Display for GateVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pass => f.write_str("pass"),
            Self::Divert => f.write_str("divert"),
            Self::FailFast => f.write_str("fail_fast"),
            Self::Hedge => f.write_str("hedge"),
            Self::AdjustTimeouts => f.write_str("adjust_timeouts"),
            Self::Delay => f.write_str("delay"),
            Self::Cancelled => f.write_str("cancelled"),
            Self::Explored(action) => write!(f, "explored:{action}"),
            Self::Trial(action) => write!(f, "trial:{action}"),
            Self::Probe(action) => write!(f, "probe:{action}"),
        }
    }
}

impl From<GateVerdict> for String {
    fn from(verdict: GateVerdict) -> Self {
        verdict.to_string()
    }
}

impl TryFrom<String> for GateVerdict {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        Self::from_name(&name).ok_or_else(|| format!("`{name}` is not a gate verdict"))
    }
}

/// Where the gate stood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub enum GateStage {
    /// Before one of the primary's unsafe outbound calls.
    #[default]
    #[serde(rename = "unsafe call")]
    UnsafeCall,
    /// Before the commit, once the primary ended.
    #[serde(rename = "commit")]
    Commit,
}

impl std::fmt::Display for GateStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::UnsafeCall => "unsafe call",
            Self::Commit => "commit",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_read_back_as_written_and_unknown_names_are_refused() {
        for verdict in [
            GateVerdict::Pass,
            GateVerdict::Divert,
            GateVerdict::FailFast,
            GateVerdict::Hedge,
            GateVerdict::AdjustTimeouts,
            GateVerdict::Delay,
            GateVerdict::Cancelled,
            GateVerdict::Explored(Action::Hedge),
            GateVerdict::Explored(Action::Delay),
            GateVerdict::Trial(Action::Divert),
            GateVerdict::Probe(Action::Delay),
        ] {
            let json = serde_json::to_string(&verdict).unwrap_or_default();
            assert_eq!(serde_json::from_str::<GateVerdict>(&json).ok(), Some(verdict), "{json}");
        }
        assert_eq!(
            serde_json::to_string(&GateVerdict::Explored(Action::Divert)).ok().as_deref(),
            Some(r#""explored:divert""#)
        );
        assert!(serde_json::from_str::<GateVerdict>(r#""maybe""#).is_err());
        assert!(serde_json::from_str::<GateVerdict>(r#""explored:nothing""#).is_err());
        assert!(serde_json::from_str::<GateVerdict>(r#""trial:""#).is_err());
        assert_eq!(serde_json::to_string(&GateStage::UnsafeCall).ok().as_deref(), Some(r#""unsafe call""#));
    }
}
