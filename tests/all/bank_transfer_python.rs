//! The bank transfer written in Python (`examples/bank-transfer-python`,
//! with `guest-sdk-python`), built from source by componentize-py and run
//! through the runtime with its mirror and gate: it moves money, refuses
//! overdrafts and bad input as the Rust example does, and, at about 18 MB,
//! compiles once and comes from the cache after.

use serde_json::{Value, json};
use std::sync::Arc;
use tempfile::tempdir;
use txmirror_runtime::trace::{Effect, HostCall};
use txmirror_runtime::{FailureKind, Module, Policy, Runtime, RuntimeConfig, TxReport, TxRequest};
use txmirror_tests::{guests, load, policy, runtime};

fn example_policy() -> Arc<Policy> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/bank-transfer-python/policy.toml");
    Arc::new(Policy::from_file(std::path::Path::new(path)).unwrap())
}

async fn run(runtime: &Runtime, module: &Module, policy: &Arc<Policy>, path: &str, input: &str) -> TxReport {
    let request = TxRequest { path: Some(path.into()), input: input.as_bytes().to_vec(), ..Default::default() };
    runtime.execute(module, policy, request).await.unwrap()
}

fn balance(runtime: &Runtime, account: &str) -> u64 {
    let stored = runtime.snapshot().unwrap().get("accounts", account).unwrap().unwrap();
    serde_json::from_slice(&stored.value).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_module_moves_money_through_the_mirror_and_the_gate() {
    let dir = tempdir().unwrap();
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::BANK_TRANSFER_PYTHON).await;
    assert_eq!(module.paths(), ["transfer", "deposit", "balance"]);
    let policy = example_policy();
    for (account, amount) in [("alice", 100), ("bob", 0)] {
        let input = json!({ "account": account, "amount": amount }).to_string();
        let report = run(&runtime, &module, &policy, "deposit", &input).await;
        assert!(report.failure.is_none(), "{report:#?}");
    }

    let report = run(&runtime, &module, &policy, "transfer", r#"{"from":"alice","to":"bob","amount":30}"#).await;
    assert_eq!(report.output_json().unwrap(), json!({"from_balance": 70, "to_balance": 30}));
    assert_eq!((balance(&runtime, "alice"), balance(&runtime, "bob")), (70, 30));
    let events = runtime.events("transfers", 0, 10).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(serde_json::from_slice::<Value>(&events[0].payload).unwrap()["amount"], 30);
    // The mirror ran the same code beside it, its writes withheld, and the
    // gate waited for it before the commit.
    let attempt = &report.attempts[0];
    let mirror = attempt.mirror.as_ref().expect("the example's policy mirrors");
    let withheld =
        mirror.events.iter().filter(|e| matches!(&e.call, HostCall::KvWrite { effect: Effect::Withheld, .. })).count();
    assert_eq!(withheld, 2, "{mirror:#?}");
    assert!(attempt.primary.events.iter().any(|e| matches!(e.call, HostCall::Gate { .. })), "{:#?}", attempt.primary);

    let version = runtime.snapshot().unwrap().version();
    let overdraft = run(&runtime, &module, &policy, "transfer", r#"{"from":"alice","to":"bob","amount":1000}"#).await;
    let failure = overdraft.failure.unwrap();
    assert_eq!(failure.kind, FailureKind::Rejected);
    assert!(failure.message.contains("insufficient funds in `alice`"), "{}", failure.message);
    assert_eq!(runtime.snapshot().unwrap().version(), version, "a rejected transfer commits nothing");

    let invalid = run(&runtime, &module, &policy, "transfer", r#"{"from":"alice","to":"alice","amount":0}"#).await;
    let failure = invalid.failure.unwrap();
    assert_eq!(failure.kind, FailureKind::Validation);
    assert!(failure.message.contains("amount") && failure.message.contains("to:"), "{}", failure.message);
    // Each issue was in the trace as soon as the guest found it.
    let reported =
        invalid.attempts[0].primary.events.iter().filter(|e| matches!(e.call, HostCall::Validation { .. })).count();
    assert_eq!(reported, 2);

    for (input, says) in [("not json", "not a valid input document"), ("[1, 2]", "must be a JSON object")] {
        let failure = run(&runtime, &module, &policy, "transfer", input).await.failure.unwrap();
        assert_eq!(failure.kind, FailureKind::Validation, "{input}");
        assert!(failure.message.contains(says), "{input}: {}", failure.message);
    }
    let request = TxRequest { path: Some("steal".into()), input: b"{}".to_vec(), ..Default::default() };
    let unknown = runtime.execute(&module, &policy, request).await.unwrap_err();
    assert!(unknown.to_string().contains("steal"), "an unknown path is refused: {unknown}");
    assert_eq!(runtime.snapshot().unwrap().version(), version, "nothing failed committed anything");
}

/// The same requests through the Rust example and the Python one end the
/// same way: same outputs, same failure kinds, same balances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_and_rust_examples_agree() {
    let steps = [
        ("deposit", r#"{"account":"a","amount":50}"#),
        ("deposit", r#"{"account":"b","amount":7}"#),
        ("transfer", r#"{"from":"a","to":"b","amount":20}"#),
        ("transfer", r#"{"from":"b","to":"a","amount":28}"#),
        ("transfer", r#"{"from":"a","to":"nobody","amount":1}"#),
        ("transfer", r#"{"from":"a","to":"b","amount":0}"#),
        ("balance", r#"{"account":"a"}"#),
        ("balance", r#"{"account":"b"}"#),
        ("balance", r#"{"account":"c"}"#),
    ];
    let dir = tempdir().unwrap();
    let policy = policy("[capabilities]\nkv = { accounts = \"read-write\" }\nstreams = [\"transfers\"]\n");
    let mut endings = Vec::new();
    for (name, guest) in [("rust", guests::BANK_TRANSFER), ("python", guests::BANK_TRANSFER_PYTHON)] {
        let runtime = runtime(&dir.path().join(name));
        let module = load(&runtime, guest).await;
        let mut ended = Vec::new();
        for (path, input) in steps {
            let report = run(&runtime, &module, &policy, path, input).await;
            ended.push(match &report.failure {
                None => json!({ "output": report.output_json().unwrap() }),
                Some(failure) => json!({ "failed": format!("{:?}", failure.kind) }),
            });
        }
        endings.push(ended);
    }
    assert_eq!(endings[0], endings[1]);
    // b had 27 after the first transfer, too little for the second.
    assert_eq!(endings[0][3], json!({ "failed": "Rejected" }));
    assert_eq!(endings[0][7], json!({ "output": { "account": "b", "balance": 27 } }));
}

/// The Python component (about 18 MB) is compiled on its first load only:
/// a restarted runtime takes it from the cache without rewriting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_module_compiles_once() {
    let dir = tempdir().unwrap();
    let cache = dir.path().join("cache");
    let bytes = std::fs::read(guests::BANK_TRANSFER_PYTHON).unwrap();
    assert!(bytes.len() > 10 << 20, "{} bytes", bytes.len());
    let open = |name: &str| {
        let mut config = RuntimeConfig::new(dir.path().join(name));
        config.cache_dir = Some(cache.clone());
        config.engine.max_instances = 8;
        Runtime::open(config).unwrap()
    };
    let first = open("first").load_module(&bytes).await.unwrap();
    let entries: Vec<_> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let written = std::fs::metadata(&entries[0]).unwrap().modified().unwrap();
    let second = open("second").load_module(&bytes).await.unwrap();
    assert_eq!((second.hash(), second.paths()), (first.hash(), first.paths()));
    assert_eq!(std::fs::metadata(&entries[0]).unwrap().modified().unwrap(), written, "taken from the cache");
}
