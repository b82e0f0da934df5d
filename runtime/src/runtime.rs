//! The runtime: loads modules and runs transactions as primary + mirror.

mod attempt;
mod dead_letters;
mod idempotency;
mod learning;
mod progress;
pub use progress::Progress;
mod records;

pub use dead_letters::{ReplayError, ReplayedLetter};
pub use idempotency::{KeyClaim, KeyState, scoped_key};

use crate::adjust::hedge::HedgeDelays;
use crate::adjust::timeouts::Timeouts;
use crate::attempt::mirroring::MirrorPrior;
use crate::clock::{Clock, SystemClock};
use crate::contention::{HotKeys, InFlightWrites, Turn};
use crate::instance::engine::{EngineError, EngineSettings, EpochTicker, new_engine};
use crate::instance::executor::run_instance;
use crate::instance::host::{
    EndpointMemory, InstanceSetup, InstanceState, add_closed_sockets, add_recording_filesystem,
};
use crate::instance::module::{Module, ModuleError, ModuleLoader};
use crate::policy::{Policy, PolicyError};
use crate::predict::model_slot::ModelSlot;
use crate::predict::online::OnlineModel;
use crate::predict::paths::PathHistory;
use crate::predict::{ModelError, ModelInfo, Reloaded};
use crate::randomness::Randomness;
use crate::store::{
    Attempt, EmptySnapshot, GroupCommit, GroupCommitStats, IdempotencyClaim, JournalWrites, RedbStore, StateStore,
    StoreError, TransactionOutcome, TransactionRecord,
};
use crate::trace::{HostCall, HttpOutcome, Trace, TraceRecorder};
use crate::transaction::history;
use crate::transaction::plan::{AttemptFailed, Next, Plan};
use crate::transaction::split;
use crate::transaction::status::Ended;
use crate::transaction::{AttemptReport, DryRun, PredictedStreams, TxReport, TxRequest};
use crate::vocab::{CancelToken, Failure, FailureKind, Role};
use attempt::PathTry;
use idempotency::{Fingerprint, input_hash};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};
use tracing::Instrument as _;
use tracing::field::Empty;
use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker};

/// The most lapsed idempotency keys (and, apart, old journal entries)
/// removed when a runtime opens.
const PURGE_AT_OPEN: usize = 10_000;

