//! Baselines for the benchmarks: raw wasmtime, tuned as the runtime is.

use txmirror_runtime::EngineSettings;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, InstancePre, Linker, ResourceTable, Val};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// The least state a component of our world needs: WASI and WASI HTTP.
#[allow(missing_debug_implementations, reason = "a benchmark fixture")]
pub struct RawState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
}

impl WasiHttpView for RawState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: Default::default() }
    }
}

impl WasiView for RawState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Raw wasmtime with exactly the runtime's engine configuration (pooling,
/// copy-on-write, resident pages, no component concurrency, fuel and
/// epochs), and no txmirror code at all: imports other than WASI and WASI
/// HTTP trap.
#[allow(missing_debug_implementations, reason = "a benchmark fixture")]
pub struct RawWasmtime {
    engine: Engine,
    pre: InstancePre<RawState>,
}

impl RawWasmtime {
    /// Compiles `wasm` and links it.
    pub fn new(wasm: &[u8]) -> wasmtime::Result<Self> {
        let config = txmirror_runtime::tuned_config(&EngineSettings { max_instances: 64, ..Default::default() });
        let engine = Engine::new(&config)?;
        let component = Component::new(&engine, wasm)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        // txmirror's own interfaces exist only as traps: the `ok` path calls none.
        let component_type = component.component_type();
        for (name, item) in component_type.imports(&engine) {
            let ComponentItem::ComponentInstance(instance) = item.ty else { continue };
            if !name.starts_with("txmirror:") {
                continue;
            }
            let mut definitions = linker.instance(name)?;
            for (function, export) in instance.exports(&engine) {
                if matches!(export.ty, ComponentItem::ComponentFunc(_)) {
                    definitions
                        .func_new(function, |_, _, _, _| Err(wasmtime::format_err!("not provided by the baseline")))?;
                }
            }
        }
        let pre = linker.instantiate_pre(&component)?;
        Ok(Self { engine, pre })
    }

    /// A fresh instance, dropped at once: what instantiation alone costs.
    pub async fn instantiate(&self) -> wasmtime::Result<()> {
        let state =
            RawState { wasi: WasiCtx::builder().build(), http: WasiHttpCtx::new(), table: ResourceTable::new() };
        let mut store = Store::new(&self.engine, state);
        store.set_fuel(u64::MAX / 2)?;
        store.set_epoch_deadline(u64::MAX / 2);
        self.pre.instantiate_async(&mut store).await?;
        Ok(())
    }

    /// One transaction's worth of work: new store, instantiate, call
    /// `run(path, input)`, drop.
    pub async fn run(&self, path: &str, input: &[u8]) -> wasmtime::Result<()> {
        let state =
            RawState { wasi: WasiCtx::builder().build(), http: WasiHttpCtx::new(), table: ResourceTable::new() };
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
