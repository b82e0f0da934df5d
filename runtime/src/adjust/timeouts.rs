//! The timeouts of one attempt, which the predictor may raise while the
//! attempt runs (the `adjust_timeouts` action): the outbound timeout for the
//! calls still to come and, by as much, the attempt's wall time, each up to
//! the policy's ceiling.

use crate::policy::ResourceRequirements;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// An attempt's timeouts, shared by its twins, the gate and the executor.
#[derive(Debug)]
pub(crate) struct AttemptTimeouts {
    outbound_ms: AtomicU64,
    wall_ms: AtomicU64,
    outbound_ceiling_ms: u64,
    wall_ceiling_ms: u64,
    raised: AtomicBool,
}

/// An attempt's timeouts as they stand, in milliseconds: what a path's next
/// attempt inherits once they were raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timeouts {
    /// The timeout of one outbound request.
    pub(crate) outbound_ms: u64,
    /// The attempt's wall time.
    pub(crate) wall_ms: u64,
}

/// What a raise changed, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Raised {
    pub(crate) outbound: (u64, u64),
    pub(crate) wall: (u64, u64),
}

impl AttemptTimeouts {
    /// The policy's timeouts, or the raised ones an earlier attempt of the
    /// same path left.
    pub(crate) fn new(limits: &ResourceRequirements, carried: Option<Timeouts>) -> Self {
        let Timeouts { outbound_ms, wall_ms } =
            carried.unwrap_or(Timeouts { outbound_ms: limits.outbound_timeout_ms, wall_ms: limits.wall_time_ms });
        Self {
            outbound_ms: AtomicU64::new(outbound_ms),
            wall_ms: AtomicU64::new(wall_ms),
            outbound_ceiling_ms: limits.outbound_timeout_ceiling_ms(),
            wall_ceiling_ms: limits.wall_time_ceiling_ms(),
            raised: AtomicBool::new(carried.is_some()),
        }
    }

    /// The timeout of an outbound request starting now.
    pub(crate) fn outbound(&self) -> Duration {
        Duration::from_millis(self.outbound_ms.load(Ordering::SeqCst))
    }

    /// The attempt's wall-time limit, as it stands.
    pub(crate) fn wall(&self) -> Duration {
        Duration::from_millis(self.wall_ms.load(Ordering::SeqCst))
    }

    /// Whether the timeouts were raised, now or by an earlier attempt.
    pub(crate) fn raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    /// The timeouts as they stand, for the path's next attempt.
    pub(crate) fn current(&self) -> Timeouts {
        Timeouts { outbound_ms: self.outbound_ms.load(Ordering::SeqCst), wall_ms: self.wall_ms.load(Ordering::SeqCst) }
    }

    /// Raises the outbound timeout to cover a predicted latency with room to
    /// spare: half as much again as the prediction, and at least double the
    /// current timeout, at most the ceiling. The wall time grows by as much.
    /// `None` if nothing could rise.
    pub(crate) fn raise_for(&self, predicted_latency_ms: f64) -> Option<Raised> {
        let outbound = self.outbound_ms.load(Ordering::SeqCst);
        let wanted = (predicted_latency_ms * 1.5).max(outbound as f64 * 2.0);
        // A float to integer `as` saturates; NaN becomes 0, which `max` discards.
        let to = (wanted as u64).max(outbound).min(self.outbound_ceiling_ms);
        if to <= outbound {
            return None;
        }
        self.outbound_ms.store(to, Ordering::SeqCst);
        let wall = self.wall_ms.load(Ordering::SeqCst);
        let wall_to = wall.saturating_add(to - outbound).min(self.wall_ceiling_ms).max(wall);
        self.wall_ms.store(wall_to, Ordering::SeqCst);
        self.raised.store(true, Ordering::SeqCst);
        Some(Raised { outbound: (outbound, to), wall: (wall, wall_to) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raises_cover_the_prediction_up_to_the_ceilings() {
        let limits = ResourceRequirements { outbound_timeout_ms: 1_000, wall_time_ms: 5_000, ..Default::default() };
        let timeouts = AttemptTimeouts::new(&limits, None);
        assert!(!timeouts.raised());
        let raised = timeouts.raise_for(1_200.0).expect("room below the ceiling of 3 s");
        assert_eq!(raised, Raised { outbound: (1_000, 2_000), wall: (5_000, 6_000) }, "at least double");
        let raised = timeouts.raise_for(2_600.0).expect("up to the ceiling");
        assert_eq!(raised.outbound, (2_000, 3_000), "capped at three times the policy's timeout");
        assert_eq!(timeouts.raise_for(10_000.0), None, "at the ceiling");
        assert!(timeouts.raised());
        assert_eq!(timeouts.current(), Timeouts { outbound_ms: 3_000, wall_ms: 7_000 });
        let next = AttemptTimeouts::new(&limits, Some(timeouts.current()));
        assert_eq!(next.outbound(), Duration::from_secs(3), "the path's next attempt keeps the raise");
    }
}
