//! The runtime's clock, behind a seam: wall-clock time in production, and a
//! clock a test moves by hand, so that expiry and retention are tested
//! without sleeping.
//!
//! Everything the runtime dates goes through it: the frozen wall clock its
//! guests see, idempotency claims and their expiry, dead letters. Durations
//! it measures (latency, waits) use `Instant`, which no test needs to move.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// Tells the time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<SystemTime>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: SystemTime) -> Self {
        Self { now: Mutex::new(start) }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
