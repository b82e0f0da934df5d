//! A circuit breaker for one endpoint: closed (calls go through), open
//! (none does, for a while), half-open (one trial call decides).
//!
//! The state holds no thresholds: each failure is counted against the
//! [`BreakerRule`] of the caller that met it, so that the policies of
//! several modules calling one host share what it did and keep their own
//! patience. The outbound calls of guests ([`super::breakers`]) and the
//! service's webhook relay both use it.

use std::time::{Duration, Instant};

/// When a breaker opens, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerRule {
    /// Failures in a row that open it (at least 1).
    pub failures: u32,
    /// How long it stays open before a trial.
    pub open_for: Duration,
}

/// A breaker's state, as the API, the metrics and the traces show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// No call goes through until the open period ends.
    Open,
    /// The open period ended: one trial call decides.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// The state as a gauge's value: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }
}

/// One endpoint's breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: State,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { trial_out: bool },
}

impl Default for Breaker {
    fn default() -> Self {
        Self { state: State::Closed { failures: 0 } }
    }
}

impl Breaker {
    /// Whether a call may go now. An open breaker whose period has ended
    /// lets one trial through, and no other call until that trial is
    /// settled by [`Breaker::succeeded`] or [`Breaker::failed`].
    pub fn permit(&mut self, now: Instant) -> bool {
        match self.state {
            State::Closed { .. } => true,
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen { trial_out: true };
                true
            }
            State::Open { .. } => false,
            State::HalfOpen { trial_out } => {
                self.state = State::HalfOpen { trial_out: true };
                !trial_out
            }
        }
    }

    /// The endpoint answered well: closed again.
    pub fn succeeded(&mut self) {
        self.state = State::Closed { failures: 0 };
    }

    /// The endpoint failed a call: one more failure in a row (open at the
    /// rule's count), or open again after a failed trial.
    pub fn failed(&mut self, now: Instant, rule: BreakerRule) {
        self.state = match self.state {
            State::Closed { failures } if failures + 1 < rule.failures.max(1) => {
                State::Closed { failures: failures + 1 }
            }
            State::Closed { .. } | State::HalfOpen { .. } | State::Open { .. } => {
                State::Open { until: now + rule.open_for }
            }
        };
    }

    /// A trial that was let through and then not made (the call was
    /// refused or abandoned before it said anything of the endpoint): the
    /// next call may be the trial.
    pub fn abandon_trial(&mut self) {
        if let State::HalfOpen { trial_out: true } = self.state {
            self.state = State::HalfOpen { trial_out: false };
        }
    }

    /// When an open breaker lets a trial through; `None` unless open.
    pub fn opens_again_at(&self) -> Option<Instant> {
        match self.state {
            State::Open { until } => Some(until),
            _ => None,
        }
    }

    /// Failures in a row while closed.
    pub fn failures_in_a_row(&self) -> u32 {
        match self.state {
            State::Closed { failures } => failures,
            _ => 0,
        }
    }

    /// The state at `now`.
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if now >= until => BreakerState::HalfOpen,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: BreakerRule = BreakerRule { failures: 3, open_for: Duration::from_secs(10) };

    #[test]
    fn it_opens_after_the_threshold_lets_one_trial_through_and_closes_on_success() {
        let start = Instant::now();
        let mut breaker = Breaker::default();
        for failures in 1..3 {
            assert!(breaker.permit(start));
            breaker.failed(start, RULE);
            assert_eq!((breaker.state(start), breaker.failures_in_a_row()), (BreakerState::Closed, failures));
        }
        breaker.failed(start, RULE);
        assert_eq!(breaker.state(start), BreakerState::Open);
        assert!(!breaker.permit(start + Duration::from_secs(9)), "open: nothing goes");
        let later = start + Duration::from_secs(10);
        assert_eq!(breaker.state(later), BreakerState::HalfOpen);
        assert!(breaker.permit(later), "one trial");
        assert!(!breaker.permit(later), "and only one");
        breaker.succeeded();
        assert_eq!(breaker.state(later), BreakerState::Closed);
        assert!(breaker.permit(later));
    }

    #[test]
    fn a_failed_trial_opens_it_again_and_a_success_resets_the_count() {
        let start = Instant::now();
        let rule = BreakerRule { failures: 2, open_for: Duration::from_secs(5) };
        let mut breaker = Breaker::default();
        breaker.failed(start, rule);
        breaker.succeeded();
        breaker.failed(start, rule);
        assert_eq!(breaker.state(start), BreakerState::Closed, "the failures were not in a row");
        breaker.failed(start, rule);
        assert_eq!(breaker.opens_again_at(), Some(start + Duration::from_secs(5)));
        let trial = start + Duration::from_secs(5);
        assert!(breaker.permit(trial));
        breaker.failed(trial, rule);
        assert_eq!(breaker.state(trial), BreakerState::Open);
        assert_eq!(breaker.opens_again_at(), Some(trial + Duration::from_secs(5)));
    }
}
