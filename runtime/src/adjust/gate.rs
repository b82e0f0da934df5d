//! The effect gate: the primary waits for the mirror before it does what
//! cannot be undone.
//!
//! Before each unsafe outbound call of the primary, the gate waits until
//! the mirror has made the same call (its n-th unsafe call) or has ended,
//! bounded by `prediction.gate_timeout_ms`. It then scores the mirror's
//! trace so far. When the failure probability reaches
//! `prediction.threshold`, the suggested action decides:
//!
//! - `divert` (when an alternative path exists) and `fail_fast`: the call is
//!   refused and never sent; the primary's other effects are still only
//!   buffered, so stopping it undoes nothing. On the last path, a divert
//!   before an unsafe call fails fast from `prediction.last_path_fail_fast`
//!   (0.9) on;
//! - `hedge` (when an alternative path exists): the runtime starts the next
//!   path beside the primary, and the two race (see `hedge.rs`);
//! - `adjust_timeouts`: the outbound timeout (and the wall time) are raised
//!   to cover the predicted latency, up to the policy's ceilings;
//! - `delay`: the call waits until the endpoint's rate-limit window frees
//!   (`rate_limit_wait_ms`), then goes: a 429 the endpoint would answer now
//!   is not sent for. A wait longer than `prediction.max_delay_ms`, or at an
//!   endpoint that refuses most requests (`rate_limited_share` of 0.5 or
//!   more: a spent quota, where waiting earns another 429), diverts instead
//!   when an alternative path exists; without one, the attempt's wall time
//!   bounds the wait.
//!
//! Three kinds of call go whatever the gate would have done, and the
//! verdict records what that was: a probe of an endpoint whose calls are
//! held back (`probe:ACTION`, a half-open breaker's trial call); a call
//! that only the online model's share carried over the threshold, when the
//! model's record of such calls does not earn acting on it
//! (`trial:ACTION`, see `predict/standing.rs`); and the policy's
//! exploration share (`explored:ACTION`). Their outcomes are honest labels.
//!
//! In a hedge race, the call then waits for the race's token. The decision
//! is recorded in the primary's trace and read by the runtime when the
//! attempt ends.

use crate::adjust::grants::ResourceWatch;
use crate::adjust::hedge::HedgeSeat;
use crate::adjust::timeouts::AttemptTimeouts;
use crate::predict::{FeatureAccumulator, Prediction, TraceTotals};
use crate::trace::{HostCall, Trace, TraceEvent, TraceRecorder};
use crate::vocab::{Action, Failure, FailureKind, GateStage, GateVerdict};
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
    /// Stop: the other path of the hedge won.
    Cancelled,
}

impl GateDecision {
    /// How the primary the gate stopped ended: the one mapping from a
    /// decision to a failure, for the gate before an unsafe call and the
    /// gate before the commit alike.
    pub(crate) fn failure(&self) -> Failure {
        let stopped = |kind: FailureKind, what: &str, prediction: &Prediction| {
            let reasons: Vec<&str> = prediction.reasons.iter().map(|r| r.reason.as_str()).collect();
            Failure::new(
                kind,
                format!(
                    "{what} before any effect (failure probability {:.2}): {}",
                    prediction.failure_probability,
                    reasons.join("; ")
                ),
            )
        };
        match self {
            Self::Divert(prediction) => stopped(FailureKind::Diverted, "diverted to the next path", prediction),
            Self::FailFast(prediction) => stopped(FailureKind::PredictedFailure, "stopped", prediction),
            Self::Cancelled => Failure::new(
                FailureKind::Cancelled,
                "cancelled before any unsafe call: the other path of the hedge won",
            ),
        }
    }
}

/// The path a diversion would run: it says whether running it is worth
/// it for an attempt predicted to fail with a given probability (see
/// `PathHistory::worth_diverting_to`).
#[derive(Clone)]
pub(crate) struct NextPath(Arc<dyn Fn(f32) -> bool + Send + Sync>);

impl NextPath {
    pub(crate) fn new(worth: impl Fn(f32) -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(worth))
    }
}

impl std::fmt::Debug for NextPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NextPath")
    }
}

/// Whether the gate acts on a call that only the model's share carried
/// over the given threshold: as often as the model's record of such calls
/// earns (see `predict/standing.rs`).
#[derive(Clone)]
pub(crate) struct LoneModel(Arc<dyn Fn(f32) -> bool + Send + Sync>);

impl LoneModel {
    pub(crate) fn new(acts: impl Fn(f32) -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(acts))
    }
}

impl std::fmt::Debug for LoneModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoneModel")
    }
}