/// How long the effect journal of a transaction that ended (and is not a
/// dead letter) is kept after its last call: long enough for an operator
/// to look into a complaint about a charge.
const JOURNAL_RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

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
    /// What the runtime dates things by and waits on: the system's clock,
    /// or a test's.
    pub clock: Arc<dyn Clock>,
    /// Where transaction ids, guests' random seeds and retry jitter come
    /// from: the operating system, or a test's seed.
    pub randomness: Randomness,
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
            randomness: Randomness::from_system(),
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
    #[error("cannot link the host functions")]
    Link(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The thread that interrupts runaway guests could not be started.
    #[error("cannot start the epoch ticker")]
    Ticker(#[source] std::io::Error),
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
    /// The request names a profile the policy does not have.
    #[error("the policy has no profile `{profile}`; it has {available}")]
    UnknownProfile {
        /// The profile asked for.
        profile: String,
        /// The policy's profiles.
        available: String,
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
    /// The effect journal's grouped writes.
    journal: Arc<JournalWrites>,
    cache_dir: PathBuf,
    endpoints: Arc<EndpointMemory>,
    /// One permit per instance the pooling allocator can hold: transactions
    /// wait here for room instead of failing when the pool is full.
    instance_permits: Arc<Semaphore>,
    /// This runtime's own share of the instances, if it is limited to
    /// fewer than the engine's (see [`Runtime::limit_instances`]).
    own_permits: RwLock<Option<Arc<Semaphore>>>,
    hot_keys: HotKeys,
    /// Keys in the write sets of running attempts, for the predictor.
    in_flight_writes: Arc<InFlightWrites>,
    /// Baselines and failure rates of paths, for the predictor.
    paths: PathHistory,
    /// Durations of paths' committed attempts, for hedges' percentile delays.
    hedge_delays: HedgeDelays,
    /// What adaptive mirroring knows before an attempt runs.
    prior: MirrorPrior,
    /// Transactions running per idempotency key, for requests that share one.
    in_flight: Mutex<HashMap<String, idempotency::Running>>,
    /// The attempt each running transaction is at.
    progress: progress::Running,
    /// Whether each transaction's end is written to the status stream
    /// (see [`Runtime::publish_statuses`]).
    publish_statuses: AtomicBool,
    /// Keys held by accepted transactions that have not ended (see
    /// [`Runtime::claim_key`]), with the request and the holder's id.
    accepted_keys: Mutex<HashMap<String, (Fingerprint, String)>>,
    /// The failure-prediction model, if one is configured.
    model: Option<Arc<ModelSlot>>,
    /// The online model that refines it with this store's outcomes.
    online: OnlineModel,
    /// The mirrors' events, published before their primaries commit.
    predicted: Arc<PredictedStreams>,
    clock: Arc<dyn Clock>,
    randomness: Randomness,
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
    use crate::instance::bindings::txmirror::transaction::{config, context, events, kv, log, types, validation};
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    add_recording_filesystem(&mut linker)?;
    add_closed_sockets(&mut linker)?;
    types::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    kv::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    events::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    log::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    validation::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    config::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    context::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// Room for instances: in the engine's limit, and in the runtime's own
/// share if it has one. Dropped when the instances end.
struct Admitted<'a> {
    _shared: SemaphorePermit<'a>,
    _own: Option<OwnedSemaphorePermit>,
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
    raised_timeouts: HashMap<String, Timeouts>,
    /// Why the transaction runs.
    purpose: Purpose,
    /// The lease its writes are made under.
    fence: Option<crate::store::Fence>,
    /// The order its paths are tried in, and why, when the policy
    /// describes them; recorded with its first attempt.
    path_order: Vec<crate::transaction::path_order::PathChoice>,
    /// The A/B arm it runs on, when the policy splits (`[split]`).
    split_arm: Option<String>,
    /// Its caller's cancel flag, if it can be cancelled.
    cancel: Option<CancelToken>,
    /// Whom its status event names to be told of its end.
    notify: Option<String>,
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
    /// An operator replays a dead letter: a failure leaves that letter as
    /// it is, to be replayed again at once, without a letter of its own, a
    /// second compensation, or a key left bound.
    Replay,
}

/// The longest wait the hosts a primary called asked for: a `Retry-After`
/// on a `429` or `503`, or the time until an open breaker's trial.
fn asked_to_wait(primary: &Trace) -> Option<Duration> {
    primary
        .events
        .iter()
        .filter_map(|e| match &e.call {
            HostCall::Http { outcome: HttpOutcome::Answered { retry_after_ms, .. }, .. } => *retry_after_ms,
            HostCall::Http { outcome: HttpOutcome::ShortCircuited { opens_in_ms, .. }, .. } => Some(*opens_in_ms),
            _ => None,
        })
        .max()
        .map(Duration::from_millis)
}

/// Whether a primary sent an unsafe request (one that may have had an
/// effect, answered or not), or found one an earlier attempt sent.
fn sent_unsafe(primary: &Trace) -> bool {
    primary.events.iter().any(|e| {
        matches!(&e.call, HostCall::Http { safe: false, outcome, .. }
            if matches!(outcome, HttpOutcome::Answered { .. } | HttpOutcome::Failed { .. } | HttpOutcome::Replayed { .. }))
    })
}

/// Whether an attempt's primary sent an unsafe call that may have acted:
/// answered with success, never answered, or replayed from the journal
/// (sent by an earlier attempt, with success).
fn may_have_acted(primary: &Trace) -> bool {
    primary.events.iter().any(|e| match &e.call {
        HostCall::Http { safe: false, outcome, .. } => match outcome {
            HttpOutcome::Answered { status, .. } | HttpOutcome::Replayed { status, .. } => (200..300).contains(status),
            HttpOutcome::Failed { .. } => true,
            _ => false,
        },
        _ => false,
    })
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

impl Runtime {
    /// Opens the embedded store in `config.data_dir` and starts a runtime on it.
    pub fn open(config: RuntimeConfig) -> Result<Self, StartError> {
        let store = RedbStore::open(&config.data_dir.join("state.redb"))?;
        Self::with_store(config, Arc::new(store))
    }

    /// Starts a runtime on a given store.
    pub fn with_store(config: RuntimeConfig, store: Arc<dyn StateStore>) -> Result<Self, StartError> {
        let engine = new_engine(&config.engine)?;
        let linker = link(&engine).map_err(|e| StartError::Link(e.into()))?;
        let cache_dir = config.cache_dir.unwrap_or_else(|| config.data_dir.join("cache"));
        let ticker = EpochTicker::start(engine.clone()).map_err(StartError::Ticker)?;
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
        let online = learning::restore(store.as_ref())?;
        let runtime = Self {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                commits: GroupCommit::start(store.clone(), config.commit_batch_limit)?,
                journal: Arc::new(JournalWrites::start(store.clone())?),
                store,
                cache_dir,
                endpoints: Arc::new(EndpointMemory::default()),
                instance_permits,
                own_permits: RwLock::new(None),
                hot_keys: HotKeys::default(),
                in_flight_writes: Arc::default(),
                paths: PathHistory::default(),
                hedge_delays: HedgeDelays::default(),
                prior: MirrorPrior::default(),
                in_flight: Mutex::new(HashMap::new()),
                progress: progress::Running::default(),
                publish_statuses: AtomicBool::new(false),
                accepted_keys: Mutex::new(HashMap::new()),
                online,
                predicted: Arc::default(),
                model,
                clock: config.clock.clone(),
                randomness: config.randomness.clone(),
                _ticker: Arc::new(ticker),
            }),
        };
        // Keys whose retention passed bind nothing; a service also purges
        // them now and then while it runs.
        runtime.purge_lapsed_keys(PURGE_AT_OPEN)?;
        runtime.purge_old_effects(PURGE_AT_OPEN)?;
        Ok(runtime)
    }

    /// A runtime on another store that shares this one's engine, compiled
    /// modules, instance limit and model. What it learns (endpoint health,
    /// path baselines, contention) is its own: the service runs one per
    /// tenant, and no tenant's transactions inform another's predictions.
    pub fn with_other_store(&self, store: Arc<dyn StateStore>) -> Result<Self, StoreError> {
        let shared = &self.inner;
        let online = learning::restore(store.as_ref())?;
        Ok(Self {
            inner: Arc::new(RuntimeInner {
                engine: shared.engine.clone(),
                linker: shared.linker.clone(),
                commits: GroupCommit::start(store.clone(), shared.commits.batch_limit())?,
                journal: Arc::new(JournalWrites::start(store.clone())?),
                store,
                cache_dir: shared.cache_dir.clone(),
                endpoints: Arc::new(EndpointMemory::default()),
                instance_permits: shared.instance_permits.clone(),
                own_permits: RwLock::new(None),
                hot_keys: HotKeys::default(),
                in_flight_writes: Arc::default(),
                paths: PathHistory::default(),
                hedge_delays: HedgeDelays::default(),
                prior: MirrorPrior::default(),
                in_flight: Mutex::new(HashMap::new()),
                progress: progress::Running::default(),
                publish_statuses: AtomicBool::new(false),
                accepted_keys: Mutex::new(HashMap::new()),
                online,
                predicted: Arc::default(),
                model: shared.model.clone(),
                clock: shared.clock.clone(),
                randomness: shared.randomness.clone(),
                _ticker: shared._ticker.clone(),
            }),
        })
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

    /// The order to try `paths` in for a caller of `profile` (see
    /// `transaction/path_order.rs`), from the policy's description of each
    /// and what this node learnt of its failures.
    fn order_paths(
        &self,
        module: &Module,
        policy: &Policy,
        paths: &[String],
        profile: Option<&str>,
        input: &[u8],
    ) -> Result<Vec<crate::transaction::path_order::PathChoice>, ExecuteError> {
        use crate::transaction::path_order::{Candidate, DEFAULT_RELIABILITY, Weights, order};
        let name = profile.unwrap_or("default");
        let weights = match (policy.profiles.get(name), profile) {
            (Some(found), _) => *found,
            (None, None) => crate::policy::Profile::default(),
            (None, Some(asked)) => return Err(unknown_profile(policy, asked)),
        };
        let candidates = paths
            .iter()
            .map(|path| {
                let meta = policy.paths.get(path).cloned().unwrap_or_default();
                let conditions = crate::predict::InputProfile::read(input, &policy.prediction.inputs, path).conditions;
                Candidate {
                    path: path.clone(),
                    reliability: meta.reliability.unwrap_or(DEFAULT_RELIABILITY),
                    failure_rate: f64::from(self.inner.paths.failure_rate((module.hash(), path, &conditions))),
                    expected_latency_ms: meta.expected_latency_ms,
                    cost: meta.cost,
                }
            })
            .collect();
        let weights = Weights { risk_tolerance: weights.risk_tolerance, speed_weight: weights.speed_weight };
        Ok(order(candidates, weights, name))
    }

    /// The circuit breakers of the hosts this runtime's guests called, on
    /// this node (a host has one once a policy gives it a rule).
    pub fn breakers(&self) -> Vec<crate::adjust::breakers::BreakerView> {
        self.inner.endpoints.breakers.views(Instant::now())
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

    /// Writes each transaction's end, from now on, as an event on the
    /// status stream ([`STATUS_STREAM`](crate::vocab::STATUS_STREAM)) in
    /// the same storage transaction as its record, or stops. Off by
    /// default: an event per transaction is a cost only a consumer repays
    /// (the service turns it on for a tenant with a status webhook).
    pub fn publish_statuses(&self, on: bool) {
        self.inner.publish_statuses.store(on, Ordering::SeqCst);
    }

    /// The status event of a transaction's end, if statuses are published.
    fn status_event(&self, ended: &Ended<'_>) -> Option<crate::store::EventEntry> {
        self.inner.publish_statuses.load(Ordering::SeqCst).then(|| ended.event())
    }

    /// Limits this runtime to `max` instances at once (at least 2, a
    /// transaction's twins), within the engine's limit it shares with the
    /// runtimes made by [`Runtime::with_other_store`]; `None` lifts the
    /// limit. The service gives each tenant its share this way, so that one
    /// tenant's transactions cannot hold every instance. Instances running
    /// when the limit changes count against the limit they started under.
    pub fn limit_instances(&self, max: Option<u32>) {
        let permits = max.map(|max| Arc::new(Semaphore::new(max.max(2) as usize)));
        *self.inner.own_permits.write().unwrap_or_else(PoisonError::into_inner) = permits;
    }

    /// Waits until `count` instances may exist: first within this
    /// runtime's share, then within the engine's limit, so that a runtime
    /// waiting for its share holds none of the others' room.
    async fn admit(&self, count: u32) -> Admitted<'_> {
        let own = self.inner.own_permits.read().unwrap_or_else(PoisonError::into_inner).clone();
        let own = match own {
            Some(permits) => match permits.acquire_many_owned(count).await {
                Ok(permit) => Some(permit),
                Err(_) => unreachable!("the semaphore is never closed"),
            },
            None => None,
        };
        match self.inner.instance_permits.acquire_many(count).await {
            Ok(shared) => Admitted { _shared: shared, _own: own },
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
            self.inner.randomness.next_u64(),
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
        self.execute_for(module, policy, request, Purpose::Request).await
    }

    /// [`Runtime::execute`], for `purpose`.
    async fn execute_for(
        &self,
        module: &Module,
        policy: &Arc<Policy>,
        request: TxRequest,
        purpose: Purpose,
    ) -> Result<TxReport, ExecuteError> {
        let Some((key, claim)) = self.key_of(module, policy, &request)? else {
            return self.execute_once(module, policy, request, None, purpose).await;
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
            let mut in_flight = self.inner.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
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
                self.execute_once(module, policy, request, Some(claim), purpose).await
            })
            .await
            .cloned();
        {
            let mut in_flight = self.inner.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
            if in_flight.get(&key).is_some_and(|(_, current)| Arc::ptr_eq(current, &cell)) {
                in_flight.remove(&key);
            }
        }
        let mut report = result?;
        report.deduplicated = report.deduplicated || !ran;
        Ok(report)
    }

    /// Runs one transaction, in a span of its own (see
    /// `txmirror_service::telemetry`) that says how it ended.
    async fn execute_once(
        &self,
        module: &Module,
        policy: &Arc<Policy>,
        request: TxRequest,
        claim: Option<IdempotencyClaim>,
        purpose: Purpose,
    ) -> Result<TxReport, ExecuteError> {
        let span = tracing::info_span!(
            "txmirror.transaction",
            txmirror.transaction_id = Empty,
            txmirror.module = module.hash(),
            txmirror.purpose = ?purpose,
            txmirror.path = Empty,
            txmirror.attempts = Empty,
            txmirror.outcome = Empty,
            txmirror.failure = Empty,
        );
        let result = self.run_transaction(module, policy, request, claim, purpose).instrument(span.clone()).await;
        if !span.is_disabled() {
            match &result {
                Ok(report) => {
                    span.record("txmirror.transaction_id", report.transaction_id.as_str());
                    span.record("txmirror.path", report.path.as_str());
                    span.record("txmirror.attempts", report.attempts.len());
                    match &report.failure {
                        None => span.record("txmirror.outcome", "committed"),
                        Some(failure) => {
                            span.record("txmirror.failure", failure.message.as_str());
                            span.record("txmirror.outcome", failure.kind.as_str())
                        }
                    };
                }
                Err(error) => {
                    span.record("txmirror.outcome", "error");
                    span.record("txmirror.failure", tracing::field::display(error));
                }
            }
        }
        result
    }

    /// [`Runtime::execute_once`]'s work.
    async fn run_transaction(
        &self,
        module: &Module,
        policy: &Arc<Policy>,
        request: TxRequest,
        claim: Option<IdempotencyClaim>,
        purpose: Purpose,
    ) -> Result<TxReport, ExecuteError> {
        let requested = choose_path(module, policy, request.path.clone())?;
        // A profile the policy lacks is a caller's mistake, refused whether
        // or not the policy describes paths to order by it.
        if let Some(asked) = &request.profile
            && !policy.profiles.contains_key(asked)
        {
            return Err(unknown_profile(policy, asked));
        }
        // A caller's id may repeat; a generated one (128 random bits) cannot,
        // and the commit refuses duplicates in any case.
        let id = match request.transaction_id.clone() {
            Some(id) if self.inner.store.transaction(&id)?.is_some() => return Err(ExecuteError::DuplicateId(id)),
            Some(id) => id,
            None => self.inner.randomness.transaction_id(),
        };
        let mut run = TransactionRun {
            id,
            input_hash: input_hash(&request.input),
            random_seed: self.inner.randomness.next_u64(),
            clock: self.inner.clock.now(),
            claim,
            caller: request.caller.clone().unwrap_or_default(),
            adaptive: policy.failure_prediction_enabled && policy.mirror.mode == crate::policy::MirrorMode::Adaptive,
            attempts: Vec::new(),
            reports: Vec::new(),
            raised_timeouts: HashMap::new(),
            purpose,
            fence: request.fence.clone(),
            path_order: Vec::new(),
            split_arm: None,
            cancel: request.cancel.clone(),
            notify: request.notify.clone(),
        };

        // The default path falls back on the alternatives, in order; a path
        // asked for by name runs alone.
        let mut paths = vec![requested.clone()];
        if request.path.is_none() || policy.resolve_paths(module.paths())?.first() == Some(&requested) {
            paths.extend(policy.alternative_paths.iter().filter(|p| **p != requested).cloned());
        }
        // A split's arm tries its own order; the control, and a policy
        // that does not split, go on as usual. A caller that names the path
        // is in no arm.
        let arm = match &request.path {
            None => {
                split::assign(&policy.split, request.caller.as_deref(), request.idempotency_key.as_deref(), &run.id)
            }
            Some(_) => None,
        };
        if let Some(order) = arm.as_ref().and_then(|arm| arm.order.clone()) {
            paths = order;
        } else if request.path.is_none() && paths.len() > 1 && !policy.paths.is_empty() {
            // A policy that describes its paths has them ordered for the
            // caller, unless the caller named the path to start with.
            run.path_order = self.order_paths(module, policy, &paths, request.profile.as_deref(), &request.input)?;
            paths = run.path_order.iter().map(|choice| choice.path.clone()).collect();
        }
        run.split_arm = arm.map(|arm| arm.name);
        let _done = self.inner.progress.until_done(&run.id);
        // What follows each failed attempt is the plan's to say (see
        // `transaction/plan.rs`); this loop only carries it out.
        let mut plan = Plan::new(paths, &policy.retry);
        // Held while retrying after a conflict: see `contention.rs`.
        let mut turn: Option<Turn> = None;
        let mut last_failure = None;
        let mut ended_by_final_failure = false;
        let mut cancelled = false;
        while let Some(path) = plan.path().map(str::to_owned) {
            // A cancel is looked at before each attempt, and within one
            // where stopping is safe (see `vocab/cancel.rs`).
            if run.cancel.as_ref().is_some_and(CancelToken::is_cancelled) {
                cancelled = true;
                let when = if run.attempts.is_empty() { "before its first attempt" } else { "between two attempts" };
                last_failure = Some(attempt::cancelled_by_caller(last_failure, when));
                break;
            }
            let number = u32::try_from(run.attempts.len() + 1).unwrap_or(u32::MAX);
            self.inner.progress.attempt(&run.id, number, &path, unix_millis(self.inner.clock.now()));
            // The next path is where a divert goes and what a hedge runs.
            let next_path = plan.next_path().map(str::to_owned);
            let what = PathTry { path: &path, next_path: next_path.as_deref(), input: &request.input };
            let failure = match self.try_path(module, policy, what, &mut run, &mut turn).await? {
                AttemptEnd::Committed(report) => {
                    self.compensate_abandoned(module, policy, &run, (&request.input, &report)).await;
                    return Ok(report);
                }
                AttemptEnd::Failed(failure) => failure,
            };
            if failure.kind == FailureKind::CancelledByCaller {
                cancelled = true;
                last_failure = Some(failure);
                break;
            }
            let unmirrored = run.reports.last().is_some_and(|r| r.mirror.is_none() && !sent_unsafe(&r.primary));
            let next = plan.failed(AttemptFailed {
                kind: failure.kind,
                second_look_would_help: unmirrored && crate::attempt::mirroring::second_look(policy, failure.kind),
                timeouts_raised: run.raised_timeouts.contains_key(&path),
                jitter: self.inner.randomness.draw(),
                retry_after: run.reports.last().and_then(|r| asked_to_wait(&r.primary)),
            });
            last_failure = Some(failure);
            match next {
                Next::Retry(delay) if delay.is_zero() => {}
                // A cancel cuts the wait short; the loop's next turn ends it.
                Next::Retry(delay) => match &run.cancel {
                    Some(cancel) => {
                        tokio::select! {
                            () = self.inner.clock.sleep(delay) => {}
                            () = cancel.cancelled() => {}
                        }
                    }
                    None => self.inner.clock.sleep(delay).await,
                },
                Next::SecondLook => {}
                Next::FollowingPath => turn = None,
                Next::DeadLetter => break,
                Next::Final => {
                    ended_by_final_failure = true;
                    break;
                }
            }
        }

        let mut failure = last_failure.unwrap_or_else(|| Failure::new(FailureKind::Conflict, "no attempt was made"));
        // A cancelled transaction goes to no queue: its caller chose its
        // end. What its attempts sent is compensated, told what was sent.
        if cancelled && let Some(compensation) = self.compensate_cancelled(module, policy, &run, &request.input).await?
        {
            let ended = match &compensation.outcome {
                TransactionOutcome::Committed { .. } => "committed".to_string(),
                TransactionOutcome::Failed { kind, .. } => format!("failed {kind}, and is dead-lettered"),
            };
            failure.message = format!(
                "{}; what it had sent is compensated by {} ({ended})",
                failure.message, compensation.transaction_id
            );
        }
        // A failed replay adds nothing to the queue: its letter stays.
        let dead_letter = if ended_by_final_failure || cancelled || purpose == Purpose::Replay {
            None
        } else {
            Some(self.compensate_and_dead_letter(module, policy, &request, &requested, &run, &failure).await?)
        };
        // A final failure keeps its key: the same request would fail the
        // same way. A dead-lettered one releases it, so that the client's
        // retry may run; the letter keeps the key, so that its replay and
        // that retry cannot both commit. A failed replay releases it, so
        // that the letter can be replayed again at once.
        // A cancelled one keeps its key, too: the same request is answered
        // with its end, not run again behind its caller's back.
        let claim =
            if (ended_by_final_failure || cancelled) && purpose != Purpose::Replay { run.claim.take() } else { None };
        let outcome = TransactionOutcome::Failed { kind: failure.kind, message: failure.message.clone() };
        let last_path = run.attempts.last().map_or(requested, |a| a.path.clone());
        let status = self.status_event(&Ended {
            transaction_id: &run.id,
            status: "failed",
            module: module.hash(),
            path: &last_path,
            attempts: run.attempts.len(),
            failure: Some(&failure),
            dead_lettered: dead_letter.is_some(),
            notify: run.notify.as_deref(),
        });
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
            run.fence.as_ref(),
            status.into_iter().collect(),
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
}

/// The refusal of a profile the policy lacks, naming those it has.
fn unknown_profile(policy: &Policy, asked: &str) -> ExecuteError {
    let available: Vec<&str> = policy.profiles.keys().map(String::as_str).collect();
    ExecuteError::UnknownProfile {
        profile: asked.to_string(),
        available: if available.is_empty() { "none".into() } else { available.join(", ") },
    }
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
