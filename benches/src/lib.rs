//! Baselines for the benchmarks: raw wasmtime, tuned as the runtime is.

use txmirror_runtime::EngineSettings;
use wasmtime::component::{Component, InstancePre, Linker, ResourceTable, Val};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The least state a std Rust component needs: WASI.
#[allow(missing_debug_implementations, reason = "a benchmark fixture")]
pub struct RawState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for RawState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Raw wasmtime with exactly the runtime's engine configuration (pooling,
/// copy-on-write, resident pages, no component concurrency, fuel and
/// epochs), and no txmirror code at all: imports other than WASI trap.
#[allow(missing_debug_implementations, reason = "a benchmark fixture")]
pub struct RawWasmtime {
    engine: Engine,
    pre: InstancePre<RawState>,
}

impl RawWasmtime {
    /// Compiles `wasm` and links it.
    pub fn new(wasm: &[u8]) -> wasmtime::Result<Self> {
        let config =
            txmirror_runtime::engine::tuned_config(&EngineSettings { max_instances: 64, ..Default::default() });
        let engine = Engine::new(&config)?;
        let component = Component::new(&engine, wasm)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        linker.define_unknown_imports_as_traps(&component)?;
        let pre = linker.instantiate_pre(&component)?;
        Ok(Self { engine, pre })
    }

    /// One transaction's worth of work: new store, instantiate, call
    /// `run(path, input)`, drop.
    pub async fn run(&self, path: &str, input: &[u8]) -> wasmtime::Result<()> {
        let state = RawState { wasi: WasiCtx::builder().build(), table: ResourceTable::new() };
        let mut store = Store::new(&self.engine, state);
        store.set_fuel(u64::MAX / 2)?;
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = self.pre.instantiate_async(&mut store).await?;
        let run = instance.get_func(&mut store, "run").ok_or_else(|| wasmtime::format_err!("no `run` export"))?;
        let input = Val::List(input.iter().map(|b| Val::U8(*b)).collect());
        let mut results = [Val::Bool(false)];
        run.call_async(&mut store, &[Val::String(path.into()), input], &mut results).await?;
        Ok(())
    }
}
