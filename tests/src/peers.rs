//! The peers of the benchmarks' comparison (`docs/benchmarks.md`): one
//! transaction logic (`benches/guests/peer-logic`: a transfer over a
//! key-value map the host provides, and an order normalisation) behind
//! each host, called the same way.
//!
//! - [`TxmirrorPeer`]: a whole txmirror transaction (snapshot, primary,
//!   mirror if asked, commit and durable record on the embedded store, on a
//!   RAM file system where there is one so that the disk is not what is
//!   measured).
//! - [`ComponentPeer`]: a plain component on raw wasmtime, a fresh instance
//!   per call, with wasmtime's default configuration or a tuned pooling one.
//! - `ExtismPeer` (feature `extism`): an Extism plugin with host functions, reused across
//!   calls (as Extism is used) or made fresh for each.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use txmirror_runtime::store::{RedbStore, TransactionOutcome};
use txmirror_runtime::{EngineSettings, Module, Policy, Runtime, TxRequest};
use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The accounts every peer starts with, and their balances.
pub const ACCOUNTS: [(&str, u64); 2] = [("alice", 1_000_000_000), ("bob", 1_000_000_000)];

/// A transfer between the two [`ACCOUNTS`].
pub const TRANSFER: &[u8] = br#"{"from":"alice","to":"bob","amount":1}"#;

/// An order as a partner might send it: untrimmed, mixed case, a SKU on
/// two lines.
pub const ORDER: &[u8] = br#"{"id":"  ord-1042 ","customer":"  Ada.Lovelace@Example.COM ","currency":"eur","lines":[
    {"sku":"tea_green","quantity":2,"unit_price_cents":450},
    {"sku":" cup-blue ","quantity":1,"unit_price_cents":1200},
    {"sku":"TEA-GREEN","quantity":1,"unit_price_cents":450},
    {"sku":"saucer_white","quantity":4,"unit_price_cents":300}]}"#;

/// One host of the shared logic.
pub trait Peer {
    /// Runs `path` (`transfer` or `normalise`) on a JSON input: the JSON
    /// output, or why it failed.
    fn call(&mut self, path: &str, input: &[u8]) -> Result<Vec<u8>, String>;
    /// The balance of an account in the host's key-value map.
    fn balance(&self, account: &str) -> Option<u64>;
}

fn seeded_accounts() -> HashMap<String, u64> {
    ACCOUNTS.iter().map(|(name, balance)| (name.to_string(), *balance)).collect()
}

/// A txmirror transaction per call.
#[allow(missing_debug_implementations, reason = "a benchmark fixture")]
pub struct TxmirrorPeer {
    executor: tokio::runtime::Runtime,
    runtime: Runtime,
    module: Module,
    policy: Arc<Policy>,
    _dir: tempfile::TempDir,
}

impl TxmirrorPeer {
    /// A runtime on a store in RAM seeded with [`ACCOUNTS`], running
    /// the guest at `wasm` with the mirror on or off.
    pub fn new(wasm: &str, mirrored: bool) -> Self {
        let executor = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        // The store is a real file, in memory where the machine has a RAM
        // file system, so that what is measured is the runtime, not the disk.
        let ram = Path::new("/dev/shm");
        let dir = if ram.is_dir() { tempfile::tempdir_in(ram) } else { tempfile::tempdir() }.unwrap();
        let mut config = crate::config(dir.path());
        config.engine = EngineSettings { max_instances: 16, ..EngineSettings::default() };
        let store = Arc::new(RedbStore::open(&dir.path().join("state.redb")).unwrap());
        crate::seed_accounts(store.as_ref(), seeded_accounts());
        let runtime = Runtime::with_store(config, store).unwrap();
        let module = executor.block_on(crate::load(&runtime, wasm));
        let policy = Arc::new(
            Policy::parse(
                &format!(
                    "failure_prediction_enabled = {mirrored}\n[capabilities]\nkv = {{ accounts = \"read-write\" }}"
                ),
                Path::new("peer-policy.toml"),
            )
            .unwrap(),
        );
        Self { executor, runtime, module, policy, _dir: dir }
    }
}

