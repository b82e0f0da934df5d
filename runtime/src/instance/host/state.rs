//! The data of one instance's store.

use super::KvView;
use super::journal::EffectJournal;
use super::mirror_files::MirrorFiles;
use super::outbound::{EndpointMemory, OutboundHooks};
use super::output::CapturedOutput;
use crate::adjust::gate::Gate;
use crate::adjust::grants::ResourceWatch;
use crate::adjust::timeouts::AttemptTimeouts;
use crate::contention::WriteClaims;
use crate::instance::limits::InstanceLimiter;
use crate::policy::PrimaryRandomness;
use crate::policy::{Access, Policy};
use crate::predict::InputProfile;
use crate::store::{EventEntry, StateSnapshot};
use crate::trace::TraceRecorder;
use crate::vocab::{CancelToken, Role};
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Everything the host keeps for one running instance.
pub(crate) struct InstanceState {
    pub(crate) role: Role,
    pub(crate) policy: Arc<Policy>,
    pub(crate) trace: TraceRecorder,
    pub(crate) kv: KvView,
    pub(crate) events: Vec<EventEntry>,
    pub(crate) event_bytes: usize,
    pub(crate) limiter: InstanceLimiter,
    /// Set when the wall-time limit stopped the instance.
    pub(crate) deadline_hit: bool,
    /// Set when the instance was stopped because its attempt lost a hedge race.
    pub(crate) cancelled: bool,
    /// Set when the instance was stopped because its caller cancelled the transaction.
    pub(crate) cancelled_by_caller: bool,
    /// Where the mirror's events are published as it emits them.
    pub(crate) event_tap: Option<EventTap>,
    /// The primary's claims on the keys it writes, for other transactions' predictors.
    pub(crate) write_claims: Option<Arc<WriteClaims>>,
    wasi: WasiCtx,
    /// What the guest printed, for its trace.
    pub(crate) stdout: CapturedOutput,
    pub(crate) stderr: CapturedOutput,
    http: WasiHttpCtx,
    hooks: OutboundHooks,
    table: ResourceTable,
}

impl std::fmt::Debug for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceState").field("role", &self.role).field("kv", &self.kv).finish_non_exhaustive()
    }
}

/// What an instance is started with. The primary and the mirror of one
/// transaction get the same setup except for their role.
#[derive(Debug, Clone)]
pub(crate) struct InstanceSetup {
    pub(crate) policy: Arc<Policy>,
    pub(crate) snapshot: Arc<dyn StateSnapshot>,
    /// Seeds `wasi:random`; shared by the twins.
    pub(crate) random_seed: u64,
    /// What the wall clock reads for the whole transaction.
    pub(crate) clock: SystemTime,
    pub(crate) memory: Arc<EndpointMemory>,
    /// Memory limit of this attempt, in bytes.
    pub(crate) memory_limit_bytes: usize,
    /// The effect gate the primary passes before unsafe calls, if the mirror runs.
    pub(crate) gate: Option<Arc<Gate>>,
    /// The mirror's fuel as the primary sees it, if the mirror runs.
    pub(crate) resource_watch: Option<Arc<ResourceWatch>>,
    /// The attempt's timeouts, which the predictor may raise.
    pub(crate) timeouts: Arc<AttemptTimeouts>,
    /// Set when the attempt lost a hedge race: its instances stop.
    pub(crate) cancelled: Option<Arc<AtomicBool>>,
    /// Set when the caller cancels the transaction: its instances stop,
    /// and the primary sends no unsafe call more.
    pub(crate) caller_cancel: Option<CancelToken>,
    /// Where the primary's writes are announced while the attempt runs.
    pub(crate) write_claims: Option<Arc<WriteClaims>>,
    /// Whether the predictor may adjust the primary (grants); false for an
    /// attempt in the exploration share.
    pub(crate) adjust: bool,
    /// What the transaction's input says to the predictor: the conditions
    /// its outbound requests are learnt under.
    pub(crate) input: Arc<InputProfile>,
    /// The transaction's effect journal: where the primary's unsafe calls
    /// are recorded, and earlier attempts' calls found; `None` in a dry run.
    pub(crate) journal: Option<Arc<EffectJournal>>,
    /// The mirror's copies of the read-write directories, taken when the
    /// attempt started; `None` when it reads them live.
    pub(crate) mirror_files: Option<Arc<MirrorFiles>>,
    /// Where the mirror publishes each event it emits (the predicted view
    /// of its stream); `None` in a dry run and without a mirror.
    pub(crate) event_tap: Option<EventTap>,
}

/// What an [`EventTap`] calls: (stream, payload).
type Publish = dyn Fn(&str, &[u8]) + Send + Sync;

/// A call the mirror makes with each event it emits.
#[derive(Clone)]
pub(crate) struct EventTap(Arc<Publish>);

impl EventTap {
    pub(crate) fn new(tap: impl Fn(&str, &[u8]) + Send + Sync + 'static) -> Self {
        Self(Arc::new(tap))
    }

    pub(crate) fn publish(&self, stream: &str, payload: &[u8]) {
        (self.0)(stream, payload);
    }
}

impl std::fmt::Debug for EventTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventTap")
    }
}

