//! The `txmirror` binary: outputs, errors and exit codes.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::path::Path;
use std::process::{Command, Output};
use txmirror_tests::{guests, models};

fn txmirror(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_txmirror")).arg("--data-dir").arg(data).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn bank_policy(dir: &Path) -> String {
    let file = dir.join("bank.toml");
    std::fs::write(&file, "[capabilities]\nkv = { accounts = \"read-write\" }\nstreams = [\"transfers\"]\n").unwrap();
    file.display().to_string()
}

/// `txmirror run` of a bank-transfer path, with extra arguments.
fn run_bank(data: &Path, policy: &str, path: &str, input: &str, extra: &[&str]) -> Output {
    let mut args = vec!["run", guests::BANK_TRANSFER, "--policy", policy, "--path", path, "--input", input];
    args.extend_from_slice(extra);
    txmirror(data, &args)
}

#[test]
fn run_commits_and_prints_both_traces() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let policy = bank_policy(dir.path());
    let out = run_bank(&data, &policy, "deposit", r#"{"account":"a","amount":5}"#, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("COMMITTED at version 1"), "{stdout}");
    assert!(stdout.contains("primary trace") && stdout.contains("mirror trace"), "{stdout}");
    assert!(stdout.contains("withheld (mirror overlay)"), "{stdout}");

    // Machine output, and the durable record.
    let out = run_bank(&data, &policy, "balance", r#"{"account":"a"}"#, &["--json", "--transaction-id", "tx-42"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["transaction_id"], "tx-42");
    assert_eq!(report["outcome"]["status"], "committed");
    let out = txmirror(&data, &["tx", "show", "tx-42", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("\"path\": \"balance\""));
    // The whole story, after the fact.
    let story = text(&txmirror(&data, &["tx", "show", "tx-42"]).stdout);
    for part in ["COMMITTED", "attempt 1 on `balance`", "primary trace", "mirror trace", "prediction by rules alone"] {
        assert!(story.contains(part), "{part} missing from:\n{story}");
    }

    // The same idempotency key twice: the second run changes nothing.
    let keyed =
        || run_bank(&data, &policy, "deposit", r#"{"account":"a","amount":5}"#, &["--idempotency-key", "dep-1"]);
    let (first, second) = (keyed(), keyed());
    assert_eq!((first.status.code(), second.status.code()), (Some(0), Some(0)));
    assert!(text(&second.stdout).contains("nothing ran"), "{}", text(&second.stdout));
    let out = run_bank(&data, &policy, "balance", r#"{"account":"a"}"#, &[]);
    assert!(text(&out.stdout).contains(r#""balance":10"#), "5 + 5, not 5 + 5 + 5: {}", text(&out.stdout));
}

/// Bug: `run … --input '{"account":"bob",…}' --idempotency-key k1`, after k1
/// had deposited to alice, exited 0 and printed alice's deposit, so the
/// client believed bob had been credited.
#[test]
fn a_key_reused_for_another_input_exits_4_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let policy = bank_policy(dir.path());
    let key = ["--idempotency-key", "k1"];
    let alice = run_bank(&data, &policy, "deposit", r#"{"account":"alice","amount":5}"#, &key);
    assert_eq!(alice.status.code(), Some(0), "{}", text(&alice.stderr));
    let bob = run_bank(&data, &policy, "deposit", r#"{"account":"bob","amount":5}"#, &key);
    assert_eq!(bob.status.code(), Some(4), "{}", text(&bob.stdout));
    assert!(text(&bob.stderr).contains("idempotency key `k1` was used for another request"), "{}", text(&bob.stderr));
    let out = run_bank(&data, &policy, "balance", r#"{"account":"bob"}"#, &[]);
    assert_eq!(out.status.code(), Some(1), "bob has no account: {}", text(&out.stdout));
}

#[test]
fn exit_codes_tell_what_went_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let policy = bank_policy(dir.path());

    // 1: the transaction ran and failed.
    let out = run_bank(&data, &policy, "transfer", r#"{"from":"x","to":"y","amount":1}"#, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("FAILED") && text(&out.stdout).contains("no account `x`"));

    // 2: the command line is wrong.
    assert_eq!(txmirror(&data, &["run"]).status.code(), Some(2));

    // 3: the module is refused.
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"garbage").unwrap();
    let out = txmirror(&data, &["run", garbage.to_str().unwrap(), "--policy", &policy]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("not a WebAssembly file"), "{}", text(&out.stderr));

    // 4: the policy is refused, naming the file, the key and the reason.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[resource_requirements]\nfuel = -1\n").unwrap();
    let out = txmirror(&data, &["run", guests::BANK_TRANSFER, "--policy", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("bad.toml") && stderr.contains("resource_requirements.fuel"), "{stderr}");

    // 4: an unknown path.
    let out = txmirror(&data, &["run", guests::BANK_TRANSFER, "--policy", &policy, "--path", "steal"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(text(&out.stderr).contains("no path `steal`"), "{}", text(&out.stderr));
}

#[test]
fn dry_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let policy = bank_policy(dir.path());
    let out = run_bank(&data, &policy, "deposit", r#"{"account":"a","amount":5}"#, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("nothing was committed"));
    let out = run_bank(&data, &policy, "balance", r#"{"account":"a"}"#, &[]);
    assert_eq!(out.status.code(), Some(1), "the dry run opened no account");
}

#[test]
fn dead_letters_can_be_listed_shown_replayed_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Fuel so short that every attempt traps: the transaction is dead-lettered.
    let starved = dir.path().join("starved.toml");
    std::fs::write(
        &starved,
        "[resource_requirements]\nfuel = 1000\n[capabilities]\nkv = { accounts = \"read-write\" }\nstreams = [\"transfers\"]\n",
    )
    .unwrap();
    let policy = bank_policy(dir.path());
    let deposit = |policy: &str, id: &str| {
        run_bank(&data, policy, "deposit", r#"{"account":"a","amount":5}"#, &["--transaction-id", id])
    };
    assert_eq!(deposit(starved.to_str().unwrap(), "dead-1").status.code(), Some(1));
    assert_eq!(deposit(starved.to_str().unwrap(), "dead-2").status.code(), Some(1));

    let list = text(&txmirror(&data, &["dlq", "list"]).stdout);
    assert!(list.contains("dead-1") && list.contains("dead-2") && list.contains("fuel_exhausted"), "{list}");
    let show = txmirror(&data, &["dlq", "show", "dead-1"]);
    let letter: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(letter["failure"]["kind"], "fuel_exhausted");

    // Replayed under a policy with enough fuel, it commits and leaves the queue.
    let out = txmirror(&data, &["dlq", "replay", "dead-1", guests::BANK_TRANSFER, "--policy", &policy]);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(txmirror(&data, &["dlq", "drop", "dead-2"]).status.code(), Some(0));
    assert_eq!(text(&txmirror(&data, &["dlq", "list"]).stdout).trim(), "");
    let out = txmirror(&data, &["dlq", "show", "dead-1"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(text(&out.stderr).contains("no dead letter `dead-1`"));

    // In bulk, by filter: two deposits and a transfer dead-lettered; the
    // deposits replayed, the transfer dropped.
    assert_eq!(deposit(starved.to_str().unwrap(), "dead-3").status.code(), Some(1));
    assert_eq!(deposit(starved.to_str().unwrap(), "dead-4").status.code(), Some(1));
    let transfer = ["--transaction-id", "dead-5"];
    let out = run_bank(&data, starved.to_str().unwrap(), "transfer", r#"{"from":"a","to":"b","amount":1}"#, &transfer);
    assert_eq!(out.status.code(), Some(1));
    let list = text(&txmirror(&data, &["dlq", "list", "--path", "transfer", "--kind", "fuel_exhausted"]).stdout);
    assert!(list.starts_with("dead-5  path transfer") && list.lines().count() == 1, "{list}");
    let out = txmirror(&data, &["dlq", "replay-all", "--path", "deposit", guests::BANK_TRANSFER, "--policy", &policy]);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("2 selected, 2 committed, 0 failed"), "{}", text(&out.stdout));
    let out = txmirror(&data, &["dlq", "drop-all"]);
    assert_eq!(out.status.code(), Some(2), "no filter, no --all");
    let out = txmirror(&data, &["dlq", "drop-all", "--kind", "fuel_exhausted"]);
    assert_eq!(text(&out.stdout), "dropped dead-5\n1 dropped\n");
    assert_eq!(text(&txmirror(&data, &["dlq", "list"]).stdout).trim(), "");
    let out = run_bank(&data, &policy, "balance", r#"{"account":"a"}"#, &[]);
    assert!(text(&out.stdout).contains(r#""balance":15"#), "three deposits of 5: {}", text(&out.stdout));
}

#[test]
fn a_model_scores_beside_the_rules_and_a_bad_one_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let policy = bank_policy(dir.path());
    let input = r#"{"account":"a","amount":5}"#;
    let out = run_bank(&data, &policy, "deposit", input, &["--model", models::PLACEHOLDER]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("prediction by rules + model placeholder 1 (learning online): failure probability"),
        "{stdout}"
    );
    assert!(stdout.contains("(rules 0.00, model 0.") && stdout.contains(", learnt 0."), "{stdout}");

    let out = run_bank(&data, &policy, "deposit", input, &["--model", models::SCHEMA_PREVIOUS]);
    assert_eq!(out.status.code(), Some(5));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("the prediction model was refused"), "{stderr}");
    assert!(stderr.contains("reads feature schema version 2, but this runtime computes version 3"), "{stderr}");

    // A missing ONNX Runtime library: a clear error, not a panic.
    let out = Command::new(env!("CARGO_BIN_EXE_txmirror"))
        .env("ORT_DYLIB_PATH", dir.path().join("no-such-libonnxruntime.so"))
        .args(["--data-dir", data.to_str().unwrap(), "--model", models::PLACEHOLDER])
        .args(["run", guests::BANK_TRANSFER, "--policy", &policy, "--path", "deposit", "--input", input])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("cannot load the ONNX Runtime library") && stderr.contains("does not exist"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn export_dataset_writes_one_labelled_example_per_scored_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let policy = bank_policy(dir.path());
    for _ in 0..2 {
        let out = run_bank(&data, &policy, "deposit", r#"{"account":"a","amount":5}"#, &[]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    let out = run_bank(&data, &policy, "transfer", r#"{"from":"a","to":"b","amount":500}"#, &[]);
    assert_eq!(out.status.code(), Some(1), "an overdraft is rejected");

    let file = dir.path().join("dataset.csv");
    let out = txmirror(&data, &["model", "export-dataset", "--out", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("wrote 3 examples"), "{}", text(&out.stderr));
    let examples =
        txmirror_runtime::dataset::read_csv(std::io::BufReader::new(std::fs::File::open(&file).unwrap())).unwrap();
    let mut labels: Vec<(String, Option<bool>)> = examples.iter().map(|e| (e.path.clone(), e.failed)).collect();
    labels.sort();
    assert_eq!(
        labels,
        [("deposit".into(), Some(false)), ("deposit".into(), Some(false)), ("transfer".into(), Some(true))]
    );
    assert!(examples.iter().all(|e| e.action == "pass" && !e.explored), "{examples:?}");
}

#[test]
fn a_seeded_workload_in_observe_mode_yields_an_honestly_labelled_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let modules = Path::new(guests::PAYMENT).parent().unwrap().to_str().unwrap().to_string();
    let report = dir.path().join("report.json");
    let out = txmirror(
        &data,
        &["workload", "--seed", "3", "--size", "40", "--mode", "observe", "--modules", &modules, "--report"],
    );
    assert_eq!(out.status.code(), Some(2), "--report needs a value");
    let out = txmirror(
        &data,
        &[
            "workload",
            "--seed",
            "3",
            "--size",
            "40",
            "--mode",
            "observe",
            "--modules",
            &modules,
            "--report",
            report.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("workload Faults seed 3 mode Observe, breakers: 40 transactions"),
        "{}",
        text(&out.stdout)
    );
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(summary["transactions"], 40);
    assert_eq!(summary["false_diversions"], 0, "observing never diverts");
    let outcomes = summary["outcomes"].as_array().unwrap();
    assert_eq!(outcomes.len(), 40);
    assert!(outcomes.iter().all(|o| o["explored"] == true), "observe mode explores every attempt");

    let file = dir.path().join("dataset.csv");
    let out = txmirror(&data, &["model", "export-dataset", "--out", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let examples =
        txmirror_runtime::dataset::read_csv(std::io::BufReader::new(std::fs::File::open(&file).unwrap())).unwrap();
    let workload: Vec<_> = examples.iter().filter(|e| e.transaction_id.starts_with("w3-")).collect();
    assert!(workload.len() >= 40, "at least one example per transaction: {}", workload.len());
    assert!(workload.iter().all(|e| e.explored && e.failed.is_some()), "observed attempts are all labelled");
}

/// With path choice, a charge names no path and the runtime orders the
/// paths the policy describes; the report counts the gateways' fees.
#[test]
fn a_workload_with_path_choice_orders_each_charges_paths_and_counts_fees() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let modules = Path::new(guests::PAYMENT).parent().unwrap().to_str().unwrap().to_string();
    let report = dir.path().join("report.json");
    let mut args = vec!["workload", "--seed", "5", "--size", "40", "--mode", "act", "--modules", &modules];
    args.extend(["--breakers", "false", "--path-choice", "--report", report.to_str().unwrap()]);
    let out = txmirror(&data, &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("mode Act, path choice: 40 transactions"), "{}", text(&out.stdout));
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!((summary["breakers"].as_bool(), summary["path_choice"].as_bool()), (Some(false), Some(true)));
    let sent = summary["unsafe_calls_sent"].as_f64().unwrap();
    let fees = summary["cost"].as_f64().unwrap();
    assert!(sent > 0.0 && fees >= 0.30 * sent - 1e-9 && fees <= 0.45 * sent + 1e-9, "{fees} for {sent} charges");
    let charge = summary["outcomes"].as_array().unwrap().iter().find(|o| o["kind"] == "charge").unwrap();
    let out = txmirror(&data, &["tx", "show", charge["id"].as_str().unwrap()]);
    let story = text(&out.stdout);
    assert!(story.contains("charge-backup"), "the order names both paths:\n{story}");
    let out = txmirror(&data, &["workload", "--breakers", "maybe", "--modules", &modules]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

/// The shop shape, which nothing is trained on, acted on: its gate is
/// judged after the warm-up, and what was sent for nothing is counted.
#[test]
fn the_shop_shape_is_judged_after_its_warm_up() {
    let dir = tempfile::tempdir().unwrap();
    let modules = Path::new(guests::PAYMENT).parent().unwrap().to_str().unwrap().to_string();
    let report = dir.path().join("report.json");
    let args = ["workload", "--shape", "shop", "--seed", "5", "--size", "160", "--mode", "act", "--modules", &modules];
    let out = txmirror(&dir.path().join("data"), &[&args[..], &["--report", report.to_str().unwrap()]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("workload Shop seed 5 mode Act: 160 transactions"), "{}", text(&out.stdout));
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(summary["shape"], "shop");
    assert_eq!(summary["gate_judged"], 60, "every charge after the warm-up of 100 met the gate");
    let wasted = summary["wasted_unsafe_calls"].as_u64().unwrap();
    assert!(wasted <= summary["unsafe_calls_sent"].as_u64().unwrap(), "{summary}");
    let outcomes = summary["outcomes"].as_array().unwrap();
    assert!(outcomes.iter().all(|o| o["kind"] == "charge"), "the shop only charges");
}

#[test]
fn model_evaluate_reproduces_the_model_cards_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let out = txmirror(
        &dir.path().join("data"),
        &["--model", models::PIPELINE, "model", "evaluate", "--dataset", models::PIPELINE_HOLDOUT, "--json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let evaluated: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{}.json", models::PIPELINE_CARD)).unwrap()).unwrap();
    assert_eq!(evaluated["threshold"].as_f64(), card["threshold"].as_f64(), "the threshold travels in the model");
    for side in ["holdout", "rules_alone"] {
        assert_eq!(evaluated[side]["rows"], card["holdout"]["rows"]);
        for metric in ["auc", "precision", "recall", "false_positive_rate", "calibration_error"] {
            let (ours, theirs) = (evaluated[side][metric].as_f64().unwrap(), card[side][metric].as_f64().unwrap());
            assert!((ours - theirs).abs() < 1e-4, "{side}.{metric}: txmirror {ours}, scikit-learn {theirs}");
        }
    }
    let out = txmirror(&dir.path().join("data"), &["model", "evaluate", "--dataset", models::PIPELINE_HOLDOUT]);
    assert_eq!(out.status.code(), Some(2), "no model given");
    assert!(text(&out.stderr).contains("needs --model"), "{}", text(&out.stderr));
}

#[test]
fn a_workload_refuses_bad_options_and_missing_modules_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = txmirror(&data, &["workload", "--size", "0"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(text(&out.stderr).contains("--size and --concurrency must be at least 1"), "{}", text(&out.stderr));
    let out = txmirror(&data, &["workload", "--size", "3", "--modules", dir.path().to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("cannot read") && stderr.contains("payment.wasm"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let out = txmirror(&data, &["workload", "--mode", "sometimes"]);
    assert_eq!(out.status.code(), Some(2), "clap refuses an unknown mode");
}

/// The first Ctrl-C (a real `SIGINT`) given to `txmirror run` while its
/// charge is in flight cancels the transaction: the charge is waited for,
/// nothing commits, and the compensation refunds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_a_run_and_refunds_what_it_had_sent() {
    use txmirror_tests::{Behaviour, TestServer};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let gateway = TestServer::start(Behaviour {
        status: 201,
        body: r#"{"charge_id": "ch_1"}"#.into(),
        delay: std::time::Duration::from_millis(1500),
        ..Default::default()
    })
    .await;
    let policy = dir.path().join("payment.toml");
    let grants = txmirror_tests::payment_grants(&gateway.url(), &gateway.url());
    std::fs::write(&policy, format!("compensation_path = \"refund\"\n{grants}")).unwrap();
    let input = r#"{"order_id":"o-1","amount_cents":100,"currency":"EUR"}"#;
    let child = Command::new(env!("CARGO_BIN_EXE_txmirror"))
        .arg("--data-dir")
        .arg(&data)
        .args(["run", guests::PAYMENT, "--policy", policy.to_str().unwrap(), "--input", input])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let charged = || gateway.received().iter().any(|r| r.method == "POST" && r.uri == "/charges");
    for _ in 0..600 {
        if charged() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(charged(), "the charge was never sent: {:?}", gateway.received());
    let interrupted = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(interrupted.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("cancelling the transaction"), "{stderr}");
    assert!(stdout.contains("cancelled_by_caller") && stdout.contains(".compensation (committed)"), "{stdout}");
    let posts = |uri: &str| gateway.received().iter().filter(|r| r.method == "POST" && r.uri == uri).count();
    assert_eq!((posts("/charges"), posts("/refunds")), (1, 1), "{:?}", gateway.received());
}