impl Peer for TxmirrorPeer {
    fn call(&mut self, path: &str, input: &[u8]) -> Result<Vec<u8>, String> {
        let request = TxRequest { path: Some(path.into()), input: input.to_vec(), ..TxRequest::default() };
        let report = self
            .executor
            .block_on(self.runtime.execute(&self.module, &self.policy, request))
            .map_err(|e| e.to_string())?;
        if let TransactionOutcome::Committed { output, .. } = report.outcome {
            return Ok(output);
        }
        Err(report.failure.map_or_else(|| "failed without a reason".to_string(), |failure| failure.message))
    }

    fn balance(&self, account: &str) -> Option<u64> {
        let value = self.runtime.snapshot().unwrap().get("accounts", account).unwrap()?;
        Some(String::from_utf8(value.value).unwrap().parse().unwrap())
    }
}

/// How [`ComponentPeer`]'s engine is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineSetup {
    /// `Config::new()`: the on-demand allocator.
    Default,
    /// The pooling allocator with copy-on-write images and resident pages,
    /// component concurrency off: txmirror's own settings
    /// (`engine::tuned_config`) without fuel and epoch metering.
    TunedPooling,
    /// [`EngineSetup::TunedPooling`] with fuel and epochs, exactly as txmirror
    /// runs guests.
    TunedPoolingMetered,
}

struct ComponentState {
    wasi: WasiCtx,
    table: ResourceTable,
    balances: Arc<Mutex<HashMap<String, u64>>>,
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// A plain component on raw wasmtime: new store, instantiate from an
/// `InstancePre`, call `run`, drop.
#[allow(missing_debug_implementations, reason = "a benchmark fixture")]
pub struct ComponentPeer {
    engine: Engine,
    pre: InstancePre<ComponentState>,
    run: ComponentExportIndex,
    metered: bool,
    balances: Arc<Mutex<HashMap<String, u64>>>,
}

impl ComponentPeer {
    /// Compiles and links the component at `wasm`.
    pub fn new(wasm: &str, setup: EngineSetup) -> Self {
        let metered = setup == EngineSetup::TunedPoolingMetered;
        let config = match setup {
            EngineSetup::Default => Config::new(),
            EngineSetup::TunedPooling | EngineSetup::TunedPoolingMetered => {
                let mut config =
                    txmirror_runtime::tuned_config(&EngineSettings { max_instances: 16, ..EngineSettings::default() });
                config.consume_fuel(metered).epoch_interruption(metered);
                config
            }
        };
        let engine = Engine::new(&config).unwrap();
        let component = Component::from_file(&engine, wasm).unwrap();
        let mut linker: Linker<ComponentState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
        let mut balances = linker.instance("balances").unwrap();
        balances
            .func_wrap("get", |store, (account,): (String,)| {
                let state: &ComponentState = store.data();
                Ok((state.balances.lock().unwrap().get(&account).copied(),))
            })
            .unwrap();
        balances
            .func_wrap("set", |store, (account, balance): (String, u64)| {
                let state: &ComponentState = store.data();
                state.balances.lock().unwrap().insert(account, balance);
                Ok(())
            })
            .unwrap();
        let pre = linker.instantiate_pre(&component).unwrap();
        let (_, run) = component.get_export(None, "run").unwrap();
        Self { engine, pre, run, metered, balances: Arc::new(Mutex::new(seeded_accounts())) }
    }
}

impl Peer for ComponentPeer {
    fn call(&mut self, path: &str, input: &[u8]) -> Result<Vec<u8>, String> {
        let state = ComponentState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            balances: self.balances.clone(),
        };
        let mut store = Store::new(&self.engine, state);
        if self.metered {
            store.set_fuel(u64::MAX / 2).map_err(|e| e.to_string())?;
            store.set_epoch_deadline(u64::MAX / 2);
        }
        let instance = self.pre.instantiate(&mut store).map_err(|e| e.to_string())?;
        let run = instance
            .get_typed_func::<(&str, &[u8]), (Result<Vec<u8>, String>,)>(&mut store, &self.run)
            .map_err(|e| e.to_string())?;
        let (result,) = run.call(&mut store, (path, input)).map_err(|e| e.to_string())?;
        result
    }

    fn balance(&self, account: &str) -> Option<u64> {
        self.balances.lock().unwrap().get(account).copied()
    }
}

/// The Extism host, behind the `extism` feature: it brings a wasmtime of its
/// own, which only `cargo xtask bench` builds.
#[cfg(feature = "extism")]
mod extism;
#[cfg(feature = "extism")]
pub use extism::ExtismPeer;
