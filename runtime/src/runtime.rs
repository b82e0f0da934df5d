//! The runtime: loads modules and runs transactions as primary + mirror.

mod idempotency;
mod records;

pub use idempotency::{KeyClaim, KeyState};

use crate::clock::{Clock, SystemClock};
use crate::contention::{HotKeys, InFlightWrites, Turn, WriteClaims};
use crate::engine::{EngineError, EngineSettings, EpochTicker, new_engine};
use crate::executor::{InstanceRun, run_instance};
use crate::gate::{Gate, GateActions, GateDecision, Scorer};
use crate::grants::ResourceWatch;
use crate::hedge::{HedgeRace, HedgeSeat};
use crate::history::PathHistory;
use crate::host::{EndpointMemory, InstanceSetup, InstanceState, add_recording_filesystem};
use crate::mirroring::{MirrorPrior, sampled};
use crate::module::{Module, ModuleError, ModuleLoader};
use crate::policy::{Policy, PolicyError};
use crate::predict::model_slot::ModelSlot;
use crate::predict::{FeatureAccumulator, FeatureContext, ModelError, ModelInfo, Prediction, Reloaded, TraceTotals};
use crate::store::{
    Attempt, AttemptOutcome, CommitError, CommitRequest, Compensation, DeadLetter, EmptySnapshot, GroupCommit,
    GroupCommitStats, History, IdempotencyClaim, RedbStore, StateStore, StoreError, TransactionOutcome,
    TransactionRecord,
};
use crate::timeouts::AttemptTimeouts;
use crate::trace::{HostCall, HttpOutcome, Trace, TraceEvent, TraceRecorder};
use crate::transaction::history;
use crate::transaction::plan::{AttemptFailed, Next, Plan};
use crate::transaction::{AttemptReport, DryRun, TxReport, TxRequest};
use crate::vocab::{Failure, FailureKind, GateStage, Role};
use idempotency::{Fingerprint, input_hash};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Semaphore, SemaphorePermit};
use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker};

/// The most lapsed idempotency keys removed when a runtime opens.
const PURGE_AT_OPEN: usize = 10_000;

/// Where and how a runtime keeps its data.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The directory of the embedded store and the compile cache.
    pub data_dir: PathBuf,
    /// Where compiled modules are cached; `data_dir/cache` if unset.
    pub cache_dir: Option<PathBuf>,
    /// Engine settings.
    pub engine: EngineSettings,
    /// The failure-prediction model; the rules decide alone without one.
    pub model: Option<ModelConfig>,
    /// The most transactions one storage commit (one fsync) may carry
    /// (group commit, `store/group_commit.rs`); 1 commits each alone.
    pub commit_batch_limit: usize,
    /// What the runtime dates things by: the system's clock, or a test's.
    pub clock: Arc<dyn Clock>,
}

impl RuntimeConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            cache_dir: None,
            engine: EngineSettings::default(),
            model: None,
            commit_batch_limit: crate::store::DEFAULT_BATCH_LIMIT,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Where the failure-prediction model comes from.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// The ONNX file (see `predict::model` for what it must contain).
    pub path: PathBuf,
    /// The ONNX Runtime library; `$ORT_DYLIB_PATH` if unset.
    pub onnxruntime_library: Option<PathBuf>,
    /// How often the file is checked for a new model; never if `None`.
    pub reload_interval: Option<Duration>,
}

impl ModelConfig {
    /// A model file, checked for changes every second.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), onnxruntime_library: None, reload_interval: Some(Duration::from_secs(1)) }
    }
}

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The engine could not be configured.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The host functions could not be linked.
    #[error("cannot link host functions: {0}")]
    Link(String),
    /// The model could not be loaded.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The model's watcher could not be started.
    #[error("cannot watch the model file: {0}")]
    ModelWatch(#[source] std::io::Error),
}

