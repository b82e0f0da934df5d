//! Resource grants: the mirror shows what the primary needs.
//!
//! In a mirrored attempt the mirror runs with the operator's ceilings
//! instead of the policy's limits, and publishes the fuel it has burnt at
//! every epoch tick and the memory it has grown to.
//!
//! Memory: when the primary's memory would grow past its limit, the
//! (asynchronous) limiter waits, at most a second, until the mirror has
//! grown as far or ended; if the mirror did, the growth is granted up to
//! the ceiling, else refused.
//!
//! Fuel: When the primary's fuel runs low, it reads that:
//! if the mirror has already burnt more than the primary may, the primary
//! is granted what the mirror needed plus a margin, up to the ceiling,
//! without a restart. If the mirror is behind, the primary pauses (at most
//! a second) until the mirror has burnt past the primary's limit or ended. Every grant is recorded in the primary's trace.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// How long the primary waits, at most, for the mirror to burn past its limit.
pub(crate) const WAIT_FOR_MIRROR: Duration = Duration::from_secs(1);

/// The fuel the primary is granted over what the mirror burnt, as a fraction.
const MARGIN: u64 = 5; // one fifth

/// The mirror's fuel and memory, as the primary sees them.
#[derive(Debug, Default)]
pub(crate) struct ResourceWatch {
    mirror_consumed: AtomicU64,
    mirror_memory: AtomicU64,
    mirror_ended: AtomicBool,
    pub(crate) progress: Notify,
}

impl ResourceWatch {
    /// The mirror reports the fuel it has burnt so far.
    pub(crate) fn publish(&self, consumed: u64) {
        self.mirror_consumed.fetch_max(consumed, Ordering::SeqCst);
        self.progress.notify_waiters();
    }

    /// The mirror has ended, having burnt `consumed`.
    pub(crate) fn end(&self, consumed: u64) {
        self.mirror_consumed.fetch_max(consumed, Ordering::SeqCst);
        self.mirror_ended.store(true, Ordering::SeqCst);
        self.progress.notify_waiters();
    }

    /// The mirror reports that its memory has grown to `bytes`.
    pub(crate) fn publish_memory(&self, bytes: u64) {
        self.mirror_memory.fetch_max(bytes, Ordering::SeqCst);
        self.progress.notify_waiters();
    }

    pub(crate) fn mirror_memory(&self) -> u64 {
        self.mirror_memory.load(Ordering::SeqCst)
    }

    /// Waits, at most [`WAIT_FOR_MIRROR`], until `ready` holds or the mirror ends.
    pub(crate) async fn wait_for(&self, ready: impl Fn(&Self) -> bool) {
        let ahead = async {
            loop {
                let progressed = self.progress.notified();
                if ready(self) || self.mirror_ended() {
                    break;
                }
                progressed.await;
            }
        };
        let _ = tokio::time::timeout(WAIT_FOR_MIRROR, ahead).await;
    }

    pub(crate) fn mirror_consumed(&self) -> u64 {
        self.mirror_consumed.load(Ordering::SeqCst)
    }

    pub(crate) fn mirror_ended(&self) -> bool {
        self.mirror_ended.load(Ordering::SeqCst)
    }
}

/// What the primary should do about its fuel at an epoch tick.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FuelStep {
    /// Nothing.
    Carry,
    /// Raise the limit to this.
    Grant(u64),
    /// Let the mirror get ahead first.
    Wait,
}

/// Decides, at a tick, from the primary's `limit` and `remaining` fuel.
pub(crate) fn fuel_step(watch: &ResourceWatch, limit: u64, remaining: u64, ceiling: u64) -> FuelStep {
    if remaining >= limit / 5 || limit >= ceiling {
        return FuelStep::Carry;
    }
    let need = watch.mirror_consumed();
    if need > limit {
        return FuelStep::Grant(ceiling.min(need.saturating_add(need / MARGIN)));
    }
    if watch.mirror_ended() { FuelStep::Carry } else { FuelStep::Wait }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_primary_is_granted_what_the_mirror_needed_within_the_ceiling() {
        let watch = ResourceWatch::default();
        assert_eq!(fuel_step(&watch, 1000, 500, 4000), FuelStep::Carry, "plenty left");
        assert_eq!(fuel_step(&watch, 1000, 100, 4000), FuelStep::Wait, "low, and the mirror is behind");
        watch.publish(1500);
        assert_eq!(fuel_step(&watch, 1000, 100, 4000), FuelStep::Grant(1800), "what it burnt, plus a fifth");
        watch.publish(3900);
        assert_eq!(fuel_step(&watch, 1800, 100, 4000), FuelStep::Grant(4000), "never past the ceiling");
        assert_eq!(fuel_step(&watch, 4000, 10, 4000), FuelStep::Carry, "at the ceiling");
        let done = ResourceWatch::default();
        done.end(900);
        assert_eq!(fuel_step(&done, 1000, 100, 4000), FuelStep::Carry, "the mirror needed no more");
    }
}
