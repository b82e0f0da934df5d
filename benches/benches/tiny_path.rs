//! Instantiate + run of a tiny path (the `ok` path of the runaway guest,
//! which makes no host call), from the snapshot image:
//!
//! - `raw_wasmtime`: tuned raw wasmtime, the baseline;
//! - `primary_only`: a txmirror transaction with mirroring off;
//! - `mirrored`: a txmirror transaction with its mirror;
//! - `dry_run`: the mirror alone.
//!
//! The txmirror transactions run on redb's in-memory backend so that
//! fsync does not hide the runtime's own cost; each still takes a snapshot,
//! and commits its (empty) write set and its record in a redb transaction.
//!
//! Run with `cargo bench -p txmirror-benches --bench tiny_path`.

#![allow(clippy::unwrap_used, reason = "benchmark")]

use criterion::{Criterion, criterion_group, criterion_main};
use std::path::Path;
use std::sync::Arc;
use txmirror_benches::RawWasmtime;
use txmirror_runtime::store::RedbStore;
use txmirror_runtime::{Policy, Runtime, RuntimeConfig, TxRequest};
use txmirror_tests::guests;

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
    group.bench_function("primary_only", |b| {
        b.iter(|| rt.block_on(runtime.execute(&module, &primary_only, request())).unwrap())
    });
    group.bench_function("mirrored", |b| {
        b.iter(|| rt.block_on(runtime.execute(&module, &mirrored, request())).unwrap())
    });
    group
        .bench_function("dry_run", |b| b.iter(|| rt.block_on(runtime.dry_run(&module, &mirrored, request())).unwrap()));
    group.finish();
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, tiny_path);
criterion_main!(benches);
