//! The fault-injection workload (`txmirror workload`): the example modules
//! driven through the runtime against payment gateways on 127.0.0.1 whose
//! health changes in windows (slow, or failing: an outage a circuit breaker
//! should catch), whose quota is spent now and then (429 with a
//! `Retry-After`), with hot keys, invalid orders and orders too big for
//! their fuel.
//!
//! Everything is drawn from the seed, so a seed is a workload. Each planned
//! transaction carries its ground truth, `would_fail`: whether its primary
//! path would fail if nothing were adjusted (a charge while the primary
//! gateway is slow or failing or its quota is spent, an invalid order, an
//! order beyond its fuel).
//! Transfers between hot accounts are contended but carry no ground truth.
//!
//! Shapes: `faults` (the default, above; the shipped model is trained on
//! it; its payment policy opens a gateway's circuit breaker after three
//! failures in a row, for half a second) and `shop`, a shape of another kind that nothing is trained on:
//! charges only, in four currencies, where the primary gateway declines one
//! currency at a time for a while (a regional outage: the health check and
//! the other currencies are fine), takes longer than the timeout on large
//! amounts (a fraud check), and now and then has spent its quota for a
//! second or two (every charge answered 429, with a `Retry-After` that says
//! when the quota is back, in whole seconds as HTTP has it). Its policy
//! declares `currency` and `amount_cents` as input features, as an
//! operator would; it says nothing of the faults. Ground truth: a charge in
//! the declined currency, of a large amount, or sent while the quota is
//! spent would fail unadjusted. A quota is spent in time, not in
//! transactions, so that waiting for it is worth something: whether a
//! charge meets it is known only as the charge is sent, and its ground
//! truth is taken then.
//!
//! Modes: `observe` runs every attempt unadjusted (exploration share 1), so
//! predictions are recorded and nothing acts on them; `act` lets the
//! predictor act, with the given exploration share; `adaptive` is `act` with
//! adaptive mirroring (`[mirror] mode = "adaptive"`: a mirror only where the
//! prior is uncertain); `retry-only` turns the mirror off (the baseline).

mod gateway;

use anyhow::{Context as _, bail};
use gateway::{Gateway, Phase, Traits};
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use txmirror_runtime::store::AttemptOutcome;
use txmirror_runtime::trace::HostCall;
use txmirror_runtime::{Action, FailureKind, GateStage, GateVerdict, Module, Policy, Runtime, TxRequest};

/// How the predictor may act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Mode {
    /// Predictions recorded, no action taken.
    Observe,
    /// The predictor acts, but for the exploration share.
    Act,
    /// As `Act`, with the mirror only where the prior is uncertain.
    Adaptive,
    /// No mirror, no prediction: retries and alternative paths only.
    RetryOnly,
}

/// Which workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Shape {
    /// Gateways slow or failing in windows, hot keys, invalid and oversized orders.
    Faults,
    /// Charges whose failures depend on what they carry, and a rate limit.
    Shop,
}

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) shape: Shape,
    pub(crate) seed: u64,
    pub(crate) size: usize,
    pub(crate) mode: Mode,
    /// Where `payment.wasm`, `bank_transfer.wasm` and `order_import.wasm` are.
    pub(crate) modules: PathBuf,
    pub(crate) concurrency: usize,
    pub(crate) time_limit: Duration,
    pub(crate) exploration_share: f32,
    /// The payment policy opens a gateway's breaker after three failures in a row.
    pub(crate) breakers: bool,
    /// Charges name no path, and the policy describes its paths.
    pub(crate) path_choice: bool,
}

/// What a charge sent through a path's gateway costs (its fee, in any
/// unit): the backup is dearer. The workload's cost is these fees for every
/// charge a gateway received, whatever the policy knows of them.
fn path_cost(path: &str) -> f64 {
    if path == "charge-backup" { 0.45 } else { 0.30 }
}

