//! A/B splits (`[split]`): a share of callers tries the paths in its arm's
//! order, each caller on one arm; the report compares the arms.

use crate::payment::{gateway, gateway_policy};
use serde_json::json;
use tempfile::tempdir;
use txmirror_runtime::TxRequest;
use txmirror_tests::{Behaviour, TestServer, guests, load, policy, runtime};

fn charge(order: usize, caller: &str) -> TxRequest {
    let input = json!({ "order_id": format!("o-{order}"), "amount_cents": 500, "currency": "EUR" });
    TxRequest { input: input.to_string().into_bytes(), caller: Some(caller.to_string()), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_caller_stays_on_its_arm_and_the_report_compares_the_arms() {
    let dir = tempdir().unwrap();
    // The primary gateway is down: the control (primary first, as the
    // policy's reliability prior prefers) pays a failed attempt that the
    // arm trying the backup first does not.
    let primary = TestServer::start(Behaviour { status: 503, body: "down".into(), ..Default::default() }).await;
    let backup = TestServer::start(gateway()).await;
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::PAYMENT).await;
    let text = format!(
        "{}\n[paths.charge]\nreliability = 0.99\ncost = 0.10\n[paths.charge-backup]\nreliability = 0.90\ncost = 0.30\n\
         [split]\nsticky = \"caller\"\n[[split.arms]]\nname = \"backup-first\"\nshare = 0.5\n\
         order = [\"charge-backup\", \"charge\"]\n",
        gateway_policy(&primary, &backup)
    );
    let policy = policy(&text);
    let callers: Vec<String> = (0..12).map(|n| format!("caller-{n}")).collect();
    let mut arms = std::collections::BTreeMap::new();
    let mut order = 0;
    for caller in &callers {
        for _ in 0..3 {
            order += 1;
            let report = runtime.execute(&module, &policy, charge(order, caller)).await.unwrap();
            assert!(report.failure.is_none(), "{report:#?}");
            let first = &report.attempts[0];
            let arm = first.split_arm.clone().expect("every transaction that names no path has an arm");
            let expected_first = if arm == "backup-first" { "charge-backup" } else { "charge" };
            assert_eq!(first.attempt.path, expected_first, "{arm}");
            let previous = arms.insert(caller.clone(), arm.clone());
            assert!(previous.is_none_or(|previous| previous == arm), "{caller} moved between arms");
        }
    }
    let on_arm = arms.values().filter(|arm| *arm == "backup-first").count();
    assert!(on_arm > 0 && on_arm < callers.len(), "{on_arm} of 12 callers on a 50% arm");

    // A caller that names its path is in no arm.
    let named = TxRequest { path: Some("charge-backup".into()), ..charge(99, "caller-0") };
    let named = runtime.execute(&module, &policy, named).await.unwrap();
    assert_eq!(named.attempts[0].split_arm, None);

    let report = runtime.split_report(module.hash(), &policy, 1_000).unwrap();
    assert_eq!(report.scanned, 37);
    let names: Vec<&str> = report.arms.iter().map(|arm| arm.arm.as_str()).collect();
    assert_eq!(names, ["control", "backup-first"]);
    let (control, arm) = (&report.arms[0], &report.arms[1]);
    assert_eq!(control.transactions + arm.transactions, 36);
    assert_eq!(arm.transactions, 3 * on_arm as u64);
    for summary in [control, arm] {
        assert_eq!(summary.committed, summary.transactions);
        let rate = summary.success_rate;
        assert!(rate.value == 1.0 && rate.low < 1.0 && rate.high == 1.0, "{rate:?}");
        assert!(summary.latency_ms.low <= summary.latency_ms.value && summary.latency_p50_ms > 0.0);
    }
    assert!((arm.attempts_per_transaction - 1.0).abs() < 1e-9, "{arm:?}");
    assert!(control.attempts_per_transaction >= 2.0, "{control:?}");
    let (control_cost, arm_cost) = (control.cost.unwrap().value, arm.cost.unwrap().value);
    assert!((arm_cost - 0.30).abs() < 1e-9, "{arm_cost}");
    assert!(control_cost >= 0.40 - 1e-9, "a failed attempt on the primary and one on the backup: {control_cost}");
}

#[test]
fn splits_that_cannot_hold_are_refused_by_name() {
    let base = "[capabilities]\n";
    let cases = [
        ("[[split.arms]]\nname = \"control\"\nshare = 0.5\norder = [\"a\"]\n", "split.arms[0].name"),
        ("[[split.arms]]\nname = \"x\"\nshare = 0\norder = [\"a\"]\n", "split.arms[0].share"),
        ("[[split.arms]]\nname = \"x\"\nshare = 0.5\norder = []\n", "split.arms[0].order"),
        (
            "[[split.arms]]\nname = \"x\"\nshare = 0.6\norder = [\"a\"]\n[[split.arms]]\nname = \"y\"\nshare = 0.6\norder = [\"a\"]\n",
            "split.arms",
        ),
        ("[split]\nsticky = \"weather\"\n", "sticky"),
    ];
    for (text, key) in cases {
        let error = txmirror_runtime::Policy::parse(&format!("{base}{text}"), std::path::Path::new("p.toml"))
            .expect_err(text)
            .to_string();
        assert!(error.contains(key), "{key}: {error}");
    }
    let policy = policy("[[split.arms]]\nname = \"x\"\nshare = 0.5\norder = [\"nowhere\"]\n");
    let error = policy.resolve_paths(&["charge".to_string()]).unwrap_err().to_string();
    assert!(error.contains("split.arms[0].order[0]") && error.contains("nowhere"), "{error}");
}
