//! One attempt of a transaction: its twins from one snapshot, the gate,
//! the prediction, the success criteria, and its end: committed, or failed
//! with its report kept. A try of a path is an attempt, or an attempt and
//! its hedge racing (see `adjust/hedge.rs`).

use super::dead_letters::{compensated, replayed};
use super::{AttemptEnd, ExecuteError, Purpose, Runtime, TransactionRun, sent_unsafe};
use crate::adjust::gate::{Gate, GateActions, GateDecision, LoneModel, NextPath, Scorer};
use crate::adjust::grants::ResourceWatch;
use crate::adjust::hedge::{HedgeRace, HedgeSeat};
use crate::adjust::timeouts::{AttemptTimeouts, Timeouts};
use crate::attempt::mirroring::{draw, sampled};
use crate::contention::{Turn, WriteClaims};
use crate::instance::executor::{InstanceRun, run_instance};
use crate::instance::host::{EffectJournal, EventTap, InstanceSetup, MirrorFiles};
use crate::instance::module::Module;
use crate::policy::Policy;
use crate::predict::history::Request;
use crate::predict::paths::BaselineSample;
use crate::predict::{
    EndpointView, FeatureAccumulator, FeatureContext, InputProfile, ModelScore, Prediction, TraceTotals,
};
use crate::store::{
    Attempt, AttemptOutcome, CommitError, CommitRequest, Fence, StoreError, TransactionOutcome, TransactionRecord,
};
use crate::trace::{HostCall, TraceEvent, TraceRecorder};
use crate::transaction::status::Ended;
use crate::transaction::{AttemptReport, HedgeStart, HedgeTrigger, TxReport, history};
use crate::vocab::{CancelToken, Failure, FailureKind, GateStage, Role};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tracing::Instrument as _;
use tracing::field::Empty;

/// What the draw for the model's standing is taken for, so that it is
/// independent of the exploration share's.
const STANDING_SALT: &[u8] = b"standing";

/// An attempt that has run, before its commit.
struct Prepared {
    report: AttemptReport,
    /// The primary's effects and output, or why the attempt failed.
    result: Result<Ready, Failure>,
    /// What the mirror used, for the path's baseline, if it ran to the end
    /// without failing.
    baseline: Option<BaselineSample>,
    /// The timeouts, if the predictor raised them.
    raised_timeouts: Option<Timeouts>,
    /// The primary's write set stays announced until the attempt is concluded.
    write_claims: Arc<WriteClaims>,
    /// What the transaction's input says to the predictor.
    input: Arc<InputProfile>,
    /// The attempt's span, which its commit and its outcome go in.
    span: tracing::Span,
}

/// What a successful primary leaves to commit.
struct Ready {
    reads: Vec<crate::store::ReadEntry>,
    writes: Vec<crate::store::WriteEntry>,
    events: Vec<crate::store::EventEntry>,
    output: Vec<u8>,
}

/// What an attempt inherits from its transaction.
#[derive(Clone, Copy)]
struct AttemptSeed<'a> {
    number: u32,
    random_seed: u64,
    clock: SystemTime,
    input: &'a [u8],
    carried_timeouts: Option<Timeouts>,
    /// The mirror runs beside the primary (see `mirroring.rs`).
    mirrored: bool,
    /// The attempt is in the policy's exploration share: nothing is adjusted.
    explore: bool,
    /// The uniform draw that decides whether the gate acts on a call only
    /// the model's share carried (see `predict/standing.rs`).
    standing_draw: f64,
    /// Why the transaction runs.
    purpose: Purpose,
    /// The transaction whose effect journal the attempt keys and records
    /// its calls in (its own, or the one a replay continues), and the lease
    /// it runs under.
    transaction_id: &'a str,
    /// The transaction whose sent calls the guest is told of.
    facts_of: &'a str,
    fence: Option<&'a Fence>,
    /// The caller's cancel flag, if the transaction can be cancelled.
    cancel: Option<&'a CancelToken>,
}

/// The failure of an attempt that lost a hedge race.
fn cancelled() -> Failure {
    GateDecision::Cancelled.failure()
}

