//! The wasmtime engine: one per runtime, tuned for many short instances.
//!
//! Settings come from measurements on the target machine (see
//! `docs/benchmarks.md`): the pooling allocator with copy-on-write memory
//! images, resident pages kept between instances, and component-model
//! concurrency support off (it costs ~7 µs per instantiation).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances; wall-time limits are checked at this grain
/// and running instances yield to each other at it.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Instances that may exist at once (each transaction uses two).
    pub max_instances: u32,
    /// The largest memory any instance may be granted, in MiB.
    pub memory_ceiling_mib: u64,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self { max_instances: 256, memory_ceiling_mib: crate::policy::DEFAULT_MEMORY_CEILING_MIB }
    }
}

/// Why the engine could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot configure the wasm engine")]
pub struct EngineError(#[source] Box<dyn std::error::Error + Send + Sync + 'static>);

pub(crate) fn new_engine(settings: &EngineSettings) -> Result<Engine, EngineError> {
    Engine::new(&tuned_config(settings)).map_err(|e| EngineError(e.into()))
}

/// The wasmtime configuration of the runtime's engine.
///
/// Public so that benchmarks can compare the runtime against raw wasmtime
/// with exactly the same settings.
pub fn tuned_config(settings: &EngineSettings) -> Config {
    let mut pool = PoolingAllocationConfig::new();
    // A Rust component has a handful of core instances (its code plus the
    // WASI adapter shims), each with at most a memory and a table; a Python
    // one (componentize-py) has a few dozen (the interpreter, its libc and
    // their shims). The limits are counts, not memory set aside.
    let per_component = 64;
    pool.total_component_instances(settings.max_instances)
        .total_core_instances(settings.max_instances * per_component)
        .total_memories(settings.max_instances * 2)
        .total_tables(settings.max_instances * per_component)
        .total_stacks(settings.max_instances)
        .max_core_instances_per_component(per_component)
        .max_memories_per_component(4)
        .max_tables_per_component(per_component)
        .max_memory_size(usize::try_from(settings.memory_ceiling_mib << 20).unwrap_or(usize::MAX))
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(1 << 16)
        .async_stack_keep_resident(1 << 16)
        .pagemap_scan(Enabled::Auto);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .memory_init_cow(true)
        .concurrency_support(false)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
#[derive(Debug)]
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub(crate) fn start(engine: Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name("txmirror-epoch".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })?;
        Ok(Self { stop, thread: Some(thread) })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