/// The outbound timeout of the payment policy; slow charges take twice as long.
const OUTBOUND_TIMEOUT_MS: u64 = 300;
const HOT_ACCOUNTS: usize = 4;
/// Shop: charges of at least this many cents are slow at the primary gateway.
const LARGE_AMOUNT: u64 = 200_000;
/// How long the primary gateway's quota stays spent, in milliseconds.
const QUOTA_SPENT_MS: std::ops::Range<u64> = 400..1_200;
/// Shop: the currencies and their shares of the charges.
const CURRENCIES: [(&str, f64); 4] = [("EUR", 0.4), ("USD", 0.3), ("GBP", 0.2), ("JPY", 0.1)];
/// Transactions before the gate's decisions are judged: the predictor
/// learns the deployment meanwhile.
const WARM_UP: usize = 100;
const COLD_ACCOUNTS: usize = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Charge,
    Transfer,
    Order,
}

#[derive(Debug)]
struct Planned {
    /// Its place in the plan, from 0.
    index: usize,
    kind: Kind,
    id: String,
    path: &'static str,
    input: serde_json::Value,
    would_fail: bool,
    /// The failure is certain whatever the runtime does (invalid input):
    /// the right outcome is to fail fast.
    certain: bool,
    primary_phase: Phase,
    backup_phase: Phase,
    /// The primary gateway's quota is spent for this long as it starts.
    spends_quota: Option<Duration>,
}

/// One transaction's result.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Outcome {
    id: String,
    kind: Kind,
    would_fail: bool,
    certain_failure: bool,
    committed: bool,
    failure: Option<String>,
    latency_ms: f64,
    attempts: usize,
    diverted: bool,
    explored: bool,
    /// Attempts that ran with their mirror.
    mirrored_attempts: usize,
    /// Its place in the plan.
    index: usize,
    /// The first attempt's gate before its first unsafe call, if the gate
    /// stood there: its verdict (`explored:ACTION`, `probe:ACTION` or
    /// `trial:ACTION` for what it would have done when the call went anyway).
    first_gate: Option<GateVerdict>,
    /// That gate's reasons: the rules that held, and `model` if the
    /// model's score counted.
    first_gate_reasons: Vec<String>,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    seed: u64,
    size: usize,
    mode: Mode,
    model: Option<String>,
    transactions: usize,
    committed: usize,
    /// Transactions that ended failed: the failures that reach the client.
    failed: usize,
    success_rate: f64,
    would_fail: usize,
    would_fail_committed: usize,
    /// Would fail unadjusted, but not for invalid input: what the runtime can save.
    rescuable: usize,
    rescuable_committed: usize,
    latency_ms_p50: f64,
    latency_ms_p99: f64,
    /// Charge requests that reached a gateway.
    unsafe_calls_sent: u32,
    /// Orders charged successfully more than once, across both gateways.
    double_charged: usize,
    /// The gateways' fees for the charges they received (see `path_cost`).
    cost: f64,
    /// Whether the payment policy had circuit breakers.
    breakers: bool,
    /// Whether charges named no path and the policy described its paths.
    path_choice: bool,
    /// Transactions diverted although their primary path would not have failed.
    false_diversions: usize,
    shape: Shape,
    /// Charges sent that did not succeed: declined, refused, failed or
    /// answered too late to count.
    wasted_unsafe_calls: u32,
    /// Charges the gateways refused with 429.
    rate_limited: u32,
    /// After the warm-up, of the transactions whose first attempt's gate
    /// stood before an unsafe call: how many, and the share of those that
    /// would fail that it flagged (recall: any verdict but passing, or the
    /// same in the exploration share). Of those that would not fail, the
    /// share it diverted or failed fast (false diversions), and the share
    /// it adjusted in any way, delays and raised timeouts included (false
    /// alarms).
    gate_judged: usize,
    gate_recall: f64,
    gate_false_diversion_rate: f64,
    gate_false_alarm_rate: f64,
    /// After the warm-up, first gates with a rate limit among their reasons.
    gate_rate_limit_decisions: usize,
    /// The online model at the end, if it learnt: how many attempts it
    /// learnt from, and how well its scores, each given before learning
    /// from its attempt, fitted the outcomes.
    online_model: Option<OnlineFit>,
    /// Attempts, and those of them that ran with their mirror.
    attempts: usize,
    mirrored_attempts: usize,
    elapsed_s: f64,
    /// CPU time of the whole process during the run (all threads, the
    /// in-process gateways included).
    cpu_s: f64,
    outcomes: Vec<Outcome>,
}

