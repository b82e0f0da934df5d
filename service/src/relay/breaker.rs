//! A circuit breaker for one webhook endpoint: closed (calls go through),
//! open (none does, for a while), half-open (one trial call decides).
//!
//! Failures count only when they say the endpoint is unwell (a refused
//! connection, a timeout, `5xx`, `408`, `429`); a `4xx` about one event
//! says the endpoint answers, and is that event's failure alone.

use serde::Serialize;
use std::time::{Duration, Instant};

/// A breaker's state, as the API and the metrics show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
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
    /// The state as a number for a gauge: 0 closed, 1 open, 2 half-open.
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
pub(crate) struct Breaker {
    /// Failures in a row that open it.
    threshold: u32,
    /// How long it stays open.
    open_for: Duration,
    state: State,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { trial_out: bool },
}

impl Breaker {
    pub(crate) fn new(threshold: u32, open_for: Duration) -> Self {
        Self { threshold: threshold.max(1), open_for, state: State::Closed { failures: 0 } }
    }

    /// Whether a call may go now; an open breaker whose period has ended
    /// lets one trial through, and no other until it is settled.
    pub(crate) fn permit(&mut self, now: Instant) -> bool {
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
    pub(crate) fn succeeded(&mut self) {
        self.state = State::Closed { failures: 0 };
    }

    /// The endpoint failed a call: one more failure in a row, or open again
    /// after a failed trial.
    pub(crate) fn failed(&mut self, now: Instant) {
        self.state = match self.state {
            State::Closed { failures } if failures + 1 < self.threshold => State::Closed { failures: failures + 1 },
            State::Closed { .. } | State::HalfOpen { .. } | State::Open { .. } => {
                State::Open { until: now + self.open_for }
            }
        };
    }

    /// When an open breaker lets a trial through; `None` unless open.
    pub(crate) fn opens_again_at(&self) -> Option<Instant> {
        match self.state {
            State::Open { until } => Some(until),
            _ => None,
        }
    }

    /// The state at `now`.
    pub(crate) fn state(&self, now: Instant) -> BreakerState {
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

    #[test]
    fn it_opens_after_the_threshold_lets_one_trial_through_and_closes_on_success() {
        let start = Instant::now();
        let mut breaker = Breaker::new(3, Duration::from_secs(10));
        for _ in 0..2 {
            assert!(breaker.permit(start));
            breaker.failed(start);
            assert_eq!(breaker.state(start), BreakerState::Closed, "below the threshold");
        }
        breaker.failed(start);
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
        let mut breaker = Breaker::new(2, Duration::from_secs(5));
        breaker.failed(start);
        breaker.succeeded();
        breaker.failed(start);
        assert_eq!(breaker.state(start), BreakerState::Closed, "the failures were not in a row");
        breaker.failed(start);
        assert_eq!(breaker.opens_again_at(), Some(start + Duration::from_secs(5)));
        let trial = start + Duration::from_secs(5);
        assert!(breaker.permit(trial));
        breaker.failed(trial);
        assert_eq!(breaker.state(trial), BreakerState::Open);
        assert_eq!(breaker.opens_again_at(), Some(trial + Duration::from_secs(5)));
    }
}
