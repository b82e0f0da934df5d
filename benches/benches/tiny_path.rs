//! A tiny path (the `ok` path of the runaway guest, which makes no host
//! call), from the snapshot image:
//!
//! - `raw_wasmtime`: new store, instantiate, call, drop, in raw wasmtime
//!   with the runtime's engine configuration: the baseline;
//! - `instance_from_snapshot`: the same through txmirror (`Runtime::dry_run`:
//!   store snapshot, instance setup with seeded randomness, limits and
//!   trace, the call, the report), no commit;
//! - `transaction_primary_only`: a whole transaction with mirroring off,
//!   including its commit and durable record;
//! - `transaction_mirrored`: the same with the mirror beside the primary;
//! - `transaction_mirrored_with_model`: the same, scored by the placeholder
//!   ONNX model besides the rules.
//!
//! Transactions run on redb's in-memory backend so that fsync does not hide
//! the runtime's own cost.
//!
//! Run with `cargo bench -p txmirror-benches --bench tiny_path`.

#![allow(clippy::unwrap_used, reason = "benchmark")]

use criterion::{Criterion, criterion_group, criterion_main};
use std::path::Path;
use std::sync::Arc;
use txmirror_benches::RawWasmtime;
use txmirror_runtime::store::RedbStore;
use txmirror_runtime::{ModelConfig, Policy, Runtime, RuntimeConfig, TxRequest};
use txmirror_tests::{guests, models};

fn tiny_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let wasm = std::fs::read(guests::RUNAWAY).unwrap();
    let request = || TxRequest { path: Some("ok".into()), input: b"{}".to_vec(), ..Default::default() };

    let raw = RawWasmtime::new(&wasm).unwrap();
    let dir = std::env::temp_dir().join(format!("txmirror-bench-{}", std::process::id()));
    let runtime = Runtime::with_store(RuntimeConfig::new(&dir), Arc::new(RedbStore::in_memory().unwrap())).unwrap();
    let module = rt.block_on(runtime.load_module(&wasm)).unwrap();
    let policy = |mirrored: bool| {
        Arc::new(Policy::parse(&format!("failure_prediction_enabled = {mirrored}"), Path::new("bench.toml")).unwrap())
    };
    let (primary_only, mirrored) = (policy(false), policy(true));

    let mut group = c.benchmark_group("tiny_path");
    group.bench_function("raw_wasmtime", |b| b.iter(|| rt.block_on(raw.run("ok", b"{}")).unwrap()));
    group.bench_function("instance_from_snapshot", |b| {
        b.iter(|| rt.block_on(runtime.dry_run(&module, &mirrored, request())).unwrap())
    });
    group.bench_function("transaction_primary_only", |b| {
        b.iter(|| rt.block_on(runtime.execute(&module, &primary_only, request())).unwrap())
    });
    group.bench_function("transaction_mirrored", |b| {
        b.iter(|| rt.block_on(runtime.execute(&module, &mirrored, request())).unwrap())
    });
    let mut config = RuntimeConfig::new(dir.join("with-model"));
    config.model = Some(ModelConfig { reload_interval: None, ..ModelConfig::new(models::PLACEHOLDER) });
    let with_model = Runtime::with_store(config, Arc::new(RedbStore::in_memory().unwrap())).unwrap();
    let module = rt.block_on(with_model.load_module(&wasm)).unwrap();
    group.bench_function("transaction_mirrored_with_model", |b| {
        b.iter(|| rt.block_on(with_model.execute(&module, &mirrored, request())).unwrap())
    });
    group.finish();
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, tiny_path);
criterion_main!(benches);
