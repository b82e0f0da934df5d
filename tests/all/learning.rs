//! The predictor learns the deployment it runs in: what requests carry,
//! rate limits, and an online model kept across restarts.

use crate::payment::{charges, gate_decisions, gateway, gateway_policy};
use serde_json::json;
use std::path::Path;
use tempfile::tempdir;
use txmirror_runtime::store::AttemptOutcome;
use txmirror_runtime::{FailureKind, Runtime, TxRequest};
use txmirror_tests::{Behaviour, TestServer, guests, load, models, policy, runtime};

fn charge_in(currency: &str, order: &str) -> TxRequest {
    let input = json!({ "order_id": order, "amount_cents": 1250, "currency": currency });
    TxRequest { path: Some("charge".into()), input: input.to_string().into_bytes(), ..Default::default() }
}

/// The gateways' policy with the charge's currency declared as an input feature.
fn by_currency(primary: &TestServer, backup: &TestServer) -> String {
    format!(
        "{}\n[[prediction.inputs]]\nname = \"currency\"\npointer = \"/currency\"\nkind = \"category\"\n",
        gateway_policy(primary, backup)
    )
}

fn euro_charges(server: &TestServer) -> usize {
    charges(server).iter().filter(|r| String::from_utf8_lossy(&r.body).contains(r#""currency":"EUR""#)).count()
}

/// A gateway that declines every euro charge and serves dollar ones. With
/// the currency declared as an input feature, the gate learns it per
/// currency: the next euro charge is diverted before it is sent, the next
/// dollar charge goes to the same gateway, although the gateway as a whole
/// fails half its charges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_failing_one_currency_is_avoided_for_that_currency_only() {
    let dir = tempdir().unwrap();
    let primary = TestServer::start(gateway()).await;
    let backup = TestServer::start(gateway()).await;
    primary.set_behaviour(Behaviour { failing_bodies: Some((r#""currency":"EUR""#.into(), 502)), ..gateway() });
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::PAYMENT).await;
    let policy = policy(&by_currency(&primary, &backup));

    // Learning: euro and dollar charges in turn, until the gateway has
    // answered both currencies often enough for each to speak (at first the
    // gateway as a whole looks failing and holds both back but for probes).
    // Every charge ends committed, the euro ones on the backup.
    let charges_at = format!("{}/charges", primary.authority());
    let answered = |currency: &str| {
        let learnt = runtime.learnt();
        let endpoint = learnt.endpoints.into_iter().find(|e| e.endpoint.ends_with(&charges_at));
        let condition = format!("currency={currency}");
        endpoint.and_then(|e| e.conditions.into_iter().find(|c| c.condition == condition)).map_or(0, |c| c.answers)
    };
    let mut rounds = 0;
    while answered("EUR") < 3 || answered("USD") < 3 {
        assert!(
            rounds < 40,
            "in 40 rounds the gateway answered EUR {} and USD {} times",
            answered("EUR"),
            answered("USD")
        );
        for currency in ["EUR", "USD"] {
            let report = runtime.execute(&module, &policy, charge_in(currency, &format!("{currency}-{rounds}"))).await;
            assert!(report.unwrap().failure.is_none());
        }
        rounds += 1;
    }
    let declined = euro_charges(&primary);

    let euro = runtime.execute(&module, &policy, charge_in("EUR", "EUR-next")).await.unwrap();
    assert_eq!(euro.path, "charge-backup", "{euro:#?}");
    assert!(
        matches!(&euro.attempts[0].attempt.outcome, AttemptOutcome::Failed { kind: FailureKind::Diverted, .. }),
        "{:?}",
        euro.attempts[0].attempt.outcome
    );
    assert_eq!(euro_charges(&primary), declined, "the next euro charge never reached the declining gateway");

    let dollars_before = charges(&primary).len();
    let dollar = runtime.execute(&module, &policy, charge_in("USD", "USD-next")).await.unwrap();
    assert_eq!(dollar.path, "charge", "{dollar:#?}");
    assert_eq!(gate_decisions(&dollar.attempts[0].primary), ["unsafe call: pass", "commit: pass"]);
    assert_eq!(charges(&primary).len(), dollars_before + 1);

    // What was learnt, per condition, is there for an operator to read.
    let learnt = runtime.learnt();
    let charges_endpoint = learnt.endpoints.iter().find(|e| e.endpoint.ends_with(&charges_at)).unwrap();
    let by = |condition: &str| charges_endpoint.conditions.iter().find(|c| c.condition == condition).unwrap();
    assert!(by("currency=EUR").error_rate > 0.9 && by("currency=USD").error_rate < 0.1, "{charges_endpoint:?}");
}

/// The same gateway declining euro charges, and a backup that is down.
/// Once the backup has failed more often than a euro charge is predicted
/// to, the gate stops diverting euro charges into it: the diversion could
/// not succeed, and would take away the primary's own chance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_that_is_down_is_not_diverted_to() {
    let dir = tempdir().unwrap();
    let primary = TestServer::start(gateway()).await;
    let backup = TestServer::start(Behaviour { status: 503, ..gateway() }).await;
    primary.set_behaviour(Behaviour { failing_bodies: Some((r#""currency":"EUR""#.into(), 502)), ..gateway() });
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::PAYMENT).await;
    let policy = policy(&by_currency(&primary, &backup));
    // Euro charges fail on both paths; their attempts on the backup teach
    // how often it fails.
    for round in 0..6 {
        runtime.execute(&module, &policy, charge_in("EUR", &format!("EUR-{round}"))).await.unwrap();
    }
    let tried_first = euro_charges(&primary);
    let mut diverted = 0;
    for round in 0..4 {
        let report = runtime.execute(&module, &policy, charge_in("EUR", &format!("EUR-next-{round}"))).await.unwrap();
        let first = &report.attempts[0];
        if matches!(&first.attempt.outcome, AttemptOutcome::Failed { kind: FailureKind::Diverted, .. }) {
            diverted += 1;
        }
    }
    assert!(diverted <= 1, "{diverted} of 4 diverted into a backup that fails every time (one may go as a probe)");
    assert!(euro_charges(&primary) >= tried_first + 3, "the primary was tried first");
    let learnt = runtime.learnt();
    let backup_path = learnt.paths.iter().find(|p| p.path == "charge-backup").unwrap();
    assert!(backup_path.failure_rate > 0.9, "{backup_path:?}");
}

/// A gateway that takes two charges a second and answers the third with 429
/// and `Retry-After: 1`. Once it has refused one, the gate holds the next
/// charge until the window frees instead of sending it to be refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_gateway_is_waited_for_not_hammered() {
    let dir = tempdir().unwrap();
    let primary = TestServer::start(Behaviour { rate_limit: Some(2), ..gateway() }).await;
    let backup = TestServer::start(gateway()).await;
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::PAYMENT).await;
    let text = gateway_policy(&primary, &backup)
        .replace("alternative_paths", "retry = { max_attempts = 1 }\nalternative_paths");
    let policy = policy(&text);

    // Three charges at once: the third is refused and goes to the backup.
    let mut outcomes = Vec::new();
    for n in 0..3 {
        outcomes.push(runtime.execute(&module, &policy, charge_in("EUR", &format!("burst-{n}"))).await.unwrap());
    }
    assert!(outcomes.iter().all(|report| report.failure.is_none()));
    let on_primary = outcomes.iter().filter(|report| report.path == "charge").count();
    assert_eq!(on_primary, 2, "the limit is two a second");

    // The next charge, at once: the gate waits for the window, then sends.
    let report = runtime.execute(&module, &policy, charge_in("EUR", "after-429")).await.unwrap();
    assert_eq!(report.path, "charge", "{report:#?}");
    assert!(report.failure.is_none(), "{report:#?}");
    assert_eq!(gate_decisions(&report.attempts[0].primary)[0], "unsafe call: delay");
    let prediction = report.attempts[0].gate_prediction.as_ref().unwrap();
    assert!(prediction.reasons.iter().any(|r| r.rule == "rate_limit"), "{prediction:?}");
    assert!(prediction.features.rate_limit_wait_ms > 0.0 && prediction.features.rate_limited_share > 0.0);
    outcomes.push(report);
    assert_eq!(refused(&outcomes), 1, "one charge was refused, before the limit was known");

    // A policy that would rather go elsewhere than wait says so in its rule.
    let diverting = format!(
        "{text}\n[[prediction.rules]]\nname = \"rate_limit\"\nwhen = \"rate_limit_load > 1\"\nweight = 0.5\n\
         reason = \"the gateway is at its limit\"\naction = \"divert\"\n"
    );
    let diverting = txmirror_tests::policy(&diverting);
    let sent = charges(&primary).len();
    let mut diverted = 0;
    for n in 0..3 {
        let report = runtime.execute(&module, &diverting, charge_in("EUR", &format!("d-{n}"))).await.unwrap();
        assert!(report.failure.is_none(), "{report:#?}");
        diverted += usize::from(report.path == "charge-backup");
        outcomes.push(report);
    }
    assert_eq!(refused(&outcomes), 1, "none refused since");
    assert!(diverted >= 1, "at its limit, charges went to the backup instead");
    assert!(charges(&primary).len() - sent <= 2, "no more than the limit was sent to the primary");
}

/// Attempts whose charge the gateway refused with 429.
fn refused(reports: &[txmirror_runtime::TxReport]) -> usize {
    let refused = |outcome: &AttemptOutcome| matches!(outcome, AttemptOutcome::Failed { message, .. } if message.contains("answered 429"));
    reports.iter().flat_map(|report| &report.attempts).filter(|a| refused(&a.attempt.outcome)).count()
}

/// A runtime on `dir` that scores with the placeholder model.
fn with_placeholder_model(dir: &Path) -> Runtime {
    let mut config = txmirror_tests::config(dir);
    config.model = Some(txmirror_runtime::ModelConfig::new(Path::new(models::PLACEHOLDER)));
    Runtime::open(config).unwrap()
}

/// The online model learns after each attempt, is saved in the store, and
/// a runtime opened on the store again goes on from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_online_model_is_saved_and_restored_with_the_store() {
    let dir = tempdir().unwrap();
    let open = || with_placeholder_model(dir.path());
    let runtime = open();
    assert!(runtime.saved_learnt().unwrap().is_none(), "a new store has learnt nothing");
    let module = load(&runtime, guests::BANK_TRANSFER).await;
    let policy = policy("[capabilities]\nkv = { accounts = \"read-write\" }\nstreams = [\"transfers\"]\n");
    for n in 0..25 {
        let input = json!({ "account": format!("a{n}"), "amount": 5 }).to_string().into_bytes();
        let request = TxRequest { path: Some("deposit".into()), input, ..Default::default() };
        let report = runtime.execute(&module, &policy, request).await.unwrap();
        let prediction = report.attempts[0].prediction.as_ref().unwrap();
        assert!(prediction.learnt_probability.is_some(), "{prediction:?}");
    }
    let live = runtime.learnt().model.expect("learning online");
    assert_eq!(live.updates, 25, "every deposit is an honest label");
    let saved = runtime.saved_learnt().unwrap().and_then(|learnt| learnt.model).expect("saved every 20");
    assert_eq!(saved.updates, 20);
    assert!(runtime.learnt().paths.iter().any(|p| p.path == "deposit" && p.failure_rate == 0.0));
    drop(runtime);

    let reopened = open();
    let restored = reopened.learnt().model.expect("restored");
    assert_eq!((restored.updates, &restored.weights), (20, &saved.weights));
}

/// What the store holds of what was learnt, damaged, does not stop a
/// runtime: it starts learning afresh, and reading the saved state says
/// which record is damaged and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_saved_model_starts_learning_afresh() {
    use txmirror_runtime::store::{RedbStore, StateStore, StoreError};
    let dir = tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
    store.save_learnt("online-model", b"{\"model\": not json").unwrap();
    let mut config = txmirror_tests::config(dir.path());
    config.model = Some(txmirror_runtime::ModelConfig::new(Path::new(models::PLACEHOLDER)));
    let runtime = Runtime::with_store(config, std::sync::Arc::new(store)).unwrap();
    assert_eq!(runtime.learnt().model, None, "nothing restored");
    let error = runtime.saved_learnt().unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    assert!(error.to_string().contains("learnt `online-model`"), "{error}");

    // It learns again from the next attempt.
    let module = load(&runtime, guests::BANK_TRANSFER).await;
    let policy = policy("[capabilities]\nkv = { accounts = \"read-write\" }\nstreams = [\"transfers\"]\n");
    let input = json!({ "account": "a", "amount": 5 }).to_string().into_bytes();
    let request = TxRequest { path: Some("deposit".into()), input, ..Default::default() };
    runtime.execute(&module, &policy, request).await.unwrap();
    assert_eq!(runtime.learnt().model.map(|m| m.updates), Some(1));
}

/// A model whose lone calls prove wrong stops acting on them. Here a saved
/// online model is made to flag every deposit, with `fail_fast` as the
/// model's action and no rule agreeing: at first the gate fails deposits
/// fast, but as often as the model's record does not earn acting, a
/// deposit goes as a trial; the trials commit, the record says the model's
/// calls are wrong, and deposits go through. (Before the model had a
/// standing, every deposit failed fast, and no outcome ever told it
/// otherwise: this test failed there.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_whose_lone_calls_prove_wrong_stops_acting_on_them() {
    use txmirror_runtime::predict::Learnt;
    use txmirror_runtime::store::{RedbStore, StateStore, TransactionOutcome};
    let dir = tempdir().unwrap();
    let open = || with_placeholder_model(dir.path());
    let policy = policy(
        "[capabilities]\nkv = { accounts = \"read-write\" }\nstreams = [\"transfers\"]\n[prediction]\nmodel_action = \"fail_fast\"\n",
    );
    // Named, so that the gate's draws (taken from the transaction id) are
    // the same at every run: the test is deterministic.
    let deposit = |n: usize| {
        let input = json!({ "account": format!("a{n}"), "amount": 5 }).to_string().into_bytes();
        let transaction_id = Some(format!("deposit-{n}"));
        TxRequest { transaction_id, path: Some("deposit".into()), input, ..Default::default() }
    };
    // One deposit starts the online model; then its bias is made to say
    // that every call fails, and it is saved so.
    let runtime = open();
    let module = load(&runtime, guests::BANK_TRANSFER).await;
    runtime.execute(&module, &policy, deposit(0)).await.unwrap();
    let mut model = runtime.learnt().model.expect("learning online");
    assert_eq!(model.names[0], "bias");
    model.weights[0] = 8.0;
    drop(runtime);
    let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
    let learnt = Learnt { model: Some(model), endpoints: Vec::new(), paths: Vec::new() };
    store.save_learnt("online-model", &serde_json::to_vec(&learnt).unwrap()).unwrap();
    drop(store);

    let runtime = open();
    let module = load(&runtime, guests::BANK_TRANSFER).await;
    let mut committed = Vec::new();
    let mut verdicts = Vec::new();
    for n in 1..=80 {
        let report = runtime.execute(&module, &policy, deposit(n)).await.unwrap();
        committed.push(matches!(report.outcome, TransactionOutcome::Committed { .. }));
        verdicts.extend(report.attempts.iter().flat_map(|a| gate_decisions(&a.primary)));
    }
    assert!(committed[..10].iter().any(|c| !c), "at first the gate acts on the model's calls: {verdicts:?}");
    assert!(verdicts.iter().any(|v| v == "commit: fail_fast"), "{verdicts:?}");
    assert!(verdicts.iter().any(|v| v == "commit: trial:fail_fast"), "{verdicts:?}");
    assert!(committed[60..].iter().all(|c| *c), "in the end, deposits go through: {committed:?}");
    let standing = runtime.learnt().model.expect("learning online").standing;
    // Each trial is also an honest label the online model learns from, so
    // the model itself stops flagging deposits after a few of them.
    assert!(standing.acted >= 1 && standing.tried >= 5, "{standing:?}");
    assert!(!standing.trials.is_empty() && standing.failures() == 0, "every trial committed: {standing:?}");
}
