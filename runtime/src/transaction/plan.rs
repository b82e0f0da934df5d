//! What happens after an attempt ends: the transaction's plan across its
//! paths, as a pure state machine (after restate's invocation state
//! machine): no Wasm, no store, no clock, so that every branch is unit-tested.
//!
//! A transaction runs its paths in order (the requested one, then the
//! policy's alternatives). After each failed attempt the plan says what
//! comes next:
//! - a diversion by the gate goes to the next path at once;
//! - an attempt that adaptive mirroring ran without its mirror, and that
//!   failed as the mirror could have prevented without sending anything
//!   unsafe, gets one *second look* on the same path, with its mirror, which
//!   does not count against the path's attempts;
//! - a failure of a final kind ends the transaction (no dead letter: the
//!   same request would fail the same way);
//! - otherwise the path is retried after the retry policy's delay (at once
//!   for a conflict, which waits for its turn on the hot key instead) until
//!   its attempts are spent (more once the predictor has raised the path's
//!   timeouts), then the next path runs. A host that asked for a wait
//!   (`Retry-After` on a `429` or `503`, or an open circuit breaker) is
//!   given it: the retry waits at least that long, and a wait longer than
//!   the policy's longest interval moves to the next path instead;
//! - when no path is left, the transaction is compensated and dead-lettered.

use crate::policy::RetryPolicy;
use crate::vocab::FailureKind;
use std::time::Duration;

/// How an attempt failed, as far as the plan cares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AttemptFailed {
    /// The failure's kind.
    pub(crate) kind: FailureKind,
    /// The attempt's mirror was skipped and could have prevented this
    /// failure, and the primary sent nothing unsafe: a second look, with the
    /// mirror, would be safe and might help.
    pub(crate) second_look_would_help: bool,
    /// The predictor has raised this path's timeouts: its budget grows.
    pub(crate) timeouts_raised: bool,
    /// A draw in `[0, 1)` for the retry delay's jitter.
    pub(crate) jitter: f64,
    /// The longest wait a host the attempt called asked for.
    pub(crate) retry_after: Option<Duration>,
}

/// What comes after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// The same path again, after this delay.
    Retry(Duration),
    /// The same path again at once, with its mirror; not counted.
    SecondLook,
    /// The next path, at once.
    FollowingPath,
    /// No path is left: compensate, then dead-letter.
    DeadLetter,
    /// A final failure: record it; no other path, no dead letter.
    Final,
}

/// A transaction's progress through its paths.
#[derive(Debug)]
pub(crate) struct Plan<'p> {
    paths: Vec<String>,
    retry: &'p RetryPolicy,
    /// The path running now.
    index: usize,
    /// Attempts counted on this path so far.
    tries: u32,
    /// Whether this path had its second look.
    second_look_taken: bool,
}

impl<'p> Plan<'p> {
    /// A plan over `paths` (at least one), in order.
    pub(crate) fn new(paths: Vec<String>, retry: &'p RetryPolicy) -> Self {
        Self { paths, retry, index: 0, tries: 0, second_look_taken: false }
    }

    /// The path to run now, or `None` once every path is done.
    pub(crate) fn path(&self) -> Option<&str> {
        self.paths.get(self.index).map(String::as_str)
    }

    /// The path after this one: where a diversion goes, what a hedge runs.
    pub(crate) fn next_path(&self) -> Option<&str> {
        self.paths.get(self.index + 1).map(String::as_str)
    }

    /// Decides what follows a failed attempt of [`Plan::path`].
    pub(crate) fn failed(&mut self, failed: AttemptFailed) -> Next {
        let AttemptFailed { kind, second_look_would_help, timeouts_raised, jitter, retry_after } = failed;
        self.tries += 1;
        if kind == FailureKind::Diverted {
            return self.advance();
        }
        if second_look_would_help && !self.second_look_taken {
            self.second_look_taken = true;
            self.tries -= 1;
            return Next::SecondLook;
        }
        if kind.ends_the_transaction() {
            // Not the caller's doing: for an operator, with what was sent.
            return Next::DeadLetter;
        }
        if self.retry.final_kinds.contains(&kind) {
            return Next::Final;
        }
        let extra = if timeouts_raised { self.retry.adjusted_extra_attempts } else { 0 };
        if self.tries >= self.retry.attempts_for(kind).saturating_add(extra) {
            return self.advance();
        }
        if kind == FailureKind::Conflict {
            return Next::Retry(Duration::ZERO);
        }
        let delay = self.retry.delay(kind, self.tries, jitter);
        match retry_after {
            Some(asked) if asked > Duration::from_millis(self.retry.max_interval_ms) => self.advance(),
            Some(asked) => Next::Retry(delay.max(asked)),
            None => Next::Retry(delay),
        }
    }