/// Why a transaction could not be run at all. A transaction that runs and
/// fails is not an error: its [`TxReport`] says how it failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecuteError {
    /// The policy does not fit the module.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The requested path is not one of the module's.
    #[error("the module has no path `{path}`; it has {available}")]
    UnknownPath {
        /// The requested path.
        path: String,
        /// The module's paths.
        available: String,
    },
    /// A transaction with this id was already recorded.
    #[error("transaction `{0}` already exists")]
    DuplicateId(String),
    /// The idempotency key is bound to another request (another module,
    /// path or input): answering with that request's outcome would mislead.
    #[error(
        "idempotency key `{key}` was used for another request{}; a new request needs a new key",
        if transaction_id.is_empty() { String::new() } else { format!(" (transaction `{transaction_id}`)") }
    )]
    IdempotencyKeyReused {
        /// The key.
        key: String,
        /// The transaction bound to it, if it has an id yet.
        transaction_id: String,
    },
    /// The idempotency key is not acceptable.
    #[error("invalid idempotency key: {0}")]
    InvalidIdempotencyKey(String),
    /// No dead letter has this transaction id.
    #[error("no dead letter for transaction `{0}`")]
    NoSuchDeadLetter(String),
    /// A replay was given another module than the one that failed.
    #[error("the dead letter is for module {expected}, not {given}")]
    ModuleMismatch {
        /// The module that failed.
        expected: String,
        /// The module given.
        given: String,
    },
    /// The store failed; nothing was committed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct RuntimeInner {
    engine: Engine,
    linker: Linker<InstanceState>,
    store: Arc<dyn StateStore>,
    /// The store's commit queue: concurrent commits share one fsync.
    commits: GroupCommit,
    cache_dir: PathBuf,
    endpoints: Arc<EndpointMemory>,
    /// One permit per instance the pooling allocator can hold: transactions
    /// wait here for room instead of failing when the pool is full.
    instance_permits: Arc<Semaphore>,
    hot_keys: HotKeys,
    /// Keys in the write sets of running attempts, for the predictor.
    in_flight_writes: Arc<InFlightWrites>,
    /// Baselines and failure rates of paths, for the predictor.
    paths: PathHistory,
    /// What adaptive mirroring knows before an attempt runs.
    prior: MirrorPrior,
    /// Transactions running per idempotency key, for requests that share one.
    in_flight: Mutex<HashMap<String, idempotency::Running>>,
    /// Keys held by accepted transactions that have not ended (see
    /// [`Runtime::claim_key`]), with the request and the holder's id.
    accepted_keys: Mutex<HashMap<String, (Fingerprint, String)>>,
    /// The failure-prediction model, if one is configured.
    model: Option<Arc<ModelSlot>>,
    clock: Arc<dyn Clock>,
    _ticker: Arc<EpochTicker>,
}

/// The txmirror runtime. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("store", &self.inner.store).field("cache_dir", &self.inner.cache_dir).finish()
    }
}

fn link(engine: &Engine) -> wasmtime::Result<Linker<InstanceState>> {
    use crate::bindings::txmirror::transaction::{config, events, kv, log, types, validation};
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    add_recording_filesystem(&mut linker)?;
    types::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    kv::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    events::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    log::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    validation::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    config::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// The state of one transaction across its attempts.
struct TransactionRun {
    id: String,
    input_hash: String,
    random_seed: u64,
    clock: SystemTime,
    claim: Option<IdempotencyClaim>,
    /// Who asked, for the prior of adaptive mirroring.
    caller: String,
    /// The policy mirrors adaptively: attempts' ends feed the prior.
    adaptive: bool,
    attempts: Vec<Attempt>,
    reports: Vec<AttemptReport>,
    /// Timeouts the predictor raised, per path, for the path's next attempts.
    raised_timeouts: HashMap<String, (u64, u64)>,
    /// Why the transaction runs.
    purpose: Purpose,
}

/// Why a transaction runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// A caller asked for it.
    Request,
    /// It compensates a transaction that failed on every path: the policy's
    /// success criteria (written for the transaction's own paths) do not
    /// apply, and its own failure is not compensated again.
    Compensation,
}

/// An attempt that has run, before its commit.
struct Prepared {
    report: AttemptReport,
    /// The primary's effects and output, or why the attempt failed.
    result: Result<Ready, Failure>,
    /// `(fuel, host calls, duration µs)` of the primary, for the path's baseline.
    observed: (u64, usize, u64),
    /// The timeouts, if the predictor raised them.
    raised_timeouts: Option<(u64, u64)>,
    /// The primary's write set stays announced until the attempt is concluded.
    write_claims: Arc<WriteClaims>,
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
    carried_timeouts: Option<(u64, u64)>,
    /// The mirror runs beside the primary (see `mirroring.rs`).
    mirrored: bool,
    /// The attempt is in the policy's exploration share: nothing is adjusted.
    explore: bool,
    /// Why the transaction runs.
    purpose: Purpose,
}

/// Whether a primary sent an unsafe request (one that may have had an
/// effect, answered or not).
fn sent_unsafe(primary: &Trace) -> bool {
    primary.events.iter().any(|e| {
        matches!(&e.call, HostCall::Http { safe: false, outcome, .. }
            if matches!(outcome, HttpOutcome::Answered { .. } | HttpOutcome::Failed { .. }))
    })
}

