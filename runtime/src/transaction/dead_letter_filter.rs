//! Which dead letters an operator's list, bulk replay or bulk drop takes:
//! by module, path, failure kind, and when they were dead-lettered.

use crate::store::DeadLetter;
use crate::vocab::FailureKind;
use serde::{Deserialize, Serialize};

/// A selection of dead letters. Every condition given must hold; the
/// default selects every letter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DeadLetterFilter {
    /// The module's content hash.
    #[serde(default)]
    pub module: Option<String>,
    /// The path the transaction was asked to run.
    #[serde(default)]
    pub path: Option<String>,
    /// The kind of its last failure.
    #[serde(default)]
    pub kind: Option<FailureKind>,
    /// Dead-lettered at or after this time (milliseconds since the Unix epoch).
    #[serde(default)]
    pub since_unix_ms: Option<u64>,
    /// Dead-lettered before this time (milliseconds since the Unix epoch).
    #[serde(default)]
    pub until_unix_ms: Option<u64>,
}

impl DeadLetterFilter {
    /// Only the letters of this module.
    #[must_use]
    pub fn module(self, module: impl Into<String>) -> Self {
        Self { module: Some(module.into()), ..self }
    }

    /// Only the letters of transactions asked to run this path.
    #[must_use]
    pub fn path(self, path: impl Into<String>) -> Self {
        Self { path: Some(path.into()), ..self }
    }

    /// Only the letters whose last failure is of this kind.
    #[must_use]
    pub fn kind(self, kind: FailureKind) -> Self {
        Self { kind: Some(kind), ..self }
    }

    /// Only the letters written at or after this time.
    #[must_use]
    pub fn since(self, unix_ms: u64) -> Self {
        Self { since_unix_ms: Some(unix_ms), ..self }
    }

    /// Only the letters written before this time.
    #[must_use]
    pub fn until(self, unix_ms: u64) -> Self {
        Self { until_unix_ms: Some(unix_ms), ..self }
    }

    /// Whether the filter selects every letter: a bulk drop asks its
    /// caller to say so outright.
    pub fn selects_everything(&self) -> bool {
        *self == Self::default()
    }

    /// Whether the letter is selected.
    pub(crate) fn matches(&self, letter: &DeadLetter) -> bool {
        self.module.as_ref().is_none_or(|module| *module == letter.module)
            && self.path.as_ref().is_none_or(|path| *path == letter.path)
            && self.kind.is_none_or(|kind| kind == letter.failure.kind)
            && self.since_unix_ms.is_none_or(|since| letter.dead_lettered_unix_ms >= since)
            && !self.is_past(letter)
    }

    /// Whether the letter was written at or after the filter's end, so that
    /// no letter after it in the queue (oldest first) is selected.
    pub(crate) fn is_past(&self, letter: &DeadLetter) -> bool {
        self.until_unix_ms.is_some_and(|until| letter.dead_lettered_unix_ms >= until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::History;
    use crate::vocab::Failure;

    fn letter(path: &str, kind: FailureKind, at: u64) -> DeadLetter {
        DeadLetter {
            transaction_id: format!("{path}-{at}"),
            module: "m1".into(),
            path: path.into(),
            input: Vec::new(),
            failure: Failure::new(kind, "failed"),
            attempts: History::default(),
            compensation: None,
            dead_lettered_unix_ms: at,
            idempotency_key: None,
        }
    }

    #[test]
    fn every_condition_given_must_hold() {
        let charge = letter("charge", FailureKind::Unavailable, 1_000);
        assert!(DeadLetterFilter::default().matches(&charge));
        assert!(DeadLetterFilter::default().path("charge").kind(FailureKind::Unavailable).matches(&charge));
        assert!(!DeadLetterFilter::default().path("refund").matches(&charge));
        assert!(!DeadLetterFilter::default().kind(FailureKind::Conflict).matches(&charge));
        assert!(!DeadLetterFilter::default().module("m2").matches(&charge));
        assert!(DeadLetterFilter::default().module("m1").matches(&charge));
    }

    #[test]
    fn a_time_range_includes_its_start_and_excludes_its_end() {
        let range = DeadLetterFilter::default().since(1_000).until(2_000);
        assert!(!range.matches(&letter("p", FailureKind::Rejected, 999)));
        assert!(range.matches(&letter("p", FailureKind::Rejected, 1_000)));
        assert!(range.matches(&letter("p", FailureKind::Rejected, 1_999)));
        assert!(!range.matches(&letter("p", FailureKind::Rejected, 2_000)));
        assert!(range.is_past(&letter("p", FailureKind::Rejected, 2_000)));
        assert!(!range.is_past(&letter("p", FailureKind::Rejected, 1_999)));
    }

    #[test]
    fn only_the_default_selects_everything() {
        assert!(DeadLetterFilter::default().selects_everything());
        assert!(!DeadLetterFilter::default().since(0).selects_everything());
    }

    #[test]
    fn a_filter_reads_from_json_and_refuses_unknown_fields() {
        let filter: DeadLetterFilter =
            serde_json::from_str(r#"{"path":"charge","kind":"effect_in_doubt","since_unix_ms":5}"#)
                .expect("a valid filter");
        assert_eq!(filter, DeadLetterFilter::default().path("charge").kind(FailureKind::EffectInDoubt).since(5));
        assert!(serde_json::from_str::<DeadLetterFilter>(r#"{"pth":"charge"}"#).is_err());
        assert!(serde_json::from_str::<DeadLetterFilter>(r#"{"kind":"no_such_kind"}"#).is_err());
    }
}