    fn advance(&mut self) -> Next {
        self.index += 1;
        self.tries = 0;
        self.second_look_taken = false;
        if self.index < self.paths.len() { Next::FollowingPath } else { Next::DeadLetter }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(kind: FailureKind) -> AttemptFailed {
        AttemptFailed { kind, second_look_would_help: false, timeouts_raised: false, jitter: 0.5, retry_after: None }
    }

    fn plan(retry: &RetryPolicy) -> Plan<'_> {
        Plan::new(vec!["charge".into(), "charge-backup".into()], retry)
    }

    #[test]
    fn a_path_is_retried_with_backoff_until_its_attempts_are_spent_then_the_next_runs() {
        let retry = RetryPolicy { jitter: 0.0, ..RetryPolicy::default() };
        let mut plan = plan(&retry);
        assert_eq!((plan.path(), plan.next_path()), (Some("charge"), Some("charge-backup")));
        assert_eq!(plan.failed(failed(FailureKind::Unavailable)), Next::Retry(Duration::from_millis(50)));
        assert_eq!(plan.failed(failed(FailureKind::Unavailable)), Next::Retry(Duration::from_millis(100)));
        assert_eq!(plan.failed(failed(FailureKind::Unavailable)), Next::FollowingPath);
        assert_eq!((plan.path(), plan.next_path()), (Some("charge-backup"), None));
        for _ in 0..2 {
            assert!(matches!(plan.failed(failed(FailureKind::Unavailable)), Next::Retry(_)));
        }
        assert_eq!(plan.failed(failed(FailureKind::Unavailable)), Next::DeadLetter);
        assert_eq!(plan.path(), None);
    }

    #[test]
    fn a_diversion_moves_on_at_once_and_a_final_failure_ends_everything() {
        let retry = RetryPolicy::default();
        let mut plan = plan(&retry);
        assert_eq!(plan.failed(failed(FailureKind::Diverted)), Next::FollowingPath);
        assert_eq!(plan.path(), Some("charge-backup"));
        assert_eq!(plan.failed(failed(FailureKind::Validation)), Next::Final);
        let mut plan = Plan::new(vec!["only".into()], &retry);
        assert_eq!(plan.failed(failed(FailureKind::Diverted)), Next::DeadLetter, "nowhere to divert to");
    }

    #[test]
    fn a_trap_is_not_retried_on_its_path_and_a_conflict_retries_at_once() {
        let retry = RetryPolicy::default();
        let mut plan = plan(&retry);
        assert_eq!(plan.failed(failed(FailureKind::FuelExhausted)), Next::FollowingPath, "non-retryable");
        for _ in 1..retry.conflict_attempts {
            assert_eq!(plan.failed(failed(FailureKind::Conflict)), Next::Retry(Duration::ZERO));
        }
        assert_eq!(plan.failed(failed(FailureKind::Conflict)), Next::DeadLetter);
    }

    #[test]
    fn a_second_look_is_taken_once_per_path_and_not_counted() {
        let retry = RetryPolicy { max_attempts: 2, ..RetryPolicy::default() };
        let mut plan = plan(&retry);
        let rescuable = AttemptFailed { second_look_would_help: true, ..failed(FailureKind::Unavailable) };
        assert_eq!(plan.failed(rescuable), Next::SecondLook);
        assert!(matches!(plan.failed(rescuable), Next::Retry(_)), "one look per path; the first try still counts");
        assert_eq!(plan.failed(rescuable), Next::FollowingPath);
        assert_eq!(plan.failed(rescuable), Next::SecondLook, "the next path gets its own");
        // A final kind after the look ends the transaction.
        assert_eq!(plan.failed(failed(FailureKind::Rejected)), Next::Final);
    }

    #[test]
    fn raised_timeouts_earn_a_path_more_attempts() {
        let retry = RetryPolicy { max_attempts: 1, adjusted_extra_attempts: 2, ..RetryPolicy::default() };
        let mut plan = plan(&retry);
        let raised = AttemptFailed { timeouts_raised: true, ..failed(FailureKind::WallTimeExceeded) };
        assert!(matches!(plan.failed(raised), Next::Retry(_)));
        assert!(matches!(plan.failed(raised), Next::Retry(_)));
        assert_eq!(plan.failed(raised), Next::FollowingPath);
        assert_eq!(plan.failed(failed(FailureKind::WallTimeExceeded)), Next::DeadLetter, "one attempt without");
    }

    #[test]
    fn a_wait_a_host_asked_for_is_given_or_the_next_path_runs() {
        let retry = RetryPolicy { jitter: 0.0, max_interval_ms: 5_000, ..RetryPolicy::default() };
        let mut plan = plan(&retry);
        let asked =
            |ms| AttemptFailed { retry_after: Some(Duration::from_millis(ms)), ..failed(FailureKind::Unavailable) };
        assert_eq!(plan.failed(asked(2_000)), Next::Retry(Duration::from_millis(2_000)), "longer than the backoff");
        assert_eq!(plan.failed(asked(10)), Next::Retry(Duration::from_millis(100)), "shorter: the backoff's");
        let mut plan = self::plan(&retry);
        assert_eq!(plan.failed(asked(60_000)), Next::FollowingPath, "too long to wait on this path");
        assert_eq!(plan.path(), Some("charge-backup"));
    }
}