/// The failure of a transaction its caller cancelled `when`, and what its
/// last attempt had failed of meanwhile, if anything.
pub(super) fn cancelled_by_caller(meanwhile: Option<Failure>, when: &str) -> Failure {
    match meanwhile {
        Some(failure) if failure.kind == FailureKind::CancelledByCaller => failure,
        Some(failure) => Failure::new(
            FailureKind::CancelledByCaller,
            format!(
                "its caller cancelled the transaction {when} (its attempt had ended {}: {})",
                failure.kind, failure.message
            ),
        ),
        None => Failure::new(FailureKind::CancelledByCaller, format!("its caller cancelled the transaction {when}")),
    }
}

/// How the gate before the commit waited for the mirror: from when, on the
/// primary trace's clock, how long, and whether it gave up.
#[derive(Debug, Clone, Copy)]
struct CommitWait {
    at_micros: u64,
    waited_micros: u64,
    timed_out: bool,
}

/// What one try runs: a path, on an input, and the path after it, where
/// a divert goes and what a hedge runs.
#[derive(Debug, Clone, Copy)]
pub(super) struct PathTry<'a> {
    pub(super) path: &'a str,
    pub(super) next_path: Option<&'a str>,
    pub(super) input: &'a [u8],
}

impl Runtime {
    /// One try of a path: an attempt, or, when the gate asks for a hedge,
    /// the attempt and a hedge on the next path racing (see `hedge.rs`).
    pub(super) async fn try_path(
        &self,
        module: &Module,
        policy: &Arc<Policy>,
        what: PathTry<'_>,
        run: &mut TransactionRun,
        turn: &mut Option<Turn>,
    ) -> Result<AttemptEnd, ExecuteError> {
        let PathTry { path, next_path, input } = what;
        // Owned here, so that the attempts' seeds do not borrow `run`. A
        // replay that continues its letter's transaction keys and journals
        // its calls as that transaction (see `replay_dead_letter`).
        let journal_id = match run.purpose {
            Purpose::Replay => replayed(&run.id).unwrap_or(&run.id),
            Purpose::Request | Purpose::Compensation => &run.id,
        };
        let (transaction_id, fence, cancel) = (journal_id.to_string(), run.fence.clone(), run.cancel.clone());
        // A compensation is told what the transaction it compensates sent.
        let facts_of = match run.purpose {
            Purpose::Compensation => compensated(&run.id).unwrap_or(&run.id).to_string(),
            Purpose::Request | Purpose::Replay => transaction_id.clone(),
        };
        let number = u32::try_from(run.attempts.len() + 1).unwrap_or(u32::MAX);
        let share = policy.prediction.exploration_share;
        let who = (module.hash(), path, run.caller.as_str());
        let mirrored = self.inner.prior.choose(policy, who, &run.id, number, &self.inner.endpoints.health).mirrored();
        let seed = AttemptSeed {
            number,
            random_seed: run.random_seed,
            clock: run.clock,
            input,
            carried_timeouts: run.raised_timeouts.get(path).copied(),
            mirrored,
            explore: mirrored && sampled(&run.id, number, share),
            standing_draw: draw(&run.id, number, STANDING_SALT),
            purpose: run.purpose,
            transaction_id: &transaction_id,
            facts_of: &facts_of,
            fence: fence.as_ref(),
            cancel: cancel.as_ref(),
        };
        let hedge_path = next_path.filter(|_| mirrored);
        let Some(hedge_path) = hedge_path else {
            let span = attempt_span(number, path, mirrored);
            let prepared = self.prepare(module, policy, path, next_path, seed, None).instrument(span).await?;
            return self.conclude(module, prepared, run, turn).await;
        };

        let (primary_seat, hedge_seat) = HedgeRace::start();
        let primary = self
            .prepare(module, policy, path, next_path, seed, Some(primary_seat.clone()))
            .instrument(attempt_span(number, path, mirrored));
        let mut primary = std::pin::pin!(primary);
        // The hedge starts when the primary has run past the policy's delay,
        // or when its gate asks for it, whichever comes first.
        let started = Instant::now();
        let delay = self.inner.hedge_delays.delay(module.hash(), path, &policy.hedge);
        let delayed = async move {
            match delay {
                Some(delay) => tokio::time::sleep(delay).await,
                None => std::future::pending().await,
            }
        };
        let by = tokio::select! {
            biased;
            prepared = &mut primary => return self.conclude(module, prepared?, run, turn).await,
            () = primary_seat.hedge_requested() => HedgeTrigger::Predictor,
            () = delayed => HedgeTrigger::Delay,
        };
        let hedge_start = HedgeStart {
            of_attempt: seed.number,
            after_micros: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            by,
        };
        let hedge_number = seed.number.saturating_add(1);
        let hedge_seed = AttemptSeed {
            number: hedge_number,
            carried_timeouts: run.raised_timeouts.get(hedge_path).copied(),
            explore: mirrored && sampled(&run.id, hedge_number, share),
            standing_draw: draw(&run.id, hedge_number, STANDING_SALT),
            ..seed
        };
        let hedge = self
            .prepare(module, policy, hedge_path, None, hedge_seed, Some(hedge_seat))
            .instrument(attempt_span(hedge_number, hedge_path, mirrored));
        let (primary, hedge) = tokio::join!(primary, hedge);
        let (primary, mut hedge) = (primary?, hedge?);
        hedge.report.hedge = Some(hedge_start);
        // At most one is ready to commit: the race's winner.
        let (winner, loser) = if hedge.result.is_ok() { (hedge, primary) } else { (primary, hedge) };
        // The loser only goes into the history: its result is a failure.
        self.conclude(module, loser, run, turn).await?;
        self.conclude(module, winner, run, turn).await
    }