/// What the gate may do besides refusing calls.
#[derive(Debug, Clone)]
pub(crate) struct GateActions {
    /// The alternative path, if one exists: the gate may divert or hedge.
    pub(crate) next_path: Option<NextPath>,
    /// The attempt's seat in a hedge race, if it may race.
    pub(crate) seat: Option<HedgeSeat>,
    /// How long a primary that asked for its hedge yields the token to it.
    pub(crate) hedge_yield: Duration,
    /// The attempt's timeouts, which `adjust_timeouts` raises.
    pub(crate) timeouts: Arc<AttemptTimeouts>,
    /// The policy's outbound timeout, which latency features are relative to, in ms.
    pub(crate) base_outbound_timeout_ms: u64,
    /// The attempt is in the exploration share: the gate decides and records
    /// as usual, but carries nothing out, so that its label stays honest.
    pub(crate) explore: bool,
    /// Whether to act on a call only the model carried, else try it.
    pub(crate) lone_model: LoneModel,
    /// The mirror's fuel so far, for scoring before it has ended.
    pub(crate) watch: Option<Arc<ResourceWatch>>,
    /// The longest a call is held for a rate limit (`delay`) when another
    /// path could take it instead.
    pub(crate) max_delay: Duration,
    /// Without a next path, the probability from which a divert fails the
    /// attempt fast instead (`prediction.last_path_fail_fast`).
    pub(crate) last_path_fail_fast: f32,
}

/// Scores a mirror's trace so far: folds the new calls into the
/// accumulator, then scores its features with the totals.
pub(crate) type Scorer = Box<dyn Fn(&mut FeatureAccumulator, &[TraceEvent], &TraceTotals) -> Prediction + Send + Sync>;