impl Summary {
    /// A few lines for a person.
    pub(crate) fn text(&self) -> String {
        format!(
            "workload {:?} seed {} mode {:?}{}{}{}: {} transactions in {:.1} s\n\
             committed {} ({:.1}%), failed {}; would fail unadjusted {}, of which committed {} \
             (rescuable {}, committed {})\n\
             latency p50 {:.1} ms, p99 {:.1} ms; charges sent {} (fees {:.2}), double-charged orders {}, \
             false diversions {}\n\
             attempts {}, mirrored {}; process CPU {:.2} s\n\
             unsafe calls wasted {}, rate limited (429) {}; after {WARM_UP} warm-up, gate at the first unsafe \
             call on {} transactions: recall {:.3}, false diversions {:.3}, false alarms {:.3} ({} for a rate \
             limit){}",
            self.shape,
            self.seed,
            self.mode,
            self.model.as_deref().map(|m| format!(" model {m}")).unwrap_or_default(),
            if self.breakers { ", breakers" } else { "" },
            if self.path_choice { ", path choice" } else { "" },
            self.transactions,
            self.elapsed_s,
            self.committed,
            self.success_rate * 100.0,
            self.failed,
            self.would_fail,
            self.would_fail_committed,
            self.rescuable,
            self.rescuable_committed,
            self.latency_ms_p50,
            self.latency_ms_p99,
            self.unsafe_calls_sent,
            self.cost,
            self.double_charged,
            self.false_diversions,
            self.attempts,
            self.mirrored_attempts,
            self.cpu_s,
            self.wasted_unsafe_calls,
            self.rate_limited,
            self.gate_judged,
            self.gate_recall,
            self.gate_false_diversion_rate,
            self.gate_false_alarm_rate,
            self.gate_rate_limit_decisions,
            self.online_model
                .as_ref()
                .map(|fit| format!(
                    "\nonline model: learnt from {} attempts, calibration error {:.3}, mean log loss {:.3}",
                    fit.updates, fit.calibration_error, fit.mean_log_loss
                ))
                .unwrap_or_default(),
        )
    }
}

/// How the online model fitted the outcomes it learnt from.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct OnlineFit {
    updates: u64,
    /// Expected calibration error of its prequential scores.
    calibration_error: f64,
    mean_log_loss: f64,
}

/// A gateway's phases over the transactions: healthy, with windows of
/// slowness or failure that start at random and last a while.
struct Weather {
    phase: Phase,
    left: u32,
    start_chance: f64,
}

impl Weather {
    fn next(&mut self, rng: &mut StdRng) -> Phase {
        if self.left > 0 {
            self.left -= 1;
        } else {
            self.phase = Phase::Healthy;
            let draw: f64 = rng.random();
            if draw < self.start_chance {
                self.phase = if rng.random_bool(0.5) { Phase::Slow } else { Phase::Failing };
                self.left = rng.random_range(10..40);
            }
        }
        self.phase
    }
}