    /// Runs one attempt up to its commit: the twins from a fresh snapshot,
    /// the gate's decisions, the prediction and the success criteria.
    /// `next_path` is where the gate may divert it or hedge it to.
    async fn prepare(
        &self,
        module: &Module,
        policy: &Arc<Policy>,
        path: &str,
        next_path: Option<&str>,
        seed: AttemptSeed<'_>,
        seat: Option<HedgeSeat>,
    ) -> Result<Prepared, ExecuteError> {
        let number = seed.number;
        let snapshot = self.inner.store.snapshot()?;
        let mut setup = InstanceSetup::new(
            policy.clone(),
            snapshot.clone(),
            seed.random_seed,
            seed.clock,
            self.inner.endpoints.clone(),
        );
        setup.timeouts = Arc::new(AttemptTimeouts::new(&policy.resource_requirements, seed.carried_timeouts));
        setup.cancelled = seat.as_ref().map(HedgeSeat::cancelled);
        setup.caller_cancel = seed.cancel.cloned();
        setup.adjust = !seed.explore;
        setup.input = Arc::new(InputProfile::read(seed.input, &policy.prediction.inputs, path));
        setup.journal = Some(Arc::new(EffectJournal::new(
            (self.inner.store.clone(), self.inner.journal.clone()),
            (seed.transaction_id.to_string(), seed.facts_of.to_string()),
            path.to_string(),
            seed.fence.cloned(),
            (policy.effects.clone(), policy.redaction.clone()),
        )));
        // Only a policy with read-write directories has anything to copy:
        // the others pay no blocking task per attempt.
        if seed.mirrored && MirrorFiles::needed(policy) {
            let policy = policy.clone();
            setup.mirror_files =
                tokio::task::spawn_blocking(move || MirrorFiles::copy(&policy).map(Arc::new)).await.ok().flatten();
        }
        // The mirror's events, published as it emits them, before the
        // primary commits (settled in `conclude`).
        if seed.mirrored {
            self.inner.predicted.expect(seed.transaction_id, number);
            let (predicted, id) = (self.inner.predicted.clone(), seed.transaction_id.to_string());
            setup.event_tap =
                Some(EventTap::new(move |stream, payload| predicted.publish(&id, number, stream, payload)));
        }
        let write_claims = self.inner.in_flight_writes.claims();
        let owner = write_claims.owner();
        setup.write_claims = Some(write_claims.clone());
        let started = Instant::now();
        // The newest versions of the keys the mirror read, asked for without
        // blocking once the mirror has ended (see `predict`).
        let latest: Latest = Arc::default();
        let mirror_trace = if seed.mirrored {
            let scorer: Scorer = {
                let (runtime, module, path, policy) = (self.clone(), module.clone(), path.to_string(), policy.clone());
                let (input, latest) = (setup.input.clone(), latest.clone());
                Box::new(move |accumulator: &mut FeatureAccumulator, new: &[TraceEvent], totals: &TraceTotals| {
                    let known = latest.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    runtime.predict(
                        &module,
                        &path,
                        &policy,
                        (accumulator, new, totals),
                        (number, owner, &input),
                        &known,
                    )
                })
            };
            let timeout = Duration::from_millis(policy.prediction.gate_timeout_ms);
            let actions = GateActions {
                next_path: next_path.map(|next| {
                    let (runtime, module, next) = (self.clone(), module.hash().to_string(), next.to_string());
                    let (evidence, input) = (policy.prediction.evidence(), setup.input.clone());
                    NextPath::new(move |predicted| {
                        let key = (module.as_str(), next.as_str(), input.conditions.as_slice());
                        runtime.inner.paths.worth_diverting_to(key, predicted, &evidence, Instant::now())
                    })
                }),
                seat: seat.clone(),
                hedge_yield: Duration::from_millis(policy.hedge.yield_ms),
                timeouts: setup.timeouts.clone(),
                base_outbound_timeout_ms: policy.resource_requirements.outbound_timeout_ms,
                explore: seed.explore,
                lone_model: {
                    let (runtime, draw) = (self.clone(), seed.standing_draw);
                    LoneModel::new(move |threshold| runtime.inner.online.acts_alone(threshold, draw))
                },
                watch: None,
                max_delay: Duration::from_millis(policy.prediction.max_delay_ms),
                last_path_fail_fast: policy.prediction.last_path_fail_fast,
            };
            let watch = Arc::new(ResourceWatch::default());
            let actions = GateActions { watch: Some(watch.clone()), ..actions };
            let (gate, mirror_trace) = Gate::new(started, scorer, policy.prediction.threshold, timeout, actions);
            setup.gate = Some(gate);
            setup.resource_watch = Some(watch);
            Some(mirror_trace)
        } else {
            None
        };
        let (mut primary, mirror, commit_wait) = self.run_twins(module, &setup, path, seed.input, mirror_trace).await;
        // The gate's decision overrides how the primary, stopped by it, ended.
        if let Some(decision) = setup.gate.as_ref().and_then(|gate| gate.decision()) {
            primary.result = Err(decision.failure());
        }
        // So does what the effect journal found: a call that must not be
        // sent ends the attempt, whatever the guest made of the refusal.
        if let Some(failure) = setup.journal.as_ref().and_then(|journal| journal.failure()) {
            primary.result = Err(failure);
        }
        if let Some(mirror) = &mirror {
            let keys = read_keys(&mirror.trace.events);
            if !keys.is_empty()
                && let Ok(versions) = self.inner.store.latest_versions_async(&keys).await
            {
                latest.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(keys.into_iter().zip(versions));
            }
        }
        let prediction = match (&setup.gate, &mirror) {
            (Some(gate), Some(mirror)) => Some(gate.score_final(&mirror.trace)),
            _ => None,
        };
        // The gate before the commit: recorded, and acting while nothing the
        // primary did has left the host.
        if let (Some(gate), Some(prediction), Some(CommitWait { at_micros, waited_micros, timed_out })) =
            (&setup.gate, &prediction, commit_wait)
            && primary.result.is_ok()
        {
            let (name, decision) = gate.before_commit(prediction, sent_unsafe(&primary.trace));
            crate::adjust::gate::tell(prediction, name, GateStage::Commit, waited_micros, timed_out);
            primary.trace.events.push(TraceEvent {
                at_micros,
                duration_micros: waited_micros,
                call: HostCall::Gate {
                    waited_micros,
                    timed_out,
                    failure_probability: prediction.failure_probability,
                    reasons: prediction.reasons.iter().map(|r| r.rule.clone()).collect(),
                    decision: name,
                    before: GateStage::Commit,
                },
            });
            if let Some(decision) = decision {
                primary.result = Err(decision.failure());
            }
        }
        let duration_micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        // The baseline is learnt from the twin it is compared with: the
        // mirror, whose trace the predictor scores. The primary's counters
        // differ by design (its gate and grant events, real answers instead
        // of stubs), so a baseline of them made every mirror look deviant.
        let baseline = mirror.as_ref().filter(|mirror| mirror.trace.failure.is_none()).map(|mirror| {
            let totals = TraceTotals::of(&mirror.trace);
            BaselineSample { fuel: totals.fuel_consumed, host_calls: totals.host_calls, micros: totals.duration_micros }
        });
        let mut result = primary
            .result
            .and_then(|output| match seed.purpose {
                Purpose::Request | Purpose::Replay => check_success(policy, &output, duration_micros).map(|()| output),
                Purpose::Compensation => Ok(output),
            })
            .map(|output| Ready { reads: primary.reads, writes: primary.writes, events: primary.events, output });
        // The last place a cancel is looked at: an attempt ready to commit
        // commits nothing once its caller has cancelled, and one that failed
        // meanwhile (a call refused after the cancel, say) ends as cancelled.
        if seed.cancel.is_some_and(CancelToken::is_cancelled) {
            result = Err(cancelled_by_caller(result.err(), "before its commit"));
        }
        if let Some(seat) = &seat {
            // Ready to commit: win the race, or learn that the other won.
            match &result {
                Ok(_) if seat.win().await.is_err() => result = Err(cancelled()),
                Ok(_) => {}
                Err(_) if seat.cancelled().load(std::sync::atomic::Ordering::SeqCst) => result = Err(cancelled()),
                Err(_) => seat.release(),
            }
        }
        let outcome = match &result {
            Ok(_) => AttemptOutcome::Committed,
            Err(failure) => AttemptOutcome::Failed { kind: failure.kind, message: failure.message.clone() },
        };
        let attempt =
            Attempt { number, path: path.to_string(), outcome, snapshot_version: snapshot.version(), duration_micros };
        Ok(Prepared {
            report: AttemptReport {
                attempt,
                primary: primary.trace,
                mirror: mirror.map(|m| m.trace),
                prediction,
                gate_prediction: setup.gate.as_ref().and_then(|gate| gate.first_prediction()),
                explored: seed.explore,
                hedge: None,
                path_order: Vec::new(),
                split_arm: None,
            },
            result,
            baseline,
            raised_timeouts: setup.timeouts.raised().then(|| setup.timeouts.current()),
            write_claims,
            input: setup.input.clone(),
            span: tracing::Span::current(),
        })
    }