/// The failure of a primary the gate stopped.
fn gate_failure(kind: FailureKind, what: &str, prediction: &Prediction) -> Failure {
    let reasons: Vec<&str> = prediction.reasons.iter().map(|r| r.reason.as_str()).collect();
    Failure::new(
        kind,
        format!(
            "{what} before any effect (failure probability {:.2}): {}",
            prediction.failure_probability,
            reasons.join("; ")
        ),
    )
}

/// The failure of an attempt that lost a hedge race.
fn cancelled() -> Failure {
    Failure::new(FailureKind::Cancelled, "cancelled before any unsafe call: the other path of the hedge won")
}

/// How an attempt ended.
enum AttemptEnd {
    /// The transaction is done: committed (or answered by a duplicate key's outcome).
    Committed(TxReport),
    /// This attempt failed.
    Failed(Failure),
}

fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn new_transaction_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Runtime {
    /// Opens the embedded store in `config.data_dir` and starts a runtime on it.
    pub fn open(config: RuntimeConfig) -> Result<Self, StartError> {
        let store = RedbStore::open(&config.data_dir.join("state.redb"))?;
        Self::with_store(config, Arc::new(store))
    }

    /// Starts a runtime on a given store.
    pub fn with_store(config: RuntimeConfig, store: Arc<dyn StateStore>) -> Result<Self, StartError> {
        let engine = new_engine(&config.engine)?;
        let linker = link(&engine).map_err(|e| StartError::Link(format!("{e:#}")))?;
        let cache_dir = config.cache_dir.unwrap_or_else(|| config.data_dir.join("cache"));
        let ticker = EpochTicker::start(engine.clone()).map_err(|e| StartError::Link(e.to_string()))?;
        let instance_permits = Arc::new(Semaphore::new(config.engine.max_instances as usize));
        let model = match &config.model {
            Some(model) => {
                let slot = ModelSlot::open(&model.path, model.onnxruntime_library.as_deref())?;
                if let Some(interval) = model.reload_interval {
                    slot.watch(interval).map_err(StartError::ModelWatch)?;
                }
                Some(slot)
            }
            None => None,
        };
        let runtime = Self {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                commits: GroupCommit::start(store.clone(), config.commit_batch_limit)?,
                store,
                cache_dir,
                endpoints: Arc::new(EndpointMemory::default()),
                instance_permits,
                hot_keys: HotKeys::default(),
                in_flight_writes: Arc::default(),
                paths: PathHistory::default(),
                prior: MirrorPrior::default(),
                in_flight: Mutex::new(HashMap::new()),
                accepted_keys: Mutex::new(HashMap::new()),
                model,
                clock: config.clock.clone(),
                _ticker: Arc::new(ticker),
            }),
        };
        // Keys whose retention passed bind nothing; a service also purges
        // them now and then while it runs.
        runtime.purge_lapsed_keys(PURGE_AT_OPEN)?;
        Ok(runtime)
    }

    /// A runtime on another store that shares this one's engine, compiled
    /// modules, instance limit and model. What it learns (endpoint health,
    /// path baselines, contention) is its own: the service runs one per
    /// tenant, and no tenant's transactions inform another's predictions.
    pub fn with_other_store(&self, store: Arc<dyn StateStore>) -> Result<Self, StoreError> {
        let shared = &self.inner;
        Ok(Self {
            inner: Arc::new(RuntimeInner {
                engine: shared.engine.clone(),
                linker: shared.linker.clone(),
                commits: GroupCommit::start(store.clone(), shared.commits.batch_limit())?,
                store,
                cache_dir: shared.cache_dir.clone(),
                endpoints: Arc::new(EndpointMemory::default()),
                instance_permits: shared.instance_permits.clone(),
                hot_keys: HotKeys::default(),
                in_flight_writes: Arc::default(),
                paths: PathHistory::default(),
                prior: MirrorPrior::default(),
                in_flight: Mutex::new(HashMap::new()),
                accepted_keys: Mutex::new(HashMap::new()),
                model: shared.model.clone(),
                clock: shared.clock.clone(),
                _ticker: shared._ticker.clone(),
            }),
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.inner.store
    }

    /// How commits were grouped: storage commits made, transactions they
    /// carried, the largest batch.
    pub fn commit_stats(&self) -> &GroupCommitStats {
        self.inner.commits.stats()
    }

    /// The model scoring now, if one is configured.
    pub fn model(&self) -> Option<ModelInfo> {
        self.inner.model.as_ref().map(|slot| slot.current().info().clone())
    }

    /// Why the model file last failed to replace the model, if it did.
    pub fn model_reload_error(&self) -> Option<String> {
        self.inner.model.as_ref().and_then(|slot| slot.last_error())
    }

    /// Loads the model file again now, and swaps the new model in if it
    /// changed; transactions already scoring finish with the old one.
    /// `Ok(None)` if no model is configured. A model that fails to load
    /// leaves the current one in place.
    pub fn reload_model(&self) -> Result<Option<Reloaded>, ModelError> {
        self.inner.model.as_ref().map(|slot| slot.reload()).transpose()
    }

    /// Waits until `count` instances may exist.
    async fn admit(&self, count: u32) -> SemaphorePermit<'_> {
        match self.inner.instance_permits.acquire_many(count).await {
            Ok(permit) => permit,
            Err(_) => unreachable!("the semaphore is never closed"),
        }
    }

    /// Validates, pre-initialises and compiles a module (or takes it from the cache).
    pub async fn load_module(&self, bytes: &[u8]) -> Result<Module, ModuleError> {
        let _permit = self.admit(1).await;
        let endpoints = self.inner.endpoints.clone();
        let new_state = move || {
            let setup = InstanceSetup::new(
                Arc::new(Policy::default()),
                Arc::new(EmptySnapshot),
                0,
                SystemTime::UNIX_EPOCH,
                endpoints.clone(),
            );
            match InstanceState::new(&setup, Role::Primary, TraceRecorder::new(Instant::now())) {
                Ok(state) => state,
                Err(_) => unreachable!("a policy without file grants cannot fail to set up"),
            }
        };
        ModuleLoader {
            engine: &self.inner.engine,
            linker: &self.inner.linker,
            cache_dir: &self.inner.cache_dir,
            new_state: &new_state,
        }
        .load(bytes)
        .await
    }

    /// Runs only the mirror of a transaction: what it would read, write,
    /// emit and send, with no effect at all. Nothing is recorded.
    pub async fn dry_run(
        &self,
        module: &Module,
        policy: &Arc<Policy>,
        request: TxRequest,
    ) -> Result<DryRun, ExecuteError> {
        let path = choose_path(module, policy, request.path)?;
        let setup = InstanceSetup::new(
            policy.clone(),
            self.inner.store.snapshot()?,
            rand::random(),
            self.inner.clock.now(),
            self.inner.endpoints.clone(),
        );
        let run = {
            let _permit = self.admit(1).await;
            let trace = TraceRecorder::new(Instant::now());
            run_instance(&self.inner.engine, module, &setup, Role::Mirror, trace, &path, &request.input).await
        };
        let result = run.result.map(|output| String::from_utf8_lossy(&output).into_owned());
        Ok(DryRun { path, trace: run.trace, result })
    }

    /// Runs one transaction to its end: committed, or failed and recorded.
    ///
    /// With an idempotency key, a request whose key is already bound to a
    /// transaction runs nothing and gets that transaction's outcome, and
    /// concurrent requests with one key run the transaction once.
    pub async fn execute(
        &self,
        module: &Module,
        policy: &Arc<Policy>,
        request: TxRequest,
    ) -> Result<TxReport, ExecuteError> {
        let Some((key, claim)) = self.key_of(module, policy, &request)? else {
            return self.execute_once(module, policy, request, None, Purpose::Request).await;
        };
        let user_key = request.idempotency_key.clone().unwrap_or_default();
        let requested = choose_path(module, policy, request.path.clone())?;
        let fingerprint = Fingerprint::of_request(module, &requested, &request.input);
        if let Some(report) = self.bound(&user_key, &key, &fingerprint)? {
            return Ok(report);
        }

        // Requests with the same key wait for the one that runs it; another
        // request with that key is refused, not answered with its outcome.
        let cell = {
            let mut in_flight = self.inner.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let (running, cell) = in_flight.entry(key.clone()).or_insert_with(|| (fingerprint.clone(), Arc::default()));
            if *running != fingerprint {
                return Err(ExecuteError::IdempotencyKeyReused { key: user_key, transaction_id: String::new() });
            }
            cell.clone()
        };
        let mut ran = false;
        let result = cell
            .get_or_try_init(|| async {
                // The one before may have finished between the check above and now.
                if let Some(report) = self.bound(&user_key, &key, &fingerprint)? {
                    return Ok(report);
                }
                ran = true;
                self.execute_once(module, policy, request, Some(claim), Purpose::Request).await
            })
            .await
            .cloned();
        {
            let mut in_flight = self.inner.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if in_flight.get(&key).is_some_and(|(_, current)| Arc::ptr_eq(current, &cell)) {
                in_flight.remove(&key);
            }
        }
        let mut report = result?;
        report.deduplicated = report.deduplicated || !ran;
        Ok(report)
    }

    async fn execute_once(
        &self,
        module: &Module,
        policy: &Arc<Policy>,
        request: TxRequest,
        claim: Option<IdempotencyClaim>,
        purpose: Purpose,
    ) -> Result<TxReport, ExecuteError> {
        let requested = choose_path(module, policy, request.path.clone())?;
        // A caller's id may repeat; a generated one (128 random bits) cannot,
        // and the commit refuses duplicates in any case.
        let id = match request.transaction_id.clone() {
            Some(id) if self.inner.store.transaction(&id)?.is_some() => return Err(ExecuteError::DuplicateId(id)),
            Some(id) => id,
            None => new_transaction_id(),
        };
        let mut run = TransactionRun {
            id,
            input_hash: input_hash(&request.input),
            random_seed: rand::random(),
            clock: self.inner.clock.now(),
            claim,
            caller: request.caller.clone().unwrap_or_default(),
            adaptive: policy.failure_prediction_enabled && policy.mirror.mode == crate::policy::MirrorMode::Adaptive,
            attempts: Vec::new(),
            reports: Vec::new(),
            raised_timeouts: HashMap::new(),
            purpose,
        };

        // The default path falls back on the alternatives, in order; a path
        // asked for by name runs alone.
        let mut paths = vec![requested.clone()];
        if request.path.is_none() || policy.resolve_paths(module.paths())?.first() == Some(&requested) {
            paths.extend(policy.alternative_paths.iter().filter(|p| **p != requested).cloned());
        }
        // What follows each failed attempt is the plan's to say (see
        // `transaction/plan.rs`); this loop only carries it out.
        let mut plan = Plan::new(paths, &policy.retry);
        // Held while retrying after a conflict: see `contention.rs`.
        let mut turn: Option<Turn> = None;
        let mut last_failure = None;
        let mut ended_by_final_failure = false;
        while let Some(path) = plan.path().map(str::to_owned) {
            // The next path is where a divert goes and what a hedge runs.
            let next_path = plan.next_path().map(str::to_owned);
            let input = &request.input;
            let failure =
                match self.try_path(module, policy, &path, next_path.as_deref(), input, &mut run, &mut turn).await? {
                    AttemptEnd::Committed(report) => return Ok(report),
                    AttemptEnd::Failed(failure) => failure,
                };
            let unmirrored = run.reports.last().is_some_and(|r| r.mirror.is_none() && !sent_unsafe(&r.primary));
            let next = plan.failed(AttemptFailed {
                kind: failure.kind,
                second_look_would_help: unmirrored && crate::mirroring::second_look(policy, failure.kind),
                timeouts_raised: run.raised_timeouts.contains_key(&path),
                jitter: rand::random(),
            });
            last_failure = Some(failure);
            match next {
                Next::Retry(delay) if delay.is_zero() => {}
                Next::Retry(delay) => tokio::time::sleep(delay).await,
                Next::SecondLook => {}
                Next::FollowingPath => turn = None,
                Next::DeadLetter => break,
                Next::Final => {
                    ended_by_final_failure = true;
                    break;
                }
            }
        }

        let failure = last_failure.unwrap_or_else(|| Failure::new(FailureKind::Conflict, "no attempt was made"));
        let dead_letter = if ended_by_final_failure {
            None
        } else {
            Some(self.compensate_and_dead_letter(module, policy, &request, &requested, &run, &failure).await?)
        };
        // A final failure keeps its key: the same request would fail the
        // same way. A dead-lettered one releases it, so that the client's
        // retry may run; the letter keeps the key, so that its replay and
        // that retry cannot both commit.
        let claim = if ended_by_final_failure { run.claim.take() } else { None };
        let outcome = TransactionOutcome::Failed { kind: failure.kind, message: failure.message.clone() };
        let last_path = run.attempts.last().map_or(requested, |a| a.path.clone());
        self.inner.store.record_outcome(
            TransactionRecord {
                id: run.id.clone(),
                module: module.hash().to_string(),
                path: last_path.clone(),
                input_hash: run.input_hash,
                outcome: outcome.clone(),
                attempts: run.attempts,
                history: history::encode(&run.reports),
            },
            claim,
            dead_letter,
        )?;
        Ok(TxReport {
            transaction_id: run.id,
            module: module.hash().to_string(),
            path: last_path,
            outcome,
            failure: Some(failure),
            attempts: run.reports,
            deduplicated: false,
        })
    }

    /// One try of a path: an attempt, or, when the gate asks for a hedge,
    /// the attempt and a hedge on `next_path` racing (see `hedge.rs`).
    #[allow(clippy::too_many_arguments, reason = "the try's whole context, passed once")]
    async fn try_path(
        &self,
        module: &Module,
        policy: &Arc<Policy>,
        path: &str,
        next_path: Option<&str>,
        input: &[u8],
        run: &mut TransactionRun,
        turn: &mut Option<Turn>,
    ) -> Result<AttemptEnd, ExecuteError> {
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
            purpose: run.purpose,
        };
        let can_divert = next_path.is_some();
        let hedge_path = next_path.filter(|_| mirrored);
        let Some(hedge_path) = hedge_path else {
            let prepared = self.prepare(module, policy, path, can_divert, seed, None).await?;
            return self.conclude(module, prepared, run, turn).await;
        };

        let (primary_seat, hedge_seat) = HedgeRace::start();
        let primary = self.prepare(module, policy, path, can_divert, seed, Some(primary_seat.clone()));
        let mut primary = std::pin::pin!(primary);
        let alone = tokio::select! {
            biased;
            prepared = &mut primary => Some(prepared?),
            () = primary_seat.hedge_requested() => None,
        };
        if let Some(prepared) = alone {
            return self.conclude(module, prepared, run, turn).await;
        }
        let hedge_number = seed.number.saturating_add(1);
        let hedge_seed = AttemptSeed {
            number: hedge_number,
            carried_timeouts: run.raised_timeouts.get(hedge_path).copied(),
            explore: mirrored && sampled(&run.id, hedge_number, share),
            ..seed
        };
        let hedge = self.prepare(module, policy, hedge_path, false, hedge_seed, Some(hedge_seat));
        let (primary, hedge) = tokio::join!(primary, hedge);
        let (primary, hedge) = (primary?, hedge?);
        // At most one is ready to commit: the race's winner.
        let (winner, loser) = if hedge.result.is_ok() { (hedge, primary) } else { (primary, hedge) };
        // The loser only goes into the history: its result is a failure.
        self.conclude(module, loser, run, turn).await?;
        self.conclude(module, winner, run, turn).await
    }

    /// Runs one attempt up to its commit: the twins from a fresh snapshot,
    /// the gate's decisions, the prediction and the success criteria.
    async fn prepare(
        &self,
        module: &Module,
        policy: &Arc<Policy>,
        path: &str,
        can_divert: bool,
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
        setup.adjust = !seed.explore;
        let write_claims = self.inner.in_flight_writes.claims();
        let owner = write_claims.owner();
        setup.write_claims = Some(write_claims.clone());
        let started = Instant::now();
        let mirror_trace = if seed.mirrored {
            let scorer: Scorer = {
                let (runtime, module, path, policy) = (self.clone(), module.clone(), path.to_string(), policy.clone());
                Box::new(move |accumulator: &mut FeatureAccumulator, new: &[TraceEvent], totals: &TraceTotals| {
                    runtime.predict(&module, &path, &policy, (accumulator, new, totals), number, owner)
                })
            };
            let timeout = Duration::from_millis(policy.prediction.gate_timeout_ms);
            let actions = GateActions {
                can_divert,
                seat: seat.clone(),
                timeouts: setup.timeouts.clone(),
                base_outbound_timeout_ms: policy.resource_requirements.outbound_timeout_ms,
                explore: seed.explore,
                watch: None,
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
        match setup.gate.as_ref().and_then(|gate| gate.decision()) {
            Some(GateDecision::Divert(p)) => {
                primary.result = Err(gate_failure(FailureKind::Diverted, "diverted to the next path", &p))
            }
            Some(GateDecision::FailFast(p)) => {
                primary.result = Err(gate_failure(FailureKind::PredictedFailure, "stopped", &p))
            }
            Some(GateDecision::Cancelled) => primary.result = Err(cancelled()),
            None => {}
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
            match decision {
                Some(GateDecision::Divert(p)) => {
                    primary.result = Err(gate_failure(FailureKind::Diverted, "diverted to the next path", &p));
                }
                Some(GateDecision::FailFast(p)) => {
                    primary.result = Err(gate_failure(FailureKind::PredictedFailure, "stopped", &p));
                }
                _ => {}
            }
        }
        let duration_micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let observed = (primary.trace.fuel_consumed, primary.trace.events.len(), primary.trace.duration_micros);
        let mut result = primary
            .result
            .and_then(|output| match seed.purpose {
                Purpose::Request => check_success(policy, &output, duration_micros).map(|()| output),
                Purpose::Compensation => Ok(output),
            })
            .map(|output| Ready { reads: primary.reads, writes: primary.writes, events: primary.events, output });
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
            },
            result,
            observed,
            raised_timeouts: setup.timeouts.raised().then(|| setup.timeouts.current()),
            write_claims,
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
        let Prepared { mut report, result, observed, raised_timeouts, write_claims: _claims } = prepared;
        let path = report.attempt.path.clone();
        if let Some(raised) = raised_timeouts {
            run.raised_timeouts.insert(path.clone(), raised);
        }
        let result = match result {
            Err(failure) => Err(failure),
            Ok(ready) => {
                let mut history = run.reports.clone();
                history.push(report.clone());
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
                let commit = CommitRequest {
                    reads: ready.reads,
                    writes: ready.writes,
                    events: ready.events,
                    record,
                    idempotency: run.claim.clone(),
                };
                match self.inner.commits.commit(commit).await {
                    Ok(version) => Ok((version, ready.output)),
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

        let (fuel, host_calls, micros) = observed;
        self.inner.paths.observe(module.hash(), &path, fuel, host_calls, micros, result.is_err());
        if run.adaptive {
            let failure = result.as_ref().err().map(|failure| failure.kind);
            self.inner.prior.observe((module.hash(), &path, &run.caller), failure, &report.primary.events);
        }
        if let Err(failure) = &result {
            report.attempt.outcome = AttemptOutcome::Failed { kind: failure.kind, message: failure.message.clone() };
        }
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

    /// Runs the compensation path, if any, and builds the dead letter of a
    /// transaction that failed on every path.
    async fn compensate_and_dead_letter(
        &self,
        module: &Module,
        policy: &Arc<Policy>,
        request: &TxRequest,
        requested: &str,
        run: &TransactionRun,
        failure: &Failure,
    ) -> Result<DeadLetter, ExecuteError> {
        let input = &request.input;
        // A compensation that fails is dead-lettered without compensating
        // again: that way lies a loop.
        let compensation = match &policy.compensation_path {
            Some(path) if run.purpose == Purpose::Request => {
                let request = TxRequest {
                    transaction_id: Some(format!("{}.compensation", run.id)),
                    path: Some(path.clone()),
                    input: input.to_vec(),
                    idempotency_key: None,
                    caller: Some(run.caller.clone()),
                };
                let report = Box::pin(self.execute_once(module, policy, request, None, Purpose::Compensation)).await?;
                Some(Compensation {
                    path: path.clone(),
                    transaction_id: report.transaction_id,
                    outcome: report.outcome,
                })
            }
            _ => None,
        };
        Ok(DeadLetter {
            transaction_id: run.id.clone(),
            module: module.hash().to_string(),
            path: requested.to_string(),
            input: input.to_vec(),
            failure: failure.clone(),
            attempts: history::encode(&run.reports),
            compensation,
            dead_lettered_unix_ms: unix_millis(self.inner.clock.now()),
            idempotency_key: request.idempotency_key.clone(),
        })
    }

    /// Ends a transaction that was accepted but not recorded when the
    /// process stopped, as its policy's `recovery.in_flight` says: runs it
    /// again from its input (`rerun`), or records it failed with
    /// [`FailureKind::Interrupted`] and dead-letters it (`dead_letter`).
    /// Nothing of it can have been committed, since a transaction's record
    /// and state are written in one atomic step; if its record exists, that
    /// record is its outcome and nothing runs.
    pub async fn recover_interrupted(
        &self,
        module: &Module,
        policy: &Arc<Policy>,
        transaction_id: &str,
        request: TxRequest,
    ) -> Result<TxReport, ExecuteError> {
        if let Some(record) = self.transaction(transaction_id)? {
            return Ok(TxReport::from_record(record));
        }
        let path = choose_path(module, policy, request.path.clone())?;
        // A repeat of a request whose key is bound to another transaction
        // was that transaction: its outcome is this one's, and nothing runs
        // or is dead-lettered (a replay of such a letter would repeat it).
        if let Some((key, _)) = self.key_of(module, policy, &request)? {
            let user_key = request.idempotency_key.clone().unwrap_or_default();
            let fingerprint = Fingerprint::of_request(module, &path, &request.input);
            match self.bound(&user_key, &key, &fingerprint) {
                Ok(Some(report)) => return Ok(report),
                Ok(None) => {}
                // The key went to another request: this one never ran.
                Err(ExecuteError::IdempotencyKeyReused { .. }) => {}
                Err(other) => return Err(other),
            }
        }
        let request = TxRequest { transaction_id: Some(transaction_id.to_string()), ..request };
        if policy.recovery.in_flight == crate::policy::InFlightRecovery::Rerun {
            return self.execute(module, policy, request).await;
        }
        let failure = Failure::new(
            FailureKind::Interrupted,
            "the service stopped while the transaction was in flight; nothing was committed \
             (recovery.in_flight = \"dead_letter\")",
        );
        let outcome = TransactionOutcome::Failed { kind: failure.kind, message: failure.message.clone() };
        let now = unix_millis(self.inner.clock.now());
        let dead_letter = DeadLetter {
            transaction_id: transaction_id.to_string(),
            module: module.hash().to_string(),
            path: path.clone(),
            input: request.input.clone(),
            failure: failure.clone(),
            attempts: History::default(),
            compensation: None,
            dead_lettered_unix_ms: now,
            idempotency_key: request.idempotency_key.clone(),
        };
        self.inner.store.record_outcome(
            TransactionRecord {
                id: transaction_id.to_string(),
                module: module.hash().to_string(),
                path: path.clone(),
                input_hash: input_hash(&request.input),
                outcome: outcome.clone(),
                attempts: Vec::new(),
                history: History::default(),
            },
            // Dead-lettered: the key stays free (see `execute_once`).
            None,
            Some(dead_letter),
        )?;
        Ok(TxReport {
            transaction_id: transaction_id.to_string(),
            module: module.hash().to_string(),
            path,
            outcome,
            failure: Some(failure),
            attempts: Vec::new(),
            deduplicated: false,
        })
    }

    /// Runs a dead-lettered transaction again, once: a second replay of the
    /// same letter answers with the first replay's outcome. A replay that
    /// commits removes the letter.
    pub async fn replay_dead_letter(
        &self,
        module: &Module,
        policy: &Arc<Policy>,
        transaction_id: &str,
    ) -> Result<TxReport, ExecuteError> {
        let Some(letter) = self.inner.store.dead_letter(transaction_id)? else {
            return Err(ExecuteError::NoSuchDeadLetter(transaction_id.to_string()));
        };
        if letter.module != module.hash() {
            return Err(ExecuteError::ModuleMismatch { expected: letter.module, given: module.hash().to_string() });
        }
        // The letter's own key, if it had one: a replay and the client's
        // retry with that key are one request, and only one of them commits.
        let key = letter.idempotency_key.unwrap_or_else(|| format!("replay-of:{transaction_id}"));
        let request = TxRequest {
            transaction_id: None,
            path: Some(letter.path),
            input: letter.input,
            idempotency_key: Some(key),
            caller: None,
        };
        let report = self.execute(module, policy, request).await?;
        if report.commit_version().is_some() {
            self.inner.store.remove_dead_letter(transaction_id)?;
        }
        Ok(report)
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
        attempt: u32,
        owner: u64,
    ) -> Prediction {
        let latest = std::cell::OnceCell::new();
        let contended = |namespace: &str, key: &str, version: u64| {
            let latest = latest.get_or_init(|| self.inner.store.snapshot().ok());
            let moved = latest
                .as_ref()
                .and_then(|s| s.get(namespace, key).ok())
                .is_some_and(|now| now.map_or(0, |v| v.version) != version);
            moved || self.inner.in_flight_writes.held_by_other(owner, namespace, key)
        };
        let context = FeatureContext {
            limits: policy.resource_requirements.attempt_limits(),
            attempt,
            contended: &contended,
            endpoint: &|endpoint| self.inner.endpoints.health.get(endpoint),
            deviation: &|fuel, host_calls, _| self.inner.paths.deviation(module.hash(), path, fuel, host_calls),
            path_failure_rate: self.inner.paths.failure_rate(module.hash(), path),
        };
        accumulator.observe(new, &context);
        let prediction = policy.rules().score(&accumulator.features(totals, &context));
        let Some(slot) = &self.inner.model else { return prediction };
        let settings = &policy.prediction;
        if settings.model_weight.is_some_and(|w| w <= 0.0) {
            return prediction.without_model("the policy gives the model no weight".into());
        }
        let model = slot.current();
        match model.score(&prediction.features) {
            Ok(p) => {
                let weight = settings.model_weight.unwrap_or_else(|| match model.info().threshold {
                    Some(own) if own > 0.0 => (f64::from(settings.threshold) / own).min(1.0) as f32,
                    _ => 1.0,
                });
                prediction.with_model(model.info(), p, weight, settings.model_action)
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
        let primary = run_instance(engine, module, setup, Role::Primary, TraceRecorder::new(origin), path, input);
        let Some(trace) = mirror_trace else { return (primary.await, None, None) };
        let recorder = trace.clone();
        let mirror = async {
            let run = run_instance(engine, module, setup, Role::Mirror, trace, path, input).await;
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

/// How the gate before the commit waited for the mirror: from when, on the
/// primary trace's clock, how long, and whether it gave up.
#[derive(Debug, Clone, Copy)]
struct CommitWait {
    at_micros: u64,
    waited_micros: u64,
    timed_out: bool,
}

/// The path a request runs: the one it names, or the policy's default.
fn choose_path(module: &Module, policy: &Policy, requested: Option<String>) -> Result<String, ExecuteError> {
    let paths = policy.resolve_paths(module.paths())?;
    match requested {
        Some(path) if module.paths().contains(&path) => Ok(path),
        Some(path) => Err(ExecuteError::UnknownPath { path, available: module.paths().join(", ") }),
        None => Ok(paths[0].clone()),
    }
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