fn plan(seed: u64, size: usize) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut primary = Weather { phase: Phase::Healthy, left: 0, start_chance: 0.04 };
    let mut backup = Weather { phase: Phase::Healthy, left: 0, start_chance: 0.01 };
    let account = |rng: &mut StdRng| {
        if rng.random_bool(0.3) {
            format!("hot-{}", rng.random_range(0..HOT_ACCOUNTS))
        } else {
            format!("cold-{}", rng.random_range(0..COLD_ACCOUNTS))
        }
    };
    (0..size)
        .map(|i| {
            let (primary_phase, backup_phase) = (primary.next(&mut rng), backup.next(&mut rng));
            // Now and then the primary gateway has spent its quota for a
            // while: every charge is answered 429 until it is back.
            let spends_quota = rng.random_bool(0.015).then(|| Duration::from_millis(rng.random_range(QUOTA_SPENT_MS)));
            let id = format!("w{seed}-{i}");
            let draw: f64 = rng.random();
            let (kind, path, input, would_fail, certain) = if draw < 0.5 {
                let input = json!({ "order_id": id, "amount_cents": rng.random_range(100..50_000), "currency": "EUR" });
                (Kind::Charge, "charge", input, primary_phase != Phase::Healthy, false)
            } else if draw < 0.75 {
                let from = account(&mut rng);
                let mut to = account(&mut rng);
                if to == from {
                    to = "cold-0".into();
                }
                let input = json!({ "from": from, "to": to, "amount": rng.random_range(1..30) });
                (Kind::Transfer, "transfer", input, false, false)
            } else {
                let roll: f64 = rng.random();
                let (lines, invalid) = if roll < 0.1 {
                    (2, true)
                } else if roll < 0.15 {
                    (6_000, false)
                } else {
                    (rng.random_range(1..6), false)
                };
                let line_items: Vec<serde_json::Value> =
                    (0..lines).map(|n| json!({ "sku": format!("SKU-{n}"), "quantity": 1, "price": "1.00" })).collect();
                let total = format!("{lines}.00");
                let payload = json!({
                    "id": i,
                    "currency": if invalid { "XXX" } else { "EUR" },
                    "total_price": total,
                    "email": "buyer@example.com",
                    "line_items": line_items,
                });
                let input = json!({ "platform": "shopify", "store": format!("s{seed}"), "payload": payload });
                (Kind::Order, "import", input, invalid || lines > 1_000, invalid)
            };
            Planned { index: i, kind, id, path, input, would_fail, certain, primary_phase, backup_phase, spends_quota }
        })
        .collect()
}

/// The shop shape's plan (see the module's documentation).
fn plan_shop(seed: u64, size: usize) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    // The primary's window: a currency declined, or the transactions after
    // its quota was spent (in which no other window starts).
    let mut window: Option<(Phase, u32)> = None;
    let mut backup = Weather { phase: Phase::Healthy, left: 0, start_chance: 0.005 };
    let currency = |rng: &mut StdRng| {
        let mut draw: f64 = rng.random();
        for (currency, share) in CURRENCIES {
            if draw < share {
                return currency;
            }
            draw -= share;
        }
        CURRENCIES[0].0
    };
    (0..size)
        .map(|i| {
            let mut spends_quota = None;
            window = match window {
                Some((phase, left)) if left > 0 => Some((phase, left - 1)),
                _ if rng.random_bool(0.02) => Some(if rng.random_bool(0.6) {
                    (Phase::Declining(currency(&mut rng)), rng.random_range(40..120))
                } else {
                    spends_quota = Some(Duration::from_millis(rng.random_range(QUOTA_SPENT_MS)));
                    (Phase::Healthy, rng.random_range(40..100))
                }),
                _ => None,
            };
            let primary_phase = window.map_or(Phase::Healthy, |(phase, _)| phase);
            let charged = currency(&mut rng);
            let amount: u64 = if rng.random_bool(0.08) {
                rng.random_range(LARGE_AMOUNT..2_000_000)
            } else {
                rng.random_range(300..60_000)
            };
            let id = format!("s{seed}-{i}");
            let input = json!({ "order_id": id, "amount_cents": amount, "currency": charged });
            let declined = matches!(primary_phase, Phase::Declining(declined) if declined == charged);
            Planned {
                index: i,
                kind: Kind::Charge,
                id,
                path: "charge",
                input,
                would_fail: declined || amount >= LARGE_AMOUNT,
                certain: false,
                primary_phase,
                backup_phase: backup.next(&mut rng),
                spends_quota,
            }
        })
        .collect()
}