    /// Commits a prepared attempt if it succeeded, and records it in the
    /// transaction's history either way.
    async fn conclude(
        &self,
        module: &Module,
        prepared: Prepared,
        run: &mut TransactionRun,
        turn: &mut Option<Turn>,
    ) -> Result<AttemptEnd, ExecuteError> {
        // The claims are released when this returns, after the commit.
        let Prepared { mut report, result, baseline, raised_timeouts, write_claims: _claims, input, span } = prepared;
        let path = report.attempt.path.clone();
        if run.reports.is_empty() {
            report.path_order = run.path_order.clone();
            report.split_arm = run.split_arm.clone();
        }
        if let Some(raised) = raised_timeouts {
            run.raised_timeouts.insert(path.clone(), raised);
        }
        let result = match result {
            Err(failure) => Err(failure),
            Ok(ready) => {
                // The history is encoded from references: the traces are
                // the largest part of a transaction's data, and copying them
                // for the record would be the commit's largest cost.
                let mut history: Vec<&AttemptReport> = run.reports.iter().chain([&report]).collect();
                history.sort_by_key(|r| r.attempt.number);
                let record = TransactionRecord {
                    id: run.id.clone(),
                    module: module.hash().to_string(),
                    path: path.clone(),
                    input_hash: run.input_hash.clone(),
                    outcome: TransactionOutcome::Committed { version: 0, output: ready.output.clone() },
                    attempts: history.iter().map(|r| r.attempt.clone()).collect(),
                    history: history::encode(&history),
                };
                // What the primary commits settles what its mirror predicted
                // (an attempt without a mirror's trace predicted nothing, so
                // its events are not copied for that; the settling still
                // closes what the attempt opened).
                let emitted: Vec<(String, Vec<u8>)> = if report.mirror.is_some() {
                    ready.events.iter().map(|event| (event.stream.clone(), event.payload.clone())).collect()
                } else {
                    Vec::new()
                };
                let mut events = ready.events;
                let status = self.status_event(&Ended {
                    transaction_id: &run.id,
                    status: "committed",
                    module: module.hash(),
                    path: &path,
                    attempts: history.len(),
                    failure: None,
                    dead_lettered: false,
                    notify: run.notify.as_deref(),
                });
                events.extend(status);
                let commit = CommitRequest {
                    reads: ready.reads,
                    writes: ready.writes,
                    events,
                    record,
                    idempotency: run.claim.clone(),
                    fence: run.fence.clone(),
                };
                let committing = tracing::info_span!(parent: &span, "txmirror.commit", txmirror.version = Empty);
                let committed = self.inner.commits.commit(commit).instrument(committing.clone()).await;
                if let Ok(version) = &committed {
                    committing.record("txmirror.version", version);
                }
                match committed {
                    Ok(version) => {
                        let events = emitted.iter().map(|(stream, payload)| (stream.as_str(), payload.as_slice()));
                        self.inner.predicted.settle_committed(&run.id, report.attempt.number, events);
                        Ok((version, ready.output))
                    }
                    Err(CommitError::Conflict { namespace, key, read_version, current_version }) => {
                        // Release the old turn before waiting for the new one.
                        drop(turn.take());
                        *turn = Some(self.inner.hot_keys.take_turn(&namespace, &key).await);
                        Err(Failure::new(
                            FailureKind::Conflict,
                            format!(
                                "{namespace}/{key} was read at version {read_version} and changed at {current_version}"
                            ),
                        ))
                    }
                    Err(CommitError::DuplicateId(id)) => return Err(ExecuteError::DuplicateId(id)),
                    // Another process ran the same key first: answer with its outcome.
                    Err(CommitError::DuplicateIdempotencyKey { transaction_id, .. }) => {
                        return match self.transaction(&transaction_id)? {
                            Some(record) => Ok(AttemptEnd::Committed(TxReport::from_record(record))),
                            None => Err(ExecuteError::Store(StoreError::Corrupt {
                                what: format!("transaction {transaction_id}"),
                                reason: "its idempotency key is recorded, the transaction is not".into(),
                            })),
                        };
                    }
                    Err(CommitError::Store(error)) => return Err(ExecuteError::Store(error)),
                }
            }
        };

        if let Err(failure) = &result {
            let reason =
                format!("attempt {} ended {}: {}", report.attempt.number, failure.kind.as_str(), failure.message);
            self.inner.predicted.settle_failed(&run.id, report.attempt.number, &reason);
        }
        // An attempt the gate stopped says nothing of its path: counted as
        // the path's failure, it would raise the failure rate the predictor
        // reads, and each diversion would call for the next.
        if !result.as_ref().is_err_and(|failure| failure.kind.says_nothing_of_the_path()) {
            let key = (module.hash(), path.as_str(), input.conditions.as_slice());
            self.inner.paths.observe(key, baseline, result.is_err(), Instant::now());
        }
        if run.adaptive {
            let failure = result.as_ref().err().map(|failure| failure.kind);
            self.inner.prior.observe((module.hash(), &path, &run.caller), failure, &report.primary.events);
        }
        match &result {
            Err(failure) => {
                span.record("txmirror.outcome", failure.kind.as_str());
                report.attempt.outcome =
                    AttemptOutcome::Failed { kind: failure.kind, message: failure.message.clone() };
            }
            Ok(_) => {
                span.record("txmirror.outcome", "committed");
                self.inner.hedge_delays.record(module.hash(), &path, report.attempt.duration_micros);
            }
        }
        self.learn_online(&report);
        run.attempts.push(report.attempt.clone());
        run.reports.push(report);
        run.attempts.sort_by_key(|a| a.number);
        run.reports.sort_by_key(|r| r.attempt.number);
        let end = match result {
            Ok((version, output)) => AttemptEnd::Committed(TxReport {
                transaction_id: run.id.clone(),
                module: module.hash().to_string(),
                path,
                outcome: TransactionOutcome::Committed { version, output },
                failure: None,
                attempts: std::mem::take(&mut run.reports),
                deduplicated: false,
            }),
            Err(failure) => AttemptEnd::Failed(failure),
        };
        Ok(end)
    }

