//! The effect gate: the primary waits for the mirror before it does what
//! cannot be undone.
//!
//! Before each unsafe outbound call of the primary, the gate waits until
//! the mirror has made the same call (its n-th unsafe call) or has ended,
//! bounded by `prediction.gate_timeout_ms`. It then scores the mirror's
//! trace so far. When the failure probability reaches
//! `prediction.threshold` and the heaviest reason's action is `divert`
//! (and an alternative path exists) or `fail_fast`, the call is refused and
//! never sent: the primary's other effects are still only buffered, so
//! stopping it undoes nothing. The decision is recorded in the primary's
//! trace and read by the runtime when the attempt ends.

use crate::predict::{Action, Prediction};
use crate::trace::{HostCall, Role, Trace, TraceEvent, TraceRecorder};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// What the gate decided for the primary.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum GateDecision {
    /// Stop and restart on the next alternative path.
    Divert(Prediction),
    /// Stop: the transaction is certain to fail.
    FailFast(Prediction),
}

/// Scores a mirror's trace so far.
pub(crate) type Scorer = Box<dyn Fn(&Trace) -> Prediction + Send + Sync>;

/// The gate of one attempt, shared by its primary and its mirror.
pub(crate) struct Gate {
    mirror: TraceRecorder,
    progress: Arc<Notify>,
    mirror_ended: AtomicBool,
    scorer: Scorer,
    threshold: f32,
    timeout: Duration,
    can_divert: bool,
    decision: Mutex<Option<GateDecision>>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("threshold", &self.threshold)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What the primary's call should do.
pub(crate) enum Verdict {
    /// Send it.
    Pass,
    /// Refuse it, with the reason given to the guest.
    Stop(String),
}

fn unsafe_calls(events: &[TraceEvent]) -> usize {
    events.iter().filter(|e| matches!(e.call, HostCall::Http { safe: false, .. })).count()
}

impl Gate {
    /// A gate and the recorder the mirror must use, so the gate sees it grow.
    pub(crate) fn new(
        started: Instant,
        scorer: Scorer,
        threshold: f32,
        timeout: Duration,
        can_divert: bool,
    ) -> (Arc<Self>, TraceRecorder) {
        let progress = Arc::new(Notify::new());
        let mirror = TraceRecorder::watched(started, progress.clone());
        let gate = Arc::new(Self {
            mirror: mirror.clone(),
            progress,
            mirror_ended: AtomicBool::new(false),
            scorer,
            threshold,
            timeout,
            can_divert,
            decision: Mutex::new(None),
        });
        (gate, mirror)
    }

    /// Called when the mirror has ended, however it ended.
    pub(crate) fn mirror_ended(&self) {
        self.mirror_ended.store(true, Ordering::SeqCst);
        self.progress.notify_waiters();
    }

    /// The decision taken, if the gate stopped the primary.
    pub(crate) fn decision(&self) -> Option<GateDecision> {
        self.decision.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Waits before the primary's `nth` unsafe call (from 1), which started
    /// at `at` (µs), scores, decides, and records the decision in the
    /// primary's trace, where it sorts just before the call it guards.
    pub(crate) async fn before_unsafe_call(&self, nth: usize, at: u64, primary: &TraceRecorder) -> Verdict {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut timed_out = false;
        loop {
            // Register before checking, so that no wake-up is missed.
            let woken = self.progress.notified();
            if self.mirror_ended.load(Ordering::SeqCst) || unsafe_calls(&self.mirror.events_so_far()) >= nth {
                break;
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                timed_out = true;
                break;
            }
        }
        let trace = Trace {
            role: Role::Mirror,
            events: self.mirror.events_so_far(),
            fuel_consumed: 0,
            memory_peak_bytes: 0,
            duration_micros: 0,
            ended: String::new(),
            output: None,
            failure: None,
        };
        let prediction = (self.scorer)(&trace);
        let decision = if prediction.failure_probability < self.threshold {
            None
        } else {
            match prediction.suggested_action() {
                Action::Divert if self.can_divert => Some(GateDecision::Divert(prediction.clone())),
                Action::FailFast => Some(GateDecision::FailFast(prediction.clone())),
                _ => None,
            }
        };
        let name = match &decision {
            None => "pass",
            Some(GateDecision::Divert(_)) => "divert",
            Some(GateDecision::FailFast(_)) => "fail_fast",
        };
        primary.record_since(
            at,
            HostCall::Gate {
                waited_micros: primary.now_micros().saturating_sub(at),
                timed_out,
                failure_probability: prediction.failure_probability,
                reasons: prediction.reasons.iter().map(|r| r.rule.clone()).collect(),
                decision: name.to_string(),
            },
        );
        match decision {
            None => Verdict::Pass,
            Some(decision) => {
                let reasons: Vec<&str> = prediction.reasons.iter().map(|r| r.reason.as_str()).collect();
                let text = format!("stopped by the predictor ({name}): {}", reasons.join("; "));
                *self.decision.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(decision);
                Verdict::Stop(text)
            }
        }
    }
}