/// The gate of one attempt, shared by its primary and its mirror.
pub(crate) struct Gate {
    mirror: TraceRecorder,
    progress: Arc<Notify>,
    mirror_ended: AtomicBool,
    scorer: Scorer,
    /// The mirror's features so far: each call is folded in once.
    accumulator: Mutex<FeatureAccumulator>,
    /// The prediction at the first unsafe call: the one decisions were made on.
    first: Mutex<Option<Prediction>>,
    threshold: f32,
    timeout: Duration,
    actions: GateActions,
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

fn is_unsafe_call(event: &TraceEvent) -> bool {
    matches!(event.call, HostCall::Http { safe: false, .. })
}

impl Gate {
    /// A gate and the recorder the mirror must use, so the gate sees it grow.
    pub(crate) fn new(
        started: Instant,
        scorer: Scorer,
        threshold: f32,
        timeout: Duration,
        actions: GateActions,
    ) -> (Arc<Self>, TraceRecorder) {
        let progress = Arc::new(Notify::new());
        let mirror = TraceRecorder::watched(started, progress.clone());
        let gate = Arc::new(Self {
            mirror: mirror.clone(),
            progress,
            mirror_ended: AtomicBool::new(false),
            scorer,
            accumulator: Mutex::new(FeatureAccumulator::default()),
            first: Mutex::new(None),
            threshold,
            timeout,
            actions,
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

    /// Scores the mirror's calls so far, folding in only the new ones. The
    /// totals are the mirror's once it has ended; before, only its calls count.
    fn score(&self, totals: Option<TraceTotals>) -> Prediction {
        let mut accumulator = self.accumulator.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let new = self.mirror.events_since(accumulator.seen());
        let totals = totals.unwrap_or_else(|| TraceTotals {
            host_calls: accumulator.seen() + new.len(),
            fuel_consumed: self.actions.watch.as_ref().map_or(0, |w| w.mirror_consumed()),
            memory_peak_bytes: self.actions.watch.as_ref().map_or(0, |w| w.mirror_memory()),
            ..Default::default()
        });
        (self.scorer)(&mut accumulator, &new, &totals)
    }

    /// The prediction the first unsafe call's gate made, if there was one.
    pub(crate) fn first_prediction(&self) -> Option<Prediction> {
        self.first.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The prediction on the mirror's whole trace, once the twins are done.
    pub(crate) fn score_final(&self, mirror: &Trace) -> Prediction {
        self.score(Some(TraceTotals::of(mirror)))
    }

    /// The gate before the commit, given the final prediction: a primary that
    /// has sent no unsafe call yet may still be diverted or failed fast, as
    /// nothing it did has left the host. Returns the verdict and the
    /// decision, if it stops the commit.
    pub(crate) fn before_commit(
        &self,
        prediction: &Prediction,
        sent_unsafe: bool,
    ) -> (GateVerdict, Option<GateDecision>) {
        if sent_unsafe {
            return (GateVerdict::Pass, None);
        }
        // Asked only now: asking whether the next path is worth diverting
        // to counts as wanting it (see `PathHistory::worth_diverting_to`).
        match self.intended(prediction, false) {
            Some(action) if self.on_trial(prediction) => (GateVerdict::Trial(action), None),
            Some(action) if prediction.probe => (GateVerdict::Probe(action), None),
            Some(action) if self.actions.explore => (GateVerdict::Explored(action), None),
            Some(Action::Divert) => (GateVerdict::Divert, Some(GateDecision::Divert(prediction.clone()))),
            Some(Action::FailFast) => (GateVerdict::FailFast, Some(GateDecision::FailFast(prediction.clone()))),
            _ => (GateVerdict::Pass, None),
        }
    }

    /// Whether diverting the attempt is worth it: another path exists, and
    /// it is likelier to succeed than this attempt is predicted to (or
    /// goes as a probe of it).
    fn divert_helps(&self, prediction: &Prediction) -> bool {
        self.actions.next_path.as_ref().is_some_and(|next| (next.0)(prediction.failure_probability))
    }

    /// Whether a prediction that reaches the threshold goes as a trial:
    /// the online model's share alone carried it there (the rules stay
    /// below), and the model's record of such calls does not earn acting
    /// on this one. Asked only when the gate would act, since asking counts.
    fn on_trial(&self, prediction: &Prediction) -> bool {
        prediction.learnt_probability.is_some()
            && prediction.rules_probability < self.threshold
            && !(self.actions.lone_model.0)(self.threshold)
    }

    /// The action the gate takes on a prediction, if any: the suggested one,
    /// when the probability reaches the threshold and the action is possible
    /// here (a hedge and timeouts only before an unsafe call).
    fn intended(&self, prediction: &Prediction, before_unsafe_call: bool) -> Option<Action> {
        if prediction.failure_probability < self.threshold {
            return None;
        }
        let actions = &self.actions;
        match prediction.suggested_action() {
            Action::Divert if self.divert_helps(prediction) => Some(Action::Divert),
            // Nowhere to divert to, and the unsafe call all but certain to
            // fail: it is not sent only to fail. (Before the commit, nothing
            // has left the host, and a failed attempt is retried from a
            // fresh snapshot, which often goes through: a commit predicted
            // to conflict is no reason to fail the transaction.)
            Action::Divert
                if before_unsafe_call
                    && actions.next_path.is_none()
                    && prediction.failure_probability >= actions.last_path_fail_fast =>
            {
                Some(Action::FailFast)
            }
            Action::FailFast => Some(Action::FailFast),
            Action::Hedge
                if before_unsafe_call
                    && actions.next_path.is_some()
                    && actions.seat.as_ref().is_some_and(HedgeSeat::is_primary) =>
            {
                Some(Action::Hedge)
            }
            Action::AdjustTimeouts if before_unsafe_call => Some(Action::AdjustTimeouts),
            Action::Delay if before_unsafe_call => Some(Action::Delay),
            _ => None,
        }
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
            if self.mirror_ended.load(Ordering::SeqCst) || self.mirror.count(is_unsafe_call) >= nth {
                break;
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                timed_out = true;
                break;
            }
        }
        let prediction = self.score(None);
        self.first.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_or_insert_with(|| prediction.clone());
        let actions = &self.actions;
        let mut decision = None;
        let mut verdict = GateVerdict::Pass;
        match self.intended(&prediction, true) {
            None => {}
            // Carried by the model alone, which has not earned acting on
            // this one: the call goes as a trial of its standing. Asked
            // first, so that the exploration share is judged as the gate
            // would have judged it.
            Some(action) if self.on_trial(&prediction) => verdict = GateVerdict::Trial(action),
            // A probe of a held endpoint, or the exploration share: what
            // the gate would have done is recorded, and the call goes, to
            // be measured.
            Some(action) if prediction.probe => verdict = GateVerdict::Probe(action),
            Some(action) if actions.explore => verdict = GateVerdict::Explored(action),
            Some(Action::Divert) => {
                decision = Some(GateDecision::Divert(prediction.clone()));
                verdict = GateVerdict::Divert;
            }
            Some(Action::FailFast) => {
                decision = Some(GateDecision::FailFast(prediction.clone()));
                verdict = GateVerdict::FailFast;
            }
            Some(Action::Hedge) => {
                if let Some(seat) = &actions.seat {
                    seat.request_hedge();
                    verdict = GateVerdict::Hedge;
                }
            }
            Some(Action::AdjustTimeouts) => {
                let predicted_ms =
                    f64::from(prediction.features.outbound_latency_ratio) * actions.base_outbound_timeout_ms as f64;
                if let Some(raised) = actions.timeouts.raise_for(predicted_ms) {
                    for (resource, (from, to)) in
                        [("outbound_timeout_ms", raised.outbound), ("wall_time_ms", raised.wall)]
                    {
                        let needed = predicted_ms as u64;
                        primary.record(HostCall::Grant { resource: resource.into(), from, to, mirror_needed: needed });
                    }
                    verdict = GateVerdict::AdjustTimeouts;
                }
            }
            Some(Action::Delay) => {
                let wanted = f64::from(prediction.features.rate_limit_wait_ms.max(0.0)) / 1000.0;
                let wanted = Duration::try_from_secs_f64(wanted).unwrap_or(Duration::MAX);
                // Waiting works while the endpoint takes most requests; when
                // it refuses most (a spent quota), waiting only earns another 429.
                let futile = prediction.features.rate_limited_share >= 0.5;
                if (wanted > actions.max_delay || futile) && self.divert_helps(&prediction) {
                    // Longer than worth waiting, or futile: the next path goes at once.
                    decision = Some(GateDecision::Divert(prediction.clone()));
                    verdict = GateVerdict::Divert;
                } else if !wanted.is_zero() {
                    // Without another path, waiting is all there is: the
                    // attempt's wall time bounds it.
                    tokio::time::sleep(wanted).await;
                    verdict = GateVerdict::Delay;
                }
            }
            Some(_) => {}
        }
        // In a hedge race, nothing irreversible happens without the token.
        // A primary that has just asked for its hedge lets the hedge reach
        // its own unsafe call first: it is the one the predictor doubts.
        let claimed = |seat: &HedgeSeat| {
            let seat = seat.clone();
            let yielding = verdict == GateVerdict::Hedge;
            let window = actions.hedge_yield;
            async move { if yielding { seat.claim_yielding(window).await } else { seat.claim().await } }
        };
        if decision.is_none()
            && let Some(seat) = &actions.seat
            && claimed(seat).await.is_err()
        {
            decision = Some(GateDecision::Cancelled);
            verdict = GateVerdict::Cancelled;
        }
        let waited_micros = primary.now_micros().saturating_sub(at);
        tell(&prediction, verdict, GateStage::UnsafeCall, waited_micros, timed_out);
        primary.record_since(
            at,
            HostCall::Gate {
                waited_micros,
                timed_out,
                failure_probability: prediction.failure_probability,
                reasons: prediction.reasons.iter().map(|r| r.rule.clone()).collect(),
                decision: verdict,
                before: GateStage::UnsafeCall,
            },
        );
        match decision {
            None => Verdict::Pass,
            Some(decision) => {
                let text = match &decision {
                    GateDecision::Cancelled => "cancelled: the other path of the hedge won".to_string(),
                    _ => {
                        let reasons: Vec<&str> = prediction.reasons.iter().map(|r| r.reason.as_str()).collect();
                        format!("stopped by the predictor ({verdict}): {}", reasons.join("; "))
                    }
                };
                *self.decision.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(decision);
                Verdict::Stop(text)
            }
        }
    }
}

/// Tells the process's `tracing` subscriber of a decision of the gate, as
/// an event of the attempt it stands in (exported to OpenTelemetry when
/// that is on, see `txmirror_service::telemetry`): the probability, which
/// model scored it, the rules that held and why, and what the gate did.
pub(crate) fn tell(
    prediction: &Prediction,
    verdict: GateVerdict,
    before: GateStage,
    waited_micros: u64,
    timed_out: bool,
) {
    tracing::info!(
        txmirror.gate.decision = %verdict,
        txmirror.gate.before = %before,
        txmirror.gate.failure_probability = f64::from(prediction.failure_probability),
        txmirror.gate.source = prediction.source.as_str(),
        txmirror.gate.rules = tracing::field::display(Joined(prediction.reasons.iter().map(|r| r.rule.as_str()))),
        txmirror.gate.reasons = tracing::field::display(Joined(prediction.reasons.iter().map(|r| r.reason.as_str()))),
        txmirror.gate.waited_micros = waited_micros,
        txmirror.gate.timed_out = timed_out,
        "gate",
    );
}

/// Items written one after another, `; ` between them; written only when
/// a subscriber asks for the field.
struct Joined<I>(I);

impl<'a, I: Iterator<Item = &'a str> + Clone> std::fmt::Display for Joined<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, item) in self.0.clone().enumerate() {
            if n > 0 {
                f.write_str("; ")?;
            }
            f.write_str(item)?;
        }
        Ok(())
    }
}