    /// Scores a mirror's trace with the policy's rules and the model.
    ///
    /// A key the mirror read counts as contended when another commit has
    /// moved it since the attempt's snapshot, or when another running
    /// attempt (not `owner`) has it in its write set.
    fn predict(
        &self,
        module: &Module,
        path: &str,
        policy: &Policy,
        (accumulator, new, totals): (&mut FeatureAccumulator, &[TraceEvent], &TraceTotals),
        (attempt, owner, input): (u32, u64, &InputProfile),
        known: &HashMap<(String, String), u64>,
    ) -> Prediction {
        // The newest versions of the keys these events read: those asked for
        // already once the mirror ended, the others in one call (one
        // statement on a networked store).
        let unknown: Vec<(String, String)> =
            read_keys(new).into_iter().filter(|key| !known.contains_key(key)).collect();
        let mut latest = known.clone();
        if !unknown.is_empty()
            && let Ok(versions) = self.inner.store.latest_versions(&unknown)
        {
            latest.extend(unknown.into_iter().zip(versions));
        }
        let contended = |namespace: &str, key: &str, version: u64| {
            let moved = latest.get(&(namespace.to_string(), key.to_string())).is_some_and(|&now| now != version);
            moved || self.inner.in_flight_writes.held_by_other(owner, namespace, key)
        };
        let evidence = policy.prediction.evidence();
        let context = FeatureContext {
            limits: policy.resource_requirements.attempt_limits(),
            attempt,
            contended: &contended,
            endpoint: &|endpoint, bytes| {
                let request = Request { bytes, conditions: &input.conditions };
                let now = Instant::now();
                let known = self.inner.endpoints.health.for_prediction(endpoint, &request, &evidence, now);
                // A breaker speaks of its host even before this endpoint of
                // it was ever called.
                let breaker = self.inner.endpoints.breakers.state_of_endpoint(endpoint, now);
                match known {
                    Some(view) => Some(EndpointView { breaker, ..view }),
                    None if breaker > 0.0 => Some(EndpointView { breaker, ..EndpointView::default() }),
                    None => None,
                }
            },
            deviation: &|fuel, host_calls, _| self.inner.paths.deviation(module.hash(), path, fuel, host_calls),
            path_failure_rate: self.inner.paths.failure_rate((module.hash(), path, &input.conditions)),
            input_bytes: input.bytes,
        };
        accumulator.observe(new, &context);
        let prediction = Prediction {
            probe: accumulator.probing(),
            ..policy.rules().score(&accumulator.features(totals, &context), input)
        };
        let Some(slot) = &self.inner.model else { return prediction };
        let settings = &policy.prediction;
        if settings.model_weight.is_some_and(|w| w <= 0.0) {
            return prediction.without_model("the policy gives the model no weight".into());
        }
        let model = slot.current();
        match model.score(&prediction.features) {
            Ok(probability) => {
                let learnt = settings
                    .online_learning
                    .then(|| self.learnt_probability(&prediction.features, probability, model.info()));
                let weight = match (settings.model_weight, learnt) {
                    (Some(weight), _) => weight,
                    // The online model's output is fitted to outcomes: it counts as it is.
                    (None, Some(_)) => 1.0,
                    (None, None) => match model.info().threshold {
                        Some(own) if own > 0.0 => (f64::from(settings.threshold) / own).min(1.0) as f32,
                        _ => 1.0,
                    },
                };
                prediction.with_model(model.info(), ModelScore { probability, learnt }, weight, settings.model_action)
            }
            Err(error) => {
                tracing::warn!(%error, "the model could not score; the rules decide alone");
                prediction.without_model(error.to_string())
            }
        }
    }

