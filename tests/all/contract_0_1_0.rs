//! A module built against an older release of the contract (0.1.0, before
//! `context`) loads and runs on this host unchanged.

use tempfile::tempdir;
use txmirror_runtime::TxRequest;
use txmirror_runtime::store::TransactionOutcome;
use txmirror_tests::{guests, load, policy, runtime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_of_the_0_1_0_contract_still_runs() {
    let dir = tempdir().unwrap();
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::CONTRACT_0_1_0).await;
    let policy = policy("[config]\ngreeting = \"hello\"\n");
    let request = TxRequest { path: Some("hello".into()), input: b"{}".to_vec(), ..Default::default() };
    let report = runtime.execute(&module, &policy, request).await.unwrap();
    let TransactionOutcome::Committed { output, .. } = &report.outcome else { panic!("{:?}", report.failure) };
    assert_eq!(output.as_slice(), br#"{"greeting":"hello"}"#);
}
