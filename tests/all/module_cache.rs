//! Modules compile once: later loads come from the cache on disk, and a
//! damaged cache entry is recompiled rather than trusted.
//!
//! Regression: cache entries used to be memory-mapped, so damaging one while
//! a runtime that had loaded it was still alive (as below, where `runtime`
//! outlives the damage) killed the process with SIGBUS.

use tempfile::tempdir;
use txmirror_runtime::{Runtime, RuntimeConfig};
use txmirror_tests::guests;

fn cache_entries(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_are_compiled_once_and_damaged_entries_recompiled() {
    let dir = tempdir().unwrap();
    let cache = dir.path().join("cache");
    let bytes = std::fs::read(guests::ORDER_IMPORT).unwrap();
    // Runtimes with their own stores and one shared cache.
    let open = |name: &str| {
        let mut config = RuntimeConfig::new(dir.path().join(name));
        config.cache_dir = Some(cache.clone());
        config.engine.max_instances = 8;
        Runtime::open(config).unwrap()
    };

    let first = open("first").load_module(&bytes).await.unwrap();
    let entries = cache_entries(&cache);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0].file_name().unwrap().to_str().unwrap().starts_with(first.hash()));
    let written = std::fs::metadata(&entries[0]).unwrap().modified().unwrap();

    // A new runtime (a restart) loads the same entry without rewriting it.
    let runtime = open("second");
    let second = runtime.load_module(&bytes).await.unwrap();
    assert_eq!(second.hash(), first.hash());
    assert_eq!(second.paths(), first.paths());
    assert!(second.is_preinitialized(), "the cached image is the pre-initialised one");
    assert_eq!(std::fs::metadata(&entries[0]).unwrap().modified().unwrap(), written);

    // A damaged entry is replaced.
    std::fs::write(&entries[0], b"not a compiled module").unwrap();
    let third = open("third").load_module(&bytes).await.unwrap();
    assert_eq!(third.paths(), first.paths());
    assert!(std::fs::read(&entries[0]).unwrap().len() > 1000, "recompiled and rewritten");
}