    /// Runs the primary and, if prediction is enabled, the mirror, concurrently
    /// on the current task: no cross-thread wake-ups for short transactions.
    ///
    /// Once the primary has ended, the mirror gets at most the gate's
    /// timeout to end too (the gate before the commit); a mirror still
    /// running then is stopped and its trace so far is what is scored. The
    /// third value is that wait, in microseconds, and whether it timed out.
    async fn run_twins(
        &self,
        module: &Module,
        setup: &InstanceSetup,
        path: &str,
        input: &[u8],
        mirror_trace: Option<TraceRecorder>,
    ) -> (InstanceRun, Option<InstanceRun>, Option<CommitWait>) {
        let engine = &self.inner.engine;
        let twins = if mirror_trace.is_some() { 2 } else { 1 };
        let _permit = self.admit(twins).await;
        // The primary trace's clock, so that the gate before the commit is
        // placed on the same time line as the calls before it.
        let origin = Instant::now();
        let since_origin = || u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX);
        let primary = run_instance(engine, module, setup, Role::Primary, TraceRecorder::new(origin), path, input)
            .instrument(tracing::info_span!("txmirror.primary"));
        let Some(trace) = mirror_trace else { return (primary.await, None, None) };
        let recorder = trace.clone();
        let mirror = async {
            let run = run_instance(engine, module, setup, Role::Mirror, trace, path, input)
                .instrument(tracing::info_span!("txmirror.mirror"))
                .await;
            if let Some(gate) = &setup.gate {
                gate.mirror_ended();
            }
            run
        };
        let (mut primary, mut mirror) = (std::pin::pin!(primary), std::pin::pin!(mirror));
        tokio::select! {
            mirror = &mut mirror => {
                let primary = primary.await;
                let wait = CommitWait { at_micros: since_origin(), waited_micros: 0, timed_out: false };
                (primary, Some(mirror), Some(wait))
            }
            primary = &mut primary => {
                let at_micros = since_origin();
                let waiting = Instant::now();
                let limit = Duration::from_millis(setup.policy.prediction.gate_timeout_ms);
                let mirror = tokio::time::timeout(limit, &mut mirror).await;
                let waited_micros = u64::try_from(waiting.elapsed().as_micros()).unwrap_or(u64::MAX);
                match mirror {
                    Ok(mirror) => (primary, Some(mirror), Some(CommitWait { at_micros, waited_micros, timed_out: false })),
                    Err(_) => (
                        primary,
                        Some(InstanceRun::cut_short(recorder, waited_micros)),
                        Some(CommitWait { at_micros, waited_micros, timed_out: true }),
                    ),
                }
            }
        }
    }
}