impl InstanceSetup {
    /// The setup of one attempt; the memory limit comes from the policy.
    pub(crate) fn new(
        policy: Arc<Policy>,
        snapshot: Arc<dyn StateSnapshot>,
        random_seed: u64,
        clock: SystemTime,
        memory: Arc<EndpointMemory>,
    ) -> Self {
        let memory_limit_bytes = usize::try_from(policy.resource_requirements.memory_mib << 20).unwrap_or(usize::MAX);
        let timeouts = Arc::new(AttemptTimeouts::new(&policy.resource_requirements, None));
        Self {
            policy,
            snapshot,
            random_seed,
            clock,
            memory,
            memory_limit_bytes,
            gate: None,
            resource_watch: None,
            timeouts,
            cancelled: None,
            caller_cancel: None,
            write_claims: None,
            adjust: true,
            input: Arc::default(),
            journal: None,
            mirror_files: None,
            event_tap: None,
        }
    }
}

/// A wall clock frozen at the start of the transaction.
struct FrozenWallClock(Duration);

impl HostWallClock for FrozenWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        self.0
    }
}

/// A monotonic clock that advances one microsecond per reading, from zero,
/// so that both twins read the same sequence.
struct SteppingMonotonicClock(std::sync::atomic::AtomicU64);

impl HostMonotonicClock for SteppingMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000
    }

    fn now(&self) -> u64 {
        self.0.fetch_add(1_000, std::sync::atomic::Ordering::Relaxed)
    }
}

/// Why an instance could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot prepare directory {host} for the guest: {reason}")]
pub(crate) struct SetupError {
    pub(crate) host: String,
    pub(crate) reason: String,
}

impl InstanceState {
    pub(crate) fn new(setup: &InstanceSetup, role: Role, trace: TraceRecorder) -> Result<Self, SetupError> {
        let mut wasi = WasiCtxBuilder::new();
        match (role, setup.policy.randomness.primary) {
            // Secrets for the primary alone; the mirror keeps the stream.
            (Role::Primary, PrimaryRandomness::System) => wasi.secure_random(rand::make_rng::<StdRng>()),
            _ => wasi.secure_random(StdRng::seed_from_u64(setup.random_seed)),
        };
        wasi.insecure_random(StdRng::seed_from_u64(setup.random_seed.rotate_left(17)))
            .insecure_random_seed(u128::from(setup.random_seed))
            .wall_clock(FrozenWallClock(setup.clock.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()))
            .monotonic_clock(SteppingMonotonicClock(std::sync::atomic::AtomicU64::new(0)));
        // What the guest prints goes into its trace (see `output.rs`).
        let (stdout, stderr) = (CapturedOutput::default(), CapturedOutput::default());
        wasi.stdout(stdout.clone()).stderr(stderr.clone());
        for grant in &setup.policy.capabilities.files {
            let perms = match (role, grant.access) {
                (Role::Primary, Access::ReadWrite) => FsPerms::ReadWrite,
                _ => FsPerms::ReadOnly,
            };
            // The mirror reads its copy, as the directory was when the attempt started.
            let host = match (role, &setup.mirror_files) {
                (Role::Mirror, Some(files)) => files.view_of(&grant.host).unwrap_or(&grant.host),
                _ => &grant.host,
            };
            wasi.preopened_dir(host, &grant.guest, perms)
                .map_err(|e| SetupError { host: grant.host.display().to_string(), reason: format!("{e:#}") })?;
        }
        let gate = if role == Role::Primary { setup.gate.clone() } else { None };
        Ok(Self {
            role,
            policy: setup.policy.clone(),
            kv: KvView::new(setup.snapshot.clone()),
            events: Vec::new(),
            event_bytes: 0,
            limiter: match &setup.resource_watch {
                // An explored attempt's primary gets no memory grant.
                Some(_) if role == Role::Primary && !setup.adjust => InstanceLimiter::new(setup.memory_limit_bytes),
                Some(watch) => InstanceLimiter::mirrored(
                    setup.memory_limit_bytes,
                    usize::try_from(setup.policy.resource_requirements.memory_ceiling_mib() << 20)
                        .unwrap_or(usize::MAX),
                    role,
                    watch.clone(),
                    trace.clone(),
                ),
                None => InstanceLimiter::new(setup.memory_limit_bytes),
            },
            deadline_hit: false,
            cancelled: false,
            cancelled_by_caller: false,
            event_tap: if role == Role::Mirror { setup.event_tap.clone() } else { None },
            write_claims: if role == Role::Primary { setup.write_claims.clone() } else { None },
            wasi: wasi.build(),
            stdout,
            stderr,
            http: WasiHttpCtx::new(),
            hooks: OutboundHooks {
                role,
                policy: setup.policy.clone(),
                trace: trace.clone(),
                memory: setup.memory.clone(),
                gate,
                // Only a mirror with a primary beside it (and so a gate)
                // stands for a call that may be held back; a dry run's does not.
                beside_primary: setup.gate.is_some(),
                timeouts: setup.timeouts.clone(),
                unsafe_calls: 0,
                input: setup.input.clone(),
                journal: setup.journal.clone(),
                cancelled: setup.cancelled.clone(),
                caller_cancel: setup.caller_cancel.clone(),
            },
            trace,
            table: ResourceTable::new(),
        })
    }
}

impl InstanceState {
    /// The transaction's effect journal, if it keeps one (not in a dry run).
    pub(crate) fn journal(&self) -> Option<&EffectJournal> {
        self.hooks.journal.as_deref()
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}