fn policies(options: &Options, primary: &Gateway, backup: &Gateway) -> anyhow::Result<[Arc<Policy>; 3]> {
    // `top` goes before the tables, `table` after them.
    let (top, table) = match options.mode {
        Mode::RetryOnly => ("failure_prediction_enabled = false\n", String::new()),
        Mode::Observe => ("failure_prediction_enabled = true\n", "[prediction]\nexploration_share = 1.0\n".into()),
        // The faults are the gateways': a doubtful charge is best sent to the
        // backup at once, so the model's share diverts (the default hedges).
        Mode::Act | Mode::Adaptive => (
            "failure_prediction_enabled = true\n",
            format!(
                "[prediction]\nexploration_share = {}\nmodel_action = \"divert\"\n{}",
                options.exploration_share,
                if options.mode == Mode::Adaptive { "[mirror]\nmode = \"adaptive\"\n" } else { "" }
            ),
        ),
    };
    let (p, b) = (primary.authority(), backup.authority());
    let payment = format!(
        r#"alternative_paths = ["charge-backup"]
compensation_path = "refund"
[resource_requirements]
outbound_timeout_ms = {OUTBOUND_TIMEOUT_MS}
wall_time_ms = 5000
[success_criteria]
required_output_fields = ["charge_id"]
[capabilities]
kv = {{ payments = "read-write" }}
streams = ["payments"]
outbound_hosts = ["{p}", "{b}"]
[config]
primary_gateway = "http://{p}"
backup_gateway = "http://{b}"
[retry]
max_attempts = 2
initial_interval_ms = 10
[[mirror.stubs]]
method = "POST"
url_prefix = "http://{p}/charges"
status = 201
body = '{{"charge_id": "mirror-stub"}}'
[[mirror.stubs]]
method = "POST"
url_prefix = "http://{b}/charges"
status = 201
body = '{{"charge_id": "mirror-stub"}}'
"#
    );
    let bank = "[capabilities]\nkv = { accounts = \"read-write\" }\nstreams = [\"transfers\"]\n[retry]\nconflict_attempts = 30\n".to_string();
    // An oversized order needs about 140 M fuel: beyond its limit, within the ceiling.
    let orders = "[resource_requirements]\nfuel = 20_000_000\nfuel_ceiling = 400_000_000\nmemory_mib = 32\n\
                  [capabilities]\nkv = { orders = \"read-write\" }\nstreams = [\"orders.imported\"]\n"
        .to_string();
    let parse = |name: &str, text: String, after: &str| {
        Policy::parse(&format!("{top}{text}{table}{after}"), std::path::Path::new(name))
            .map(Arc::new)
            .map_err(anyhow::Error::from)
    };
    // The shop's operator declares the fields a charge carries; what fails
    // and why is for the predictor to learn.
    let mut after = match options.shape {
        Shape::Faults => String::new(),
        Shape::Shop => "[[prediction.inputs]]\nname = \"currency\"\npointer = \"/currency\"\nkind = \"category\"\n\
             [[prediction.inputs]]\nname = \"amount_cents\"\npointer = \"/amount_cents\"\n"
            .to_string(),
    };
    // A gateway failing for a while is what a circuit breaker is for:
    // three failures in a row open it for half a second.
    if options.breakers {
        after.push_str("[breaker]\nfailures = 3\nopen_ms = 500\n");
    }
    // What an operator knows of the gateways: the backup is slower and
    // dearer, and a little less reliable.
    if options.path_choice {
        for (path, latency_ms, reliability) in [("charge", 20, 0.95), ("charge-backup", 40, 0.9)] {
            let cost = path_cost(path);
            after.push_str(&format!(
                "[paths.{path}]\nexpected_latency_ms = {latency_ms}\ncost = {cost}\nreliability = {reliability}\n"
            ));
        }
    }
    Ok([parse("payment.toml", payment, &after)?, parse("bank.toml", bank, "")?, parse("orders.toml", orders, "")?])
}

async fn load(runtime: &Runtime, dir: &std::path::Path, name: &str) -> anyhow::Result<Module> {
    let path = dir.join(format!("{name}.wasm"));
    let bytes = std::fs::read(&path)
        .with_context(|| format!("cannot read {} (build the examples: `cargo xtask demo` does)", path.display()))?;
    Ok(runtime.load_module(&bytes).await?)
}