/// The span of an attempt (see `txmirror_service::telemetry`): its
/// primary and mirror, the gate's decisions and its commit go in it.
fn attempt_span(number: u32, path: &str, mirrored: bool) -> tracing::Span {
    tracing::info_span!(
        "txmirror.attempt",
        txmirror.attempt = number,
        txmirror.path = path,
        txmirror.mirrored = mirrored,
        txmirror.outcome = Empty,
    )
}

/// Checks the policy's success criteria on an output.
fn check_success(policy: &Policy, output: &[u8], duration_micros: u64) -> Result<(), Failure> {
    let criteria = &policy.success_criteria;
    if let Some(max) = criteria.max_duration_ms
        && duration_micros > max.saturating_mul(1000)
    {
        return Err(Failure::new(
            FailureKind::SuccessCriteria,
            format!("took {} ms; success requires at most {max} ms", duration_micros / 1000),
        ));
    }
    if !criteria.required_output_fields.is_empty() {
        let value: serde_json::Value = serde_json::from_slice(output)
            .map_err(|e| Failure::new(FailureKind::SuccessCriteria, format!("the output is not JSON: {e}")))?;
        for field in &criteria.required_output_fields {
            if value.get(field).is_none_or(serde_json::Value::is_null) {
                return Err(Failure::new(FailureKind::SuccessCriteria, format!("the output has no field `{field}`")));
            }
        }
    }
    Ok(())
}

/// The newest versions of keys, as the mirror's prediction knows them.
type Latest = Arc<std::sync::Mutex<HashMap<(String, String), u64>>>;

/// The keys these events read from the store (not from their own writes).
fn read_keys(events: &[TraceEvent]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|event| match &event.call {
            HostCall::KvGet { namespace, key, version: Some(_) } => Some((namespace.clone(), key.clone())),
            _ => None,
        })
        .collect()
}