/// Whether a gate's verdict adjusted the attempt, or would have: anything
/// but passing. A probe of a held endpoint is flagged (the prediction said
/// fail, and the call went to measure the endpoint); a trial of the
/// model's standing is not (the gate judged the model's call not worth
/// acting on), and where its call fails, it is a miss.
fn flags(verdict: GateVerdict) -> bool {
    !matches!(
        verdict,
        GateVerdict::Pass
            | GateVerdict::Explored(Action::None)
            | GateVerdict::Probe(Action::None)
            | GateVerdict::Trial(_)
    )
}

/// Whether a gate's verdict took the attempt off its path, or would have
/// but for the exploration share: diverted, failed fast or cancelled it.
/// A probe and a trial went their way: they are not diversions.
fn diverts(verdict: GateVerdict) -> bool {
    match verdict {
        GateVerdict::Explored(action) => matches!(action, Action::Divert | Action::FailFast),
        verdict => verdict.stops(),
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Runs the workload on a runtime and reports what happened.
pub(crate) async fn run(runtime: &Runtime, options: &Options) -> anyhow::Result<Summary> {
    if options.size == 0 || options.concurrency == 0 {
        bail!("--size and --concurrency must be at least 1");
    }
    let started = Instant::now();
    let cpu = cpu_time::ProcessTime::now();
    let primary_traits = match options.shape {
        Shape::Faults => Traits::default(),
        Shape::Shop => Traits { slow_from_amount: Some(LARGE_AMOUNT) },
    };
    let primary = Gateway::start(options.seed, OUTBOUND_TIMEOUT_MS * 2, primary_traits).await?;
    let backup = Gateway::start(options.seed.rotate_left(32), OUTBOUND_TIMEOUT_MS * 2, Traits::default()).await?;
    let [payment_policy, bank_policy, order_policy] = policies(options, &primary, &backup)?;
    let payment = load(runtime, &options.modules, "payment").await?;
    let bank = load(runtime, &options.modules, "bank_transfer").await?;
    let orders = load(runtime, &options.modules, "order_import").await?;

    // Every account starts with money; the deposits are set-up, not workload.
    let accounts = if options.shape == Shape::Faults { HOT_ACCOUNTS + COLD_ACCOUNTS } else { 0 };
    for account in (0..HOT_ACCOUNTS)
        .map(|i| format!("hot-{i}"))
        .chain((0..COLD_ACCOUNTS).map(|i| format!("cold-{i}")))
        .take(accounts)
    {
        let input = json!({ "account": account, "amount": 1_000 }).to_string().into_bytes();
        let request = TxRequest { path: Some("deposit".into()), input, ..Default::default() };
        let report = runtime.execute(&bank, &bank_policy, request).await?;
        if report.failure.is_some() {
            bail!("the set-up deposit into {account} failed: {:?}", report.failure);
        }
    }

    let permits = Arc::new(tokio::sync::Semaphore::new(options.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    let planned = match options.shape {
        Shape::Faults => plan(options.seed, options.size),
        Shape::Shop => plan_shop(options.seed, options.size),
    };
    for planned in planned {
        if started.elapsed() > options.time_limit {
            break;
        }
        let permit = permits.clone().acquire_owned().await?;
        primary.set_phase(planned.primary_phase);
        backup.set_phase(planned.backup_phase);
        if let Some(how_long) = planned.spends_quota {
            primary.spend_quota(how_long);
        }
        // A charge sent while the quota is spent would be refused.
        let would_fail = planned.would_fail || (planned.kind == Kind::Charge && primary.quota_spent());
        let (module, policy) = match planned.kind {
            Kind::Charge => (payment.clone(), payment_policy.clone()),
            Kind::Transfer => (bank.clone(), bank_policy.clone()),
            Kind::Order => (orders.clone(), order_policy.clone()),
        };
        let runtime = runtime.clone();
        let path_choice = options.path_choice;
        tasks.spawn(async move {
            // With path choice a charge names no path: the runtime orders them.
            let path = (!(path_choice && planned.kind == Kind::Charge)).then(|| planned.path.to_string());
            let request = TxRequest {
                transaction_id: Some(planned.id.clone()),
                path,
                input: planned.input.to_string().into_bytes(),
                idempotency_key: None,
                caller: None,
                profile: None,
                fence: None,
                cancel: None,
                notify: None,
            };
            let sent = Instant::now();
            let report = runtime.execute(&module, &policy, request).await;
            drop(permit);
            let report = report?;
            let attempt_failed = |kind: FailureKind| {
                report
                    .attempts
                    .iter()
                    .any(|a| matches!(&a.attempt.outcome, AttemptOutcome::Failed { kind: k, .. } if *k == kind))
            };
            // The first attempt's gate before its first unsafe call: what
            // it decided, and whether a rate limit was among its reasons.
            let first_gate = report.attempts.first().and_then(|first| {
                first.primary.events.iter().find_map(|event| match &event.call {
                    HostCall::Gate { decision, reasons, before: GateStage::UnsafeCall, .. } => {
                        Some((*decision, reasons.clone()))
                    }
                    _ => None,
                })
            });
            Ok::<_, anyhow::Error>(Outcome {
                index: planned.index,
                first_gate: first_gate.as_ref().map(|(decision, _)| *decision),
                first_gate_reasons: first_gate.map(|(_, reasons)| reasons).unwrap_or_default(),
                id: planned.id,
                kind: planned.kind,
                would_fail,
                certain_failure: planned.certain,
                committed: report.failure.is_none(),
                failure: report.failure.as_ref().map(|f| f.kind.to_string()),
                latency_ms: sent.elapsed().as_secs_f64() * 1000.0,
                attempts: report.attempts.len(),
                diverted: attempt_failed(FailureKind::Diverted),
                explored: report.attempts.iter().any(|a| a.explored),
                mirrored_attempts: report.attempts.iter().filter(|a| a.mirror.is_some()).count(),
            })
        });
    }
    let mut outcomes = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        outcomes.push(joined??);
    }
    outcomes.sort_by_key(|outcome| outcome.index);

    let mut latencies: Vec<f64> = outcomes.iter().map(|o| o.latency_ms).collect();
    latencies.sort_by(f64::total_cmp);
    let (primary_charges, backup_charges) = (primary.charges(), backup.charges());
    let mut booked: HashMap<String, u32> = primary_charges.booked;
    for (key, count) in backup_charges.booked {
        *booked.entry(key).or_default() += count;
    }
    let committed = outcomes.iter().filter(|o| o.committed).count();
    let booked_total: u32 = booked.values().sum();
    // Judged after the warm-up, where the gate stood before an unsafe call.
    let judged: Vec<(bool, GateVerdict)> = outcomes
        .iter()
        .filter(|o| o.index >= WARM_UP)
        .filter_map(|o| o.first_gate.map(|verdict| (o.would_fail, verdict)))
        .collect();
    let share = |would_fail: bool, counts: fn(GateVerdict) -> bool| {
        let of: Vec<GateVerdict> = judged.iter().filter(|(w, _)| *w == would_fail).map(|(_, v)| *v).collect();
        of.iter().filter(|verdict| counts(**verdict)).count() as f64 / of.len().max(1) as f64
    };
    Ok(Summary {
        shape: options.shape,
        wasted_unsafe_calls: (primary_charges.received + backup_charges.received).saturating_sub(booked_total),
        rate_limited: primary_charges.refused + backup_charges.refused,
        gate_judged: judged.len(),
        gate_rate_limit_decisions: outcomes
            .iter()
            .filter(|o| o.index >= WARM_UP && o.first_gate_reasons.iter().any(|rule| rule == "rate_limit"))
            .count(),
        online_model: runtime.learnt().model.map(|model| OnlineFit {
            updates: model.updates,
            calibration_error: model.calibration_error,
            mean_log_loss: model.mean_log_loss,
        }),
        gate_recall: share(true, flags),
        gate_false_diversion_rate: share(false, diverts),
        gate_false_alarm_rate: share(false, flags),
        seed: options.seed,
        size: options.size,
        mode: options.mode,
        model: runtime.model().map(|m| m.label()),
        transactions: outcomes.len(),
        committed,
        failed: outcomes.len() - committed,
        success_rate: committed as f64 / outcomes.len().max(1) as f64,
        would_fail: outcomes.iter().filter(|o| o.would_fail).count(),
        would_fail_committed: outcomes.iter().filter(|o| o.would_fail && o.committed).count(),
        rescuable: outcomes.iter().filter(|o| o.would_fail && !o.certain_failure).count(),
        rescuable_committed: outcomes.iter().filter(|o| o.would_fail && !o.certain_failure && o.committed).count(),
        latency_ms_p50: percentile(&latencies, 0.5),
        latency_ms_p99: percentile(&latencies, 0.99),
        unsafe_calls_sent: primary_charges.received + backup_charges.received,
        cost: f64::from(primary_charges.received) * path_cost("charge")
            + f64::from(backup_charges.received) * path_cost("charge-backup"),
        breakers: options.breakers,
        path_choice: options.path_choice,
        double_charged: booked.values().filter(|count| **count > 1).count(),
        false_diversions: outcomes.iter().filter(|o| o.diverted && !o.would_fail).count(),
        attempts: outcomes.iter().map(|o| o.attempts).sum(),
        mirrored_attempts: outcomes.iter().map(|o| o.mirrored_attempts).sum(),
        elapsed_s: started.elapsed().as_secs_f64(),
        cpu_s: cpu.elapsed().as_secs_f64(),
        outcomes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_is_a_workload() {
        let (a, b) = (plan(7, 300), plan(7, 300));
        let ids =
            |p: &[Planned]| p.iter().map(|t| (t.id.clone(), t.input.to_string(), t.would_fail)).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b));
        assert_ne!(ids(&a), ids(&plan(8, 300)));
        // Failure comes in windows: bad phases follow each other.
        let bad: Vec<bool> = a.iter().map(|t| t.primary_phase != Phase::Healthy).collect();
        let runs = bad.windows(2).filter(|w| w[0] != w[1]).count();
        let bad_count = bad.iter().filter(|b| **b).count();
        assert!(bad_count > 20, "some bad weather in 300 transactions: {bad_count}");
        assert!(runs * 5 < bad_count, "in windows, not coin flips: {runs} changes for {bad_count} bad transactions");
        let kinds = |k: Kind| a.iter().filter(|t| t.kind == k).count();
        assert!(kinds(Kind::Charge) > 100 && kinds(Kind::Transfer) > 40 && kinds(Kind::Order) > 40);
    }

    #[test]
    fn the_shop_shape_fails_by_what_charges_carry() {
        let plan = plan_shop(303, 2000);
        let ids = |p: &[Planned]| p.iter().map(|t| (t.input.to_string(), t.would_fail)).collect::<Vec<_>>();
        assert_eq!(ids(&plan), ids(&plan_shop(303, 2000)), "one seed, one workload");
        assert!(plan.iter().all(|t| t.kind == Kind::Charge));
        let declined =
            plan.iter().filter(|t| matches!(t.primary_phase, Phase::Declining(c) if t.input["currency"] == c));
        let large = plan.iter().filter(|t| t.input["amount_cents"].as_u64().is_some_and(|a| a >= LARGE_AMOUNT));
        let (declined, large) = (declined.count(), large.count());
        let quotas = plan.iter().filter(|t| t.spends_quota.is_some()).count();
        assert!(
            declined > 50 && large > 100 && quotas >= 5,
            "{declined} declined, {large} large, {quotas} quotas spent"
        );
        // Before anything is sent, what fails is what the charge carries.
        let failing = plan.iter().filter(|t| t.would_fail).count();
        assert!(failing >= declined.max(large) && failing <= declined + large, "{failing}");
        // In a declining window, the other currencies go through.
        let spared = plan.iter().filter(|t| matches!(t.primary_phase, Phase::Declining(_)) && !t.would_fail).count();
        assert!(spared > declined, "{spared} spared against {declined} declined");
    }
}
