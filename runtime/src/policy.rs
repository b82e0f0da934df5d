//! Policies: the metadata an operator attaches to a module.
//!
//! A policy is a TOML document. Its schema is the [`Policy`] type; every
//! field is documented in `docs/policy.md`. Unknown keys and bad values are
//! refused with a [`PolicyError`] that names the file, the key and the reason.

use crate::predict::{AttemptLimits, InputFeature, MAX_INPUTS, Rule, RuleSet};
use crate::vocab::{Action, FailureKind, HostGrant, HostPort};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The largest memory a policy may ask for, in MiB, unless the operator raises it.
pub const DEFAULT_MEMORY_CEILING_MIB: u64 = 1024;

/// How many of a path's recent committed attempts a hedge's percentile is
/// taken over, at most (see [`HedgeSettings::min_samples`]).
pub(crate) const MAX_HEDGE_SAMPLES: usize = 1024;

/// The longest a primary may yield the token to its hedge (ms).
const MAX_HEDGE_YIELD_MS: u64 = 60_000;

/// A validated policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Whether the mirror runs beside the primary and its trace is scored.
    #[serde(default = "default_true")]
    pub failure_prediction_enabled: bool,
    /// The path a transaction runs when it names none; the module's first path if unset.
    #[serde(default)]
    pub default_path: Option<String>,
    /// Alternative paths, in the order they are tried.
    #[serde(default)]
    pub alternative_paths: Vec<String>,
    /// The path that undoes a partly done transaction before it is dead-lettered.
    #[serde(default)]
    pub compensation_path: Option<String>,
    /// Limits for one attempt.
    #[serde(default)]
    pub resource_requirements: ResourceRequirements,
    /// What a successful output must satisfy before it commits.
    #[serde(default)]
    pub success_criteria: SuccessCriteria,
    /// What the module may touch.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// How failed attempts are retried.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Values the guest reads with `config::get`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// How the mirror answers the unsafe calls it does not send.
    #[serde(default)]
    pub mirror: MirrorSettings,
    /// How the mirror's trace is scored.
    #[serde(default)]
    pub prediction: PredictionSettings,
    /// How long idempotency keys are remembered.
    #[serde(default)]
    pub idempotency: IdempotencySettings,
    /// What becomes of a transaction the process stopped in the middle of.
    #[serde(default)]
    pub recovery: RecoverySettings,
    /// How the primary's unsafe calls are keyed and journalled.
    #[serde(default)]
    pub effects: EffectSettings,
    /// When a hedge starts on the next path beside a slow primary.
    #[serde(default)]
    pub hedge: HedgeSettings,
    /// Where the primary's `wasi:random/random` comes from.
    #[serde(default)]
    pub randomness: RandomnessSettings,
    /// What of the guest's requests its traces keep.
    #[serde(default)]
    pub redaction: RedactionSettings,
    /// The circuit breakers of the hosts the module calls (`[breaker]`).
    #[serde(default)]
    pub breaker: BreakerSettings,
    /// What each path is expected to take and cost (`[paths.NAME]`): with
    /// any, a transaction that names no path tries its paths in the order
    /// its caller's profile prefers (see `transaction/path_order.rs`).
    #[serde(default)]
    pub paths: BTreeMap<String, PathMeta>,
    /// Callers' weighings of success against speed and cost
    /// (`[profiles.NAME]`); `default` for a request that names none.
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
    /// An A/B split of the transactions that name no path (`[split]`,
    /// `[[split.arms]]`; see `transaction/split.rs`).
    #[serde(default)]
    pub split: SplitSettings,
    /// What a caller is told while a transaction runs long (`[phases]`).
    #[serde(default)]
    pub phases: PhaseSettings,
    /// `prediction.rules` (or the defaults), checked and compiled.
    #[serde(skip)]
    rules: RuleSet,
}

fn default_true() -> bool {
    true
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            failure_prediction_enabled: true,
            default_path: None,
            alternative_paths: Vec::new(),
            compensation_path: None,
            resource_requirements: ResourceRequirements::default(),
            success_criteria: SuccessCriteria::default(),
            capabilities: Capabilities::default(),
            retry: RetryPolicy::default(),
            config: BTreeMap::new(),
            mirror: MirrorSettings::default(),
            prediction: PredictionSettings::default(),
            idempotency: IdempotencySettings::default(),
            recovery: RecoverySettings::default(),
            effects: EffectSettings::default(),
            hedge: HedgeSettings::default(),
            randomness: RandomnessSettings::default(),
            redaction: RedactionSettings::default(),
            breaker: BreakerSettings::default(),
            paths: BTreeMap::new(),
            profiles: BTreeMap::new(),
            split: SplitSettings::default(),
            phases: PhaseSettings::default(),
            rules: RuleSet::defaults(),
        }
    }
}

/// How long idempotency keys are remembered (`[idempotency]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencySettings {
    /// Seconds a key stays bound to its transaction's outcome.
    #[serde(default = "default_retention_secs")]
    pub retention_secs: u64,
}

fn default_retention_secs() -> u64 {
    24 * 60 * 60
}

impl Default for IdempotencySettings {
    fn default() -> Self {
        Self { retention_secs: default_retention_secs() }
    }
}

/// How the primary's unsafe outbound calls are keyed and journalled
/// (`[effects]`, see `docs/policy.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EffectSettings {
    /// The header that carries each unsafe call's idempotency key; a key
    /// the guest set in it itself is kept.
    #[serde(default = "default_key_header")]
    pub idempotency_header: String,
    /// What a later attempt does with a call that was sent and never
    /// answered (a crash, a timeout): send it again with the same key.
    #[serde(default)]
    pub in_doubt: InDoubt,
    /// Whether unsafe calls are journalled (the default). Off, they are
    /// still keyed, but a retry or rerun sends them again (under the same
    /// key): for endpoints that honour keys, where the journal's two
    /// durable writes per call cost more than they save.
    #[serde(default = "default_true")]
    pub journal: bool,
}

fn default_key_header() -> String {
    "Idempotency-Key".into()
}

impl Default for EffectSettings {
    fn default() -> Self {
        Self { idempotency_header: default_key_header(), in_doubt: InDoubt::default(), journal: true }
    }
}

/// What of a request's URL a trace keeps (`[redaction]`, see
/// `docs/sandbox.md`). Traces are stored with the transaction and shown by
/// the API; a URL's query string is where credentials and card numbers
/// end up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactionSettings {
    /// `redact` (the default): each query value becomes `REDACTED`, its
    /// name kept; `drop`: the whole query string goes; `keep`: as sent.
    #[serde(default)]
    pub query: QueryRedaction,
}

/// See [`RedactionSettings::query`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryRedaction {
    /// Names kept, values replaced.
    #[default]
    Redact,
    /// The query string left out.
    Drop,
    /// As sent.
    Keep,
}

impl RedactionSettings {
    /// The URL as a trace keeps it.
    pub(crate) fn url(&self, url: &str) -> String {
        let Some((base, query)) = url.split_once('?') else { return url.to_string() };
        // A fragment is never sent, but a guest may write one.
        let (query, fragment) =
            query.split_once('#').map_or((query, None), |(query, fragment)| (query, Some(fragment)));
        let kept = match self.query {
            QueryRedaction::Keep => return url.to_string(),
            QueryRedaction::Drop => base.to_string(),
            QueryRedaction::Redact => {
                let pairs: Vec<String> = query
                    .split('&')
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| match pair.split_once('=') {
                        Some((name, _)) => format!("{name}=REDACTED"),
                        None => pair.to_string(),
                    })
                    .collect();
                format!("{base}?{}", pairs.join("&"))
            }
        };
        match fragment {
            Some(_) if self.query != QueryRedaction::Keep => kept,
            Some(fragment) => format!("{kept}#{fragment}"),
            None => kept,
        }
    }
}

/// Where randomness comes from (`[randomness]`, see `docs/sandbox.md`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomnessSettings {
    /// The primary's `wasi:random/random` (the "secure" interface).
    #[serde(default)]
    pub primary: PrimaryRandomness,
}

/// See [`RandomnessSettings::primary`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrimaryRandomness {
    /// One deterministic stream seeded per transaction, shared by the twins
    /// and their retries: the mirror sees what the primary sees. Not fit
    /// for secrets.
    #[default]
    Shared,
    /// The operating system's generator, for secrets (keys, tokens). The
    /// mirror keeps the shared stream, so it sees other values than the
    /// primary: a path whose control flow depends on them is predicted
    /// from a road the primary may not take.
    System,
}

/// When a hedge starts on the next path beside a primary attempt that is
/// still running (`[hedge]`, see `docs/policy.md`). Without `after_ms` or
/// `after_percentile`, only the predictor starts hedges (a rule whose
/// action is `hedge`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HedgeSettings {
    /// Start the hedge once the primary has run this long (milliseconds);
    /// with `after_percentile`, until the path has enough samples.
    #[serde(default)]
    pub after_ms: Option<u64>,
    /// Start the hedge once the primary has run longer than this
    /// percentile (0–100, exclusive) of the path's recent committed
    /// attempts on this node.
    #[serde(default)]
    pub after_percentile: Option<f64>,
    /// How many committed attempts the percentile needs first.
    #[serde(default = "default_hedge_min_samples")]
    pub min_samples: usize,
    /// How long a primary that asked for its hedge (the predictor doubts
    /// it) lets the hedge reach its first unsafe call first (milliseconds).
    #[serde(default = "default_hedge_yield_ms")]
    pub yield_ms: u64,
}

fn default_hedge_min_samples() -> usize {
    20
}

fn default_hedge_yield_ms() -> u64 {
    1_000
}

impl Default for HedgeSettings {
    fn default() -> Self {
        Self {
            after_ms: None,
            after_percentile: None,
            min_samples: default_hedge_min_samples(),
            yield_ms: default_hedge_yield_ms(),
        }
    }
}

/// The circuit breakers of the hosts a module calls (`[breaker]`, see
/// `docs/policy.md`): after `failures` failed calls in a row to a host (no
/// answer, a timeout, `5xx`), its calls are not sent for `open_ms`, then
/// one trial decides. Off unless `failures` is set, here for every host
/// the module calls or in `[[breaker.hosts]]` for one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSettings {
    /// Failures in a row that open a host's breaker.
    #[serde(default)]
    pub failures: Option<u32>,
    /// How long an open breaker lets nothing through (milliseconds).
    #[serde(default)]
    pub open_ms: Option<u64>,
    /// The most calls to one host at once; the others wait for a slot
    /// within the outbound timeout.
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    /// Settings of one host, over those above.
    #[serde(default)]
    pub hosts: Vec<BreakerHost>,
}

/// One host's breaker settings (`[[breaker.hosts]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerHost {
    /// The host, as `capabilities.outbound_hosts` names it (a bare host
    /// is its default port).
    pub host: String,
    /// Failures in a row that open its breaker.
    #[serde(default)]
    pub failures: Option<u32>,
    /// How long its open breaker lets nothing through (milliseconds).
    #[serde(default)]
    pub open_ms: Option<u64>,
    /// The most calls to it at once.
    #[serde(default)]
    pub max_concurrent: Option<u32>,
}

/// What a path is expected to take and cost (`[paths.NAME]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathMeta {
    /// How long it usually takes (milliseconds).
    #[serde(default)]
    pub expected_latency_ms: Option<u64>,
    /// What one run costs, in any unit the policy's paths share.
    #[serde(default)]
    pub cost: Option<f64>,
    /// The share of its runs expected to succeed, before the node has
    /// learnt any (above 0, at most 1; 0.9 if unset).
    #[serde(default)]
    pub reliability: Option<f64>,
}

/// A caller's weighing (`[profiles.NAME]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// 0: only predicted success counts; 1: only speed and cost.
    #[serde(default = "default_risk_tolerance")]
    pub risk_tolerance: f64,
    /// Within speed and cost, 0: only cost; 1: only speed.
    #[serde(default = "default_speed_weight")]
    pub speed_weight: f64,
}

fn default_risk_tolerance() -> f64 {
    0.25
}

fn default_speed_weight() -> f64 {
    0.5
}

impl Default for Profile {
    fn default() -> Self {
        Self { risk_tolerance: default_risk_tolerance(), speed_weight: default_speed_weight() }
    }
}

/// The phases of a transaction that runs long (`[phases]`), as the
/// service tells its caller: past `delayed_after_ms` it is `delayed` (its
/// status stream says so); past `background_after_ms` a synchronous
/// submission is answered `202` with its id, and it goes on in the
/// background (the status stream, or polling, tells how it ends).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseSettings {
    /// Milliseconds from acceptance after which a pending transaction is
    /// `delayed`.
    #[serde(default)]
    pub delayed_after_ms: Option<u64>,
    /// Milliseconds after which a synchronous submission stops waiting.
    #[serde(default)]
    pub background_after_ms: Option<u64>,
}

/// A/B arms (`[split]`): each arm takes a share of the transactions that
/// name no path and tries its own order of paths; the rest are the
/// control, ordered as usual. A caller (or a key) stays on one arm.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSettings {
    /// What keeps transactions on one arm: `caller` (the default: the
    /// token or caller name) or `key` (the idempotency key). A transaction
    /// without one is placed by its id.
    #[serde(default)]
    pub sticky: SplitSticky,
    /// The arms (`[[split.arms]]`); at most 1 in shares together.
    #[serde(default)]
    pub arms: Vec<SplitArm>,
}

/// What keeps a transaction on one arm of a split.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitSticky {
    /// The caller (its token's name in the service).
    #[default]
    Caller,
    /// The idempotency key.
    Key,
}

/// One arm of a split (`[[split.arms]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitArm {
    /// Its name in traces and reports; not `control`.
    pub name: String,
    /// The share of transactions it takes (above 0, at most 1).
    pub share: f64,
    /// The paths it tries, in this order.
    pub order: Vec<String>,
}

/// The default open period of a breaker (milliseconds).
const DEFAULT_BREAKER_OPEN_MS: u64 = 10_000;

/// What a policy's breaker settings say of one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HostBreaker {
    /// Failures in a row that open its breaker; `None`: it has none.
    pub(crate) failures: Option<u32>,
    /// How long its open breaker lets nothing through.
    pub(crate) open_for: std::time::Duration,
    /// Its concurrency limit, if any.
    pub(crate) max_concurrent: Option<u32>,
}

impl BreakerSettings {
    /// The settings for `target` (granted, so in its one spelling).
    pub(crate) fn for_host(&self, target: &HostPort, scheme: Option<&str>) -> HostBreaker {
        let host =
            self.hosts.iter().find(|host| HostGrant::parse(&host.host).is_ok_and(|grant| grant.allows(target, scheme)));
        let failures = host.and_then(|h| h.failures).or(self.failures);
        let open_ms = host.and_then(|h| h.open_ms).or(self.open_ms).unwrap_or(DEFAULT_BREAKER_OPEN_MS);
        HostBreaker {
            failures,
            open_for: std::time::Duration::from_millis(open_ms),
            max_concurrent: host.and_then(|h| h.max_concurrent).or(self.max_concurrent),
        }
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let check = |at: String, failures: Option<u32>, open_ms: Option<u64>, max: Option<u32>| {
            if failures.is_some_and(|f| !(1..=1_000).contains(&f)) {
                return Err((format!("{at}failures"), "must be from 1 to 1000".to_string()));
            }
            if open_ms.is_some_and(|ms| !(10..=3_600_000).contains(&ms)) {
                return Err((format!("{at}open_ms"), "must be from 10 to 3600000 (an hour)".to_string()));
            }
            if max.is_some_and(|m| !(1..=10_000).contains(&m)) {
                return Err((format!("{at}max_concurrent"), "must be from 1 to 10000".to_string()));
            }
            Ok(())
        };
        check("breaker.".into(), self.failures, self.open_ms, self.max_concurrent)?;
        for (index, host) in self.hosts.iter().enumerate() {
            let at = format!("breaker.hosts[{index}].");
            HostGrant::parse(&host.host).map_err(|reason| (format!("{at}host"), reason.to_string()))?;
            check(at, host.failures, host.open_ms, host.max_concurrent)?;
        }
        Ok(())
    }
}

/// See [`EffectSettings::in_doubt`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InDoubt {
    /// Send it again with the same idempotency key: for endpoints that
    /// honour the key, the second send cannot act twice.
    #[default]
    Resend,
    /// Send nothing and dead-letter the transaction (`effect_in_doubt`),
    /// for an operator to find out: for endpoints that ignore keys.
    DeadLetter,
}

/// What becomes of transactions that were in flight when the process
/// stopped (`[recovery]`). Nothing of such a transaction was committed:
/// its record and its state are written in one atomic step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoverySettings {
    /// `rerun` (the default): run it again from its recorded input at the
    /// next start; `dead_letter`: record it failed (`interrupted`) and put it
    /// in the dead-letter queue for an operator, for paths whose unsafe calls
    /// must not be sent twice.
    #[serde(default)]
    pub in_flight: InFlightRecovery,
}

/// See [`RecoverySettings::in_flight`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InFlightRecovery {
    /// Run the transaction again from its input.
    #[default]
    Rerun,
    /// Record it failed and dead-letter it.
    DeadLetter,
}

/// How the mirror's trace is scored (`[prediction]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictionSettings {
    /// Operator rules; the default rules (see `docs/features.md`) if unset.
    #[serde(default)]
    pub rules: Option<Vec<Rule>>,
    /// The failure probability from which the gate acts.
    #[serde(default = "default_threshold")]
    pub threshold: f32,
    /// How long the primary waits at the gate for the mirror, in milliseconds.
    #[serde(default = "default_gate_timeout_ms")]
    pub gate_timeout_ms: u64,
    /// How much the runtime's model counts, from 0 (not at all) to 1.
    /// Unset: the prediction threshold over the model's own (from its
    /// card), so that the model alone crosses the gate's threshold exactly
    /// where its training chose to flag; 1 for a model without one.
    #[serde(default)]
    pub model_weight: Option<f32>,
    /// What to do when the model's share is what crosses the threshold.
    #[serde(default = "default_model_action")]
    pub model_action: Action,
    /// The share of attempts, from 0 to 1, that run without any adjustment
    /// (no divert, fail fast, hedge, raised timeouts or grants), whatever
    /// the prediction, so that the outcomes of flagged attempts stay honest
    /// labels for training. Which attempts is decided from the transaction
    /// id and the attempt number. They are marked `explored`.
    #[serde(default)]
    pub exploration_share: f32,
    /// How long what is known of an outbound endpoint (its latency and
    /// error rate) takes to fade by half while nothing is asked of it, in
    /// milliseconds. While its calls are held back (diverted or stopped at
    /// the gate), it does not fade: the outage stays visible until a probe
    /// succeeds.
    #[serde(default = "default_endpoint_half_life_ms")]
    pub endpoint_half_life_ms: u64,
    /// While an endpoint's calls are held back, one is let through this
    /// often, in milliseconds, to measure it again (a half-open breaker's
    /// trial); a success clears its error rate.
    #[serde(default = "default_endpoint_probe_interval_ms")]
    pub endpoint_probe_interval_ms: u64,
    /// Input fields that may matter to the predictor (`[[prediction.inputs]]`):
    /// each endpoint's latency and failures are learnt per value, and rules
    /// compare numbers as `input.NAME`. See `docs/features.md`.
    #[serde(default)]
    pub inputs: Vec<InputFeature>,
    /// The longest the gate holds an unsafe call for a rate-limited
    /// endpoint (the `delay` action), in milliseconds, when an alternative
    /// path exists: a longer wait diverts instead. Without one, the
    /// attempt's wall time bounds the wait.
    #[serde(default = "default_max_delay_ms")]
    pub max_delay_ms: u64,
    /// On the last path, where there is nothing to divert to, the failure
    /// probability from which a divert the prediction calls for before an
    /// unsafe call fails the attempt fast instead: the call is not sent
    /// only to fail (a charge sent to a gateway that times out may still be
    /// booked), and the client hears at once. 1 leaves such attempts to run.
    #[serde(default = "default_last_path_fail_fast")]
    pub last_path_fail_fast: f32,
    /// Whether the configured model is refined by an online model learnt
    /// from this deployment's outcomes (see `docs/learning.md`). Without a
    /// configured model, there is nothing to refine and the rules decide alone.
    #[serde(default = "default_true")]
    pub online_learning: bool,
}

fn default_max_delay_ms() -> u64 {
    1_000
}

fn default_last_path_fail_fast() -> f32 {
    0.9
}

fn default_endpoint_half_life_ms() -> u64 {
    30_000
}

fn default_endpoint_probe_interval_ms() -> u64 {
    5_000
}

impl PredictionSettings {
    /// How the evidence on endpoints fades and is probed under this policy.
    pub(crate) fn evidence(&self) -> crate::predict::history::Evidence {
        crate::predict::history::Evidence {
            half_life: std::time::Duration::from_millis(self.endpoint_half_life_ms),
            probe_interval: std::time::Duration::from_millis(self.endpoint_probe_interval_ms),
        }
    }
}

fn default_model_action() -> Action {
    // A model gives no reason to act on: race an alternative rather than
    // abandon the primary.
    Action::Hedge
}

fn default_threshold() -> f32 {
    0.3
}

fn default_gate_timeout_ms() -> u64 {
    1_000
}

impl Default for PredictionSettings {
    fn default() -> Self {
        Self {
            rules: None,
            threshold: default_threshold(),
            gate_timeout_ms: default_gate_timeout_ms(),
            model_weight: None,
            model_action: default_model_action(),
            exploration_share: 0.0,
            endpoint_half_life_ms: default_endpoint_half_life_ms(),
            endpoint_probe_interval_ms: default_endpoint_probe_interval_ms(),
            inputs: Vec::new(),
            max_delay_ms: default_max_delay_ms(),
            last_path_fail_fast: default_last_path_fail_fast(),
            online_learning: true,
        }
    }
}

/// Limits for one attempt of one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceRequirements {
    /// Fuel (roughly, Wasm instructions) one attempt may burn.
    #[serde(default = "default_fuel")]
    pub fuel: u64,
    /// The most fuel the primary may be granted when its mirror shows it
    /// needs more than `fuel`; four times `fuel` if unset.
    #[serde(default)]
    pub fuel_ceiling: Option<u64>,
    /// Linear memory one instance may grow to, in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// The most memory the primary may be granted when its mirror shows it
    /// needs more than `memory_mib`, in MiB; four times `memory_mib` (at most
    /// the runtime's ceiling) if unset.
    #[serde(default)]
    pub memory_ceiling_mib: Option<u64>,
    /// Wall-clock time one attempt may take, in milliseconds.
    #[serde(default = "default_wall_time_ms")]
    pub wall_time_ms: u64,
    /// Time one outbound HTTP request may take, in milliseconds.
    #[serde(default = "default_outbound_timeout_ms")]
    pub outbound_timeout_ms: u64,
    /// The longest the predictor may raise `outbound_timeout_ms` to (the
    /// `adjust_timeouts` action); three times it if unset.
    #[serde(default)]
    pub outbound_timeout_ceiling_ms: Option<u64>,
    /// The longest the predictor may raise `wall_time_ms` to; three times it if unset.
    #[serde(default)]
    pub wall_time_ceiling_ms: Option<u64>,
}

impl ResourceRequirements {
    /// The limits the predictor's features compare an attempt with.
    pub fn attempt_limits(&self) -> AttemptLimits {
        AttemptLimits { fuel: self.fuel, memory_mib: self.memory_mib, outbound_timeout_ms: self.outbound_timeout_ms }
    }
}

fn default_fuel() -> u64 {
    500_000_000
}
fn default_memory_mib() -> u64 {
    64
}
fn default_wall_time_ms() -> u64 {
    10_000
}
fn default_outbound_timeout_ms() -> u64 {
    5_000
}

impl ResourceRequirements {
    /// The most fuel an attempt may be granted.
    pub fn fuel_ceiling(&self) -> u64 {
        self.fuel_ceiling.unwrap_or(self.fuel.saturating_mul(4)).max(self.fuel)
    }

    /// The longest an outbound request's timeout may be raised to, in milliseconds.
    pub fn outbound_timeout_ceiling_ms(&self) -> u64 {
        self.outbound_timeout_ceiling_ms
            .unwrap_or(self.outbound_timeout_ms.saturating_mul(3))
            .max(self.outbound_timeout_ms)
    }

    /// The longest an attempt's wall time may be raised to, in milliseconds.
    pub fn wall_time_ceiling_ms(&self) -> u64 {
        self.wall_time_ceiling_ms.unwrap_or(self.wall_time_ms.saturating_mul(3)).max(self.wall_time_ms)
    }

    /// The most memory an attempt may be granted, in MiB.
    pub fn memory_ceiling_mib(&self) -> u64 {
        self.memory_ceiling_mib
            .unwrap_or(self.memory_mib.saturating_mul(4).min(DEFAULT_MEMORY_CEILING_MIB))
            .max(self.memory_mib)
    }
}

impl Default for ResourceRequirements {
    fn default() -> Self {
        Self {
            fuel: default_fuel(),
            fuel_ceiling: None,
            memory_mib: default_memory_mib(),
            memory_ceiling_mib: None,
            wall_time_ms: default_wall_time_ms(),
            outbound_timeout_ms: default_outbound_timeout_ms(),
            outbound_timeout_ceiling_ms: None,
            wall_time_ceiling_ms: None,
        }
    }
}

/// Checks on a path's output before it may commit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuccessCriteria {
    /// Top-level fields the JSON output must contain (and not be `null`).
    #[serde(default)]
    pub required_output_fields: Vec<String>,
    /// The longest an attempt may take and still count as a success, in milliseconds.
    #[serde(default)]
    pub max_duration_ms: Option<u64>,
}

/// What a module may touch. Nothing is granted by default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Key-value namespaces and the access to each.
    #[serde(default)]
    pub kv: BTreeMap<String, Access>,
    /// Hosts (`host` or `host:port`) that outbound HTTP may reach.
    #[serde(default)]
    pub outbound_hosts: Vec<String>,
    /// Host directories made visible to the guest.
    #[serde(default)]
    pub files: Vec<FileGrant>,
    /// Event streams the module may emit to; an emit to any other fails,
    /// in both twins.
    #[serde(default)]
    pub streams: Vec<String>,
}

impl Capabilities {
    /// Whether the module may emit to `stream`.
    pub fn grants_stream(&self, stream: &str) -> bool {
        self.streams.iter().any(|granted| granted == stream)
    }
}

/// Read-only or read-write access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Reads only.
    Read,
    /// Reads and writes.
    ReadWrite,
}

/// One directory of the host visible to the guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileGrant {
    /// The directory on the host; relative paths are relative to the policy file.
    pub host: PathBuf,
    /// Where the guest sees it, such as `/data`.
    pub guest: String,
    /// The primary's access; the mirror always gets read-only access.
    pub access: Access,
}

/// How failed attempts are retried (`[retry]`).
///
/// Each path gets `max_attempts`; when they are spent, or the failure's
/// kind is not retried, the next alternative path starts. A failure of a
/// kind in `final_kinds` (invalid input, a business rejection) ends the
/// transaction at once: no other path can fix the input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts per path, the first included.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Wait before the first retry, in milliseconds.
    #[serde(default = "default_initial_interval_ms")]
    pub initial_interval_ms: u64,
    /// Each wait is the previous one times this.
    #[serde(default = "default_backoff_coefficient")]
    pub backoff_coefficient: f64,
    /// The longest wait, in milliseconds.
    #[serde(default = "default_max_interval_ms")]
    pub max_interval_ms: u64,
    /// Each wait varies by up to this fraction, either way (0 to 1).
    #[serde(default = "default_jitter")]
    pub jitter: f64,
    /// Failure kinds not retried on the same path (the next path is tried).
    #[serde(default = "default_non_retryable")]
    pub non_retryable: Vec<FailureKind>,
    /// Failure kinds that end the transaction: no retry, no other path.
    #[serde(default = "default_final_kinds")]
    pub final_kinds: Vec<FailureKind>,
    /// Attempts after commit conflicts, which retry at once, queued on the hot key.
    #[serde(default = "default_conflict_attempts")]
    pub conflict_attempts: u32,
    /// Attempts added to a path's budget once the predictor has raised its
    /// timeouts (the `adjust_timeouts` action).
    #[serde(default = "default_adjusted_extra_attempts")]
    pub adjusted_extra_attempts: u32,
    /// Per failure kind: other attempts or first interval.
    #[serde(default)]
    pub overrides: BTreeMap<FailureKind, RetryOverride>,
}

/// A retry setting for one failure kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryOverride {
    /// Attempts per path after a failure of this kind.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Wait before the first retry after a failure of this kind.
    #[serde(default)]
    pub initial_interval_ms: Option<u64>,
}

fn default_attempts() -> u32 {
    3
}
fn default_initial_interval_ms() -> u64 {
    50
}
fn default_backoff_coefficient() -> f64 {
    2.0
}
fn default_max_interval_ms() -> u64 {
    5_000
}
fn default_jitter() -> f64 {
    0.2
}
fn default_non_retryable() -> Vec<FailureKind> {
    vec![
        FailureKind::FuelExhausted,
        FailureKind::MemoryLimit,
        FailureKind::StackOverflow,
        FailureKind::GuestTrap,
        FailureKind::Setup,
    ]
}
fn default_final_kinds() -> Vec<FailureKind> {
    vec![FailureKind::Validation, FailureKind::Rejected, FailureKind::UnknownPath, FailureKind::PredictedFailure]
}
fn default_adjusted_extra_attempts() -> u32 {
    2
}

fn default_conflict_attempts() -> u32 {
    20
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: default_attempts(),
            initial_interval_ms: default_initial_interval_ms(),
            backoff_coefficient: default_backoff_coefficient(),
            max_interval_ms: default_max_interval_ms(),
            jitter: default_jitter(),
            non_retryable: default_non_retryable(),
            final_kinds: default_final_kinds(),
            conflict_attempts: default_conflict_attempts(),
            adjusted_extra_attempts: default_adjusted_extra_attempts(),
            overrides: BTreeMap::new(),
        }
    }
}

impl RetryPolicy {
    /// Attempts per path after a failure of `kind`.
    pub fn attempts_for(&self, kind: FailureKind) -> u32 {
        if kind == FailureKind::Conflict {
            return self.conflict_attempts;
        }
        if self.non_retryable.contains(&kind) || self.final_kinds.contains(&kind) {
            return 1;
        }
        self.overrides.get(&kind).and_then(|o| o.max_attempts).unwrap_or(self.max_attempts)
    }

    /// The wait before retry number `retry` (from 1) after a failure of
    /// `kind`, with `unit` in `[0, 1)` drawing the jitter.
    pub fn delay(&self, kind: FailureKind, retry: u32, unit: f64) -> std::time::Duration {
        let initial = self.overrides.get(&kind).and_then(|o| o.initial_interval_ms).unwrap_or(self.initial_interval_ms);
        let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let base = (initial as f64 * self.backoff_coefficient.powi(exponent)).min(self.max_interval_ms as f64);
        let jittered = base * (1.0 + self.jitter * (2.0 * unit - 1.0));
        std::time::Duration::from_micros((jittered.max(0.0) * 1000.0) as u64)
    }
}

/// When the mirror runs, and how it answers the unsafe calls it never sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorSettings {
    /// Canned answers, first match wins. Without a match the mirror answers
    /// with the last real response of the primary to the same endpoint, or
    /// else `200` with an empty JSON object.
    #[serde(default)]
    pub stubs: Vec<Stub>,
    /// When the mirror runs (with `failure_prediction_enabled`): `always`
    /// (the default), or `adaptive`, only where the prior is uncertain.
    #[serde(default)]
    pub mode: MirrorMode,
    /// `adaptive`: the share of transactions, from 0 to 1, mirrored
    /// whatever the prior (chosen from the transaction id), so that the
    /// prior keeps being checked.
    #[serde(default = "default_mirror_sample")]
    pub sample: f32,
    /// `adaptive`: a recent rate of rescuable failures, for the path and
    /// caller or for an endpoint the path calls, from which the prior is
    /// uncertain.
    #[serde(default = "default_uncertain_from")]
    pub uncertain_from: f32,
    /// `adaptive`: the outcomes of a path and caller needed before the prior
    /// is trusted at all.
    #[serde(default = "default_min_history")]
    pub min_history: u32,
    /// The methods the mirror may send (to measure them): `GET`, `HEAD`
    /// and `OPTIONS` at most, and only without a body or a method
    /// override. Every other request is unsafe: the mirror never sends it,
    /// and the primary's goes through the gate and the effect journal.
    #[serde(default = "default_send_methods")]
    pub send_methods: Vec<String>,
    /// Per granted host, what the mirror does with the safe requests it
    /// could send (`send` unless a host is listed here).
    #[serde(default)]
    pub hosts: Vec<MirrorHost>,
}

impl Default for MirrorSettings {
    fn default() -> Self {
        Self {
            stubs: Vec::new(),
            mode: MirrorMode::default(),
            sample: default_mirror_sample(),
            uncertain_from: default_uncertain_from(),
            min_history: default_min_history(),
            send_methods: default_send_methods(),
            hosts: Vec::new(),
        }
    }
}

/// The methods a mirror may send unless the policy says otherwise.
fn default_send_methods() -> Vec<String> {
    vec!["GET".into(), "HEAD".into()]
}

/// The methods `mirror.send_methods` may name: those RFC 9110 calls safe,
/// less `TRACE` (which echoes the request back).
const SENDABLE_METHODS: [&str; 3] = ["GET", "HEAD", "OPTIONS"];

/// What the mirror does with its safe requests to one host (`[[mirror.hosts]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorHost {
    /// The host, as `capabilities.outbound_hosts` names it.
    pub host: String,
    /// `send` them, `stub` them as unsafe calls are (a policy stub, else
    /// the primary's last answer, else `200 {}`), or answer them from the
    /// primary's `recorded` answers (else `200 {}`): for a GET with side
    /// effects, or an API whose quota the mirror must not spend.
    pub safe_calls: SafeCalls,
}

/// See [`MirrorHost::safe_calls`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SafeCalls {
    /// Sent, and measured.
    #[default]
    Send,
    /// Answered as an unsafe call is: a policy stub, else the primary's last answer.
    Stub,
    /// Answered from the primary's last answer to the same endpoint.
    Recorded,
}

impl MirrorSettings {
    /// What the mirror does with its safe requests to `target`.
    pub(crate) fn safe_calls(&self, target: &HostPort, scheme: Option<&str>) -> SafeCalls {
        self.hosts
            .iter()
            .find(|listed| HostGrant::parse(&listed.host).is_ok_and(|grant| grant.allows(target, scheme)))
            .map_or(SafeCalls::Send, |listed| listed.safe_calls)
    }

    /// Whether the mirror may send a request of `method` (given no body and
    /// no method override).
    pub(crate) fn may_send(&self, method: &str) -> bool {
        self.send_methods.iter().any(|sendable| sendable.eq_ignore_ascii_case(method))
    }
}

fn default_mirror_sample() -> f32 {
    0.05
}

fn default_uncertain_from() -> f32 {
    0.02
}

fn default_min_history() -> u32 {
    20
}

/// See [`MirrorSettings::mode`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MirrorMode {
    /// A mirror beside every primary.
    #[default]
    Always,
    /// A mirror where the prior (path, caller, endpoint health) is
    /// uncertain, on retries, and for a sample (see `runtime/src/mirroring.rs`).
    Adaptive,
}

/// A canned answer for the mirror's unsafe requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stub {
    /// The method, such as `POST`; any method if unset.
    #[serde(default)]
    pub method: Option<String>,
    /// The request URL must start with this.
    pub url_prefix: String,
    /// The status code answered.
    #[serde(default = "default_stub_status")]
    pub status: u16,
    /// The body answered.
    #[serde(default)]
    pub body: String,
}

fn default_stub_status() -> u16 {
    200
}

/// Why a policy was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy {file}: {source}")]
    Read {
        /// The policy file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The document is not TOML, or a key is unknown or of the wrong type.
    #[error("invalid policy {file}: {key}: {reason}")]
    Invalid {
        /// The policy file, or `<inline>`.
        file: PathBuf,
        /// The key at fault, as a dotted path (`resource_requirements.fuel`).
        key: String,
        /// What is wrong.
        reason: String,
    },
}

impl Policy {
    /// Reads and validates a policy file.
    pub fn from_file(path: &Path) -> Result<Self, PolicyError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| PolicyError::Read { file: path.to_path_buf(), source })?;
        let mut policy = Self::parse(&text, path)?;
        // File grants are relative to the policy file, not to the working directory.
        let dir = path.parent().unwrap_or(Path::new("."));
        for (index, grant) in policy.capabilities.files.iter_mut().enumerate() {
            if grant.host.is_relative() {
                grant.host = dir.join(&grant.host);
            }
            if !grant.host.is_dir() {
                return Err(PolicyError::Invalid {
                    file: path.to_path_buf(),
                    key: format!("capabilities.files[{index}].host"),
                    reason: format!("{} is not a directory", grant.host.display()),
                });
            }
        }
        Ok(policy)
    }

    /// Parses and validates a policy; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, PolicyError> {
        let invalid = |key: String, reason: String| PolicyError::Invalid { file: origin.to_path_buf(), key, reason };
        let table: toml::Table = toml::from_str(text).map_err(|err| {
            let key = match err.span() {
                Some(span) => {
                    let (line, column) = line_column(text, span.start);
                    format!("line {line}, column {column}")
                }
                None => "document".to_string(),
            };
            invalid(key, err.message().to_string())
        })?;
        let mut policy: Policy = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|err| {
            let key = err.path().to_string();
            invalid(if key == "." { "document".to_string() } else { key }, err.into_inner().to_string())
        })?;
        policy.validate().map_err(|(key, reason)| invalid(key, reason))?;
        let inputs = &policy.prediction.inputs;
        if let Some(rules) = &policy.prediction.rules {
            for (index, rule) in rules.iter().enumerate() {
                RuleSet::new(std::slice::from_ref(rule), inputs)
                    .map_err(|error| invalid(format!("prediction.rules[{index}]"), error.to_string()))?;
            }
            policy.rules =
                RuleSet::new(rules, inputs).map_err(|error| invalid("prediction.rules".into(), error.to_string()))?;
        }
        Ok(policy)
    }

    /// Checks the values that serde alone cannot.
    fn validate(&self) -> Result<(), (String, String)> {
        if http::HeaderName::from_bytes(self.effects.idempotency_header.as_bytes()).is_err() {
            return Err((
                "effects.idempotency_header".into(),
                format!("`{}` is not an HTTP header name", self.effects.idempotency_header),
            ));
        }
        self.breaker.validate()?;
        for (name, meta) in &self.paths {
            if meta.expected_latency_ms == Some(0) {
                return Err((format!("paths.{name}.expected_latency_ms"), "must be at least 1".into()));
            }
            if meta.cost.is_some_and(|cost| !(cost.is_finite() && cost >= 0.0)) {
                return Err((format!("paths.{name}.cost"), "must be a number of at least 0".into()));
            }
            if meta.reliability.is_some_and(|r| !(r > 0.0 && r <= 1.0)) {
                return Err((format!("paths.{name}.reliability"), "must be above 0 and at most 1".into()));
            }
        }
        for (name, profile) in &self.profiles {
            for (key, value) in [("risk_tolerance", profile.risk_tolerance), ("speed_weight", profile.speed_weight)] {
                if !(0.0..=1.0).contains(&value) {
                    return Err((format!("profiles.{name}.{key}"), "must be from 0 to 1".into()));
                }
            }
        }
        for (key, value) in [
            ("phases.delayed_after_ms", self.phases.delayed_after_ms),
            ("phases.background_after_ms", self.phases.background_after_ms),
        ] {
            if value.is_some_and(|ms| !(1..=86_400_000).contains(&ms)) {
                return Err((key.into(), "must be from 1 to 86400000 (a day)".into()));
            }
        }
        if let (Some(delayed), Some(background)) = (self.phases.delayed_after_ms, self.phases.background_after_ms)
            && delayed >= background
        {
            return Err(("phases.delayed_after_ms".into(), "must be below phases.background_after_ms".into()));
        }
        let mut arms = std::collections::BTreeSet::new();
        let mut total = 0.0;
        for (index, arm) in self.split.arms.iter().enumerate() {
            let at = format!("split.arms[{index}]");
            if arm.name.is_empty() || arm.name == "control" || !arms.insert(arm.name.as_str()) {
                return Err((format!("{at}.name"), "must be a name of its own, not empty and not `control`".into()));
            }
            if !(arm.share > 0.0 && arm.share <= 1.0) {
                return Err((format!("{at}.share"), "must be above 0 and at most 1".into()));
            }
            total += arm.share;
            let distinct: std::collections::BTreeSet<&String> = arm.order.iter().collect();
            if arm.order.is_empty() || distinct.len() != arm.order.len() {
                return Err((format!("{at}.order"), "must name at least one path, each once".into()));
            }
        }
        if total > 1.0 + 1e-9 {
            return Err(("split.arms".into(), format!("the arms' shares add up to {total}, over 1")));
        }
        let hedge = &self.hedge;
        if let Some(percentile) = hedge.after_percentile
            && !(percentile > 0.0 && percentile < 100.0)
        {
            return Err(("hedge.after_percentile".into(), "must be above 0 and below 100".into()));
        }
        if hedge.after_ms == Some(0) {
            return Err(("hedge.after_ms".into(), "must be greater than 0 (leave it out for no timed hedge)".into()));
        }
        if hedge.min_samples == 0 || hedge.min_samples > MAX_HEDGE_SAMPLES {
            return Err(("hedge.min_samples".into(), format!("must be from 1 to {MAX_HEDGE_SAMPLES}")));
        }
        // The attempt's wall time bounds the wait in any case.
        if hedge.yield_ms > MAX_HEDGE_YIELD_MS {
            return Err(("hedge.yield_ms".into(), format!("must be at most {MAX_HEDGE_YIELD_MS}")));
        }
        let r = &self.resource_requirements;
        let positive = |key: &str, value: u64| {
            if value == 0 {
                Err((format!("resource_requirements.{key}"), "must be greater than 0".to_string()))
            } else {
                Ok(())
            }
        };
        positive("fuel", r.fuel)?;
        positive("memory_mib", r.memory_mib)?;
        positive("wall_time_ms", r.wall_time_ms)?;
        positive("outbound_timeout_ms", r.outbound_timeout_ms)?;
        if let Some(ceiling) = r.memory_ceiling_mib
            && !(r.memory_mib..=DEFAULT_MEMORY_CEILING_MIB).contains(&ceiling)
        {
            return Err((
                "resource_requirements.memory_ceiling_mib".into(),
                format!("must be between memory_mib and {DEFAULT_MEMORY_CEILING_MIB}"),
            ));
        }
        if r.fuel_ceiling.is_some_and(|ceiling| ceiling < r.fuel) {
            return Err((
                "resource_requirements.fuel_ceiling".into(),
                "must be at least resource_requirements.fuel".into(),
            ));
        }
        if r.memory_mib > DEFAULT_MEMORY_CEILING_MIB {
            return Err((
                "resource_requirements.memory_mib".into(),
                format!("{} MiB is above the ceiling of {DEFAULT_MEMORY_CEILING_MIB} MiB", r.memory_mib),
            ));
        }
        let retry = &self.retry;
        if retry.max_attempts == 0 {
            return Err(("retry.max_attempts".into(), "must be at least 1".into()));
        }
        if !(0.0..=1.0).contains(&self.prediction.threshold) {
            return Err(("prediction.threshold".into(), "must be between 0 and 1".into()));
        }
        if self.prediction.model_weight.is_some_and(|w| !(0.0..=1.0).contains(&w)) {
            return Err(("prediction.model_weight".into(), "must be between 0 and 1".into()));
        }
        if !(0.0..=1.0).contains(&self.prediction.last_path_fail_fast) {
            return Err(("prediction.last_path_fail_fast".into(), "must be between 0 and 1".into()));
        }
        if !(0.0..=1.0).contains(&self.prediction.exploration_share) {
            return Err(("prediction.exploration_share".into(), "must be between 0 and 1".into()));
        }
        if self.prediction.endpoint_half_life_ms == 0 {
            return Err(("prediction.endpoint_half_life_ms".into(), "must be at least 1".into()));
        }
        if self.prediction.endpoint_probe_interval_ms == 0 {
            return Err(("prediction.endpoint_probe_interval_ms".into(), "must be at least 1".into()));
        }
        let inputs = &self.prediction.inputs;
        if inputs.len() > MAX_INPUTS {
            return Err(("prediction.inputs".into(), format!("{} inputs; at most {MAX_INPUTS}", inputs.len())));
        }
        for (index, input) in inputs.iter().enumerate() {
            let key = format!("prediction.inputs[{index}]");
            input.check().map_err(|reason| (key.clone(), reason))?;
            if inputs[..index].iter().any(|other| other.name == input.name) {
                return Err((key, format!("input `{}` is declared twice", input.name)));
            }
        }
        if !(0.0..=1.0).contains(&self.mirror.sample) {
            return Err(("mirror.sample".into(), "must be between 0 and 1".into()));
        }
        if !(0.0..=1.0).contains(&self.mirror.uncertain_from) {
            return Err(("mirror.uncertain_from".into(), "must be between 0 and 1".into()));
        }
        if retry.conflict_attempts == 0 {
            return Err(("retry.conflict_attempts".into(), "must be at least 1".into()));
        }
        if !(retry.backoff_coefficient.is_finite() && retry.backoff_coefficient >= 1.0) {
            return Err(("retry.backoff_coefficient".into(), "must be a number of at least 1".into()));
        }
        if !(0.0..=1.0).contains(&retry.jitter) {
            return Err(("retry.jitter".into(), "must be between 0 and 1".into()));
        }
        if retry.max_interval_ms < retry.initial_interval_ms {
            return Err(("retry.max_interval_ms".into(), "must be at least retry.initial_interval_ms".into()));
        }
        for (kind, retry_override) in &retry.overrides {
            if retry_override.max_attempts == Some(0) {
                return Err((format!("retry.overrides.{kind}.max_attempts"), "must be at least 1".into()));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (index, path) in self.alternative_paths.iter().enumerate() {
            if !seen.insert(path) || self.default_path.as_ref() == Some(path) {
                return Err((format!("alternative_paths[{index}]"), format!("path `{path}` is listed twice")));
            }
        }
        for namespace in self.capabilities.kv.keys() {
            if let Err(reason) = crate::vocab::validate_name(namespace) {
                return Err((format!("capabilities.kv.{namespace}"), reason));
            }
        }
        for (index, stream) in self.capabilities.streams.iter().enumerate() {
            if let Err(reason) = crate::vocab::validate_name(stream) {
                return Err((format!("capabilities.streams[{index}]"), reason));
            }
            if stream.starts_with(crate::vocab::RESERVED_STREAM_PREFIX) {
                let reason = format!(
                    "`{stream}` is the runtime's own: streams named `{}…` cannot be granted",
                    crate::vocab::RESERVED_STREAM_PREFIX
                );
                return Err((format!("capabilities.streams[{index}]"), reason));
            }
        }
        for (index, host) in self.capabilities.outbound_hosts.iter().enumerate() {
            HostGrant::parse(host).map_err(|reason| (format!("capabilities.outbound_hosts[{index}]"), reason))?;
        }
        for (index, grant) in self.capabilities.files.iter().enumerate() {
            if !grant.guest.starts_with('/') {
                return Err((
                    format!("capabilities.files[{index}].guest"),
                    "must be an absolute path such as /data".into(),
                ));
            }
        }
        for (index, method) in self.mirror.send_methods.iter().enumerate() {
            if !SENDABLE_METHODS.iter().any(|sendable| sendable.eq_ignore_ascii_case(method)) {
                return Err((
                    format!("mirror.send_methods[{index}]"),
                    format!(
                        "the mirror may send only {} (without a body), not `{method}`",
                        SENDABLE_METHODS.join(", ")
                    ),
                ));
            }
        }
        for (index, listed) in self.mirror.hosts.iter().enumerate() {
            HostGrant::parse(&listed.host).map_err(|reason| (format!("mirror.hosts[{index}].host"), reason))?;
        }
        for (index, stub) in self.mirror.stubs.iter().enumerate() {
            if !(100..=599).contains(&stub.status) {
                return Err((
                    format!("mirror.stubs[{index}].status"),
                    format!("{} is not an HTTP status", stub.status),
                ));
            }
        }
        Ok(())
    }

    /// The paths a transaction on this policy may run, checked against the module's paths.
    ///
    /// Returns the default path first, then the alternatives in order.
    pub fn resolve_paths(&self, module_paths: &[String]) -> Result<Vec<String>, PolicyError> {
        let check = |key: String, path: &String| {
            if module_paths.contains(path) {
                Ok(())
            } else {
                Err(PolicyError::Invalid {
                    file: PathBuf::from("<policy>"),
                    key,
                    reason: format!("the module has no path `{path}`; it has {}", module_paths.join(", ")),
                })
            }
        };
        let default = match &self.default_path {
            Some(path) => {
                check("default_path".into(), path)?;
                path.clone()
            }
            None => module_paths.first().cloned().unwrap_or_default(),
        };
        for (index, path) in self.alternative_paths.iter().enumerate() {
            check(format!("alternative_paths[{index}]"), path)?;
        }
        for path in self.paths.keys() {
            check(format!("paths.{path}"), path)?;
        }
        for (index, arm) in self.split.arms.iter().enumerate() {
            for (place, path) in arm.order.iter().enumerate() {
                check(format!("split.arms[{index}].order[{place}]"), path)?;
            }
        }
        if let Some(path) = &self.compensation_path {
            check("compensation_path".into(), path)?;
        }
        let mut paths = vec![default];
        paths.extend(self.alternative_paths.iter().cloned());
        Ok(paths)
    }

    /// The rules that score the mirror's trace.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// The access granted to a key-value namespace, if any.
    pub fn kv_access(&self, namespace: &str) -> Option<Access> {
        self.capabilities.kv.get(namespace).copied()
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(text, Path::new("p.toml"))
    }

    #[test]
    fn empty_policy_has_safe_defaults() {
        let policy = parse("").expect("empty policy is valid");
        assert!(policy.failure_prediction_enabled);
        assert!(policy.capabilities.kv.is_empty(), "nothing is granted by default");
        assert!(policy.capabilities.outbound_hosts.is_empty());
        assert_eq!(policy.resource_requirements.memory_mib, 64);
    }

    #[test]
    fn unknown_key_names_file_key_and_reason() {
        let err = parse("[resource_requirements]\nfuell = 3\n").expect_err("unknown key");
        let text = err.to_string();
        assert!(text.contains("p.toml"), "{text}");
        assert!(text.contains("resource_requirements"), "{text}");
        assert!(text.contains("fuell"), "{text}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let err = parse("[resource_requirements]\nfuel = \"lots\"\n").expect_err("wrong type");
        let PolicyError::Invalid { key, .. } = &err else { panic!("{err}") };
        assert_eq!(key, "resource_requirements.fuel");
    }

    #[test]
    fn query_strings_are_redacted_unless_the_policy_keeps_them() {
        let url = "http://pay.test/charge?card=4111111111111111&cvc=123&flag#frag";
        let with = |query| RedactionSettings { query }.url(url);
        assert_eq!(with(QueryRedaction::Redact), "http://pay.test/charge?card=REDACTED&cvc=REDACTED&flag");
        assert_eq!(with(QueryRedaction::Drop), "http://pay.test/charge");
        assert_eq!(with(QueryRedaction::Keep), url);
        assert_eq!(RedactionSettings::default().url("http://pay.test/x"), "http://pay.test/x");
    }

    #[test]
    fn syntax_error_gives_line() {
        let err = parse("a = = 3").expect_err("syntax");
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        for (text, key) in [
            ("[resource_requirements]\nfuel = 0", "resource_requirements.fuel"),
            ("[resource_requirements]\nmemory_mib = 100000", "resource_requirements.memory_mib"),
            ("[capabilities]\noutbound_hosts = [\"http://x/y\"]", "capabilities.outbound_hosts[0]"),
            ("[capabilities]\nstreams = [\"ok\", \"\"]", "capabilities.streams[1]"),
            ("[capabilities]\nstreams = [\"ok\", \"txmirror.status\"]", "capabilities.streams[1]"),
            ("[capabilities]\noutbound_hosts = [\"a.test\", \"2130706433\"]", "capabilities.outbound_hosts[1]"),
            ("[capabilities]\noutbound_hosts = [\"user@a.test\"]", "capabilities.outbound_hosts[0]"),
            ("[mirror]\nsend_methods = [\"GET\", \"DELETE\"]", "mirror.send_methods[1]"),
            ("[[mirror.hosts]]\nhost = \"a.test/x\"\nsafe_calls = \"stub\"", "mirror.hosts[0].host"),
            ("[[mirror.hosts]]\nhost = \"a.test\"\nsafe_calls = \"maybe\"", "mirror.hosts[0].safe_calls"),
            ("[capabilities.kv]\n\"\" = \"read\"", "capabilities.kv."),
            ("[capabilities.kv]\naccounts = \"write-only\"", "capabilities.kv.accounts"),
            ("alternative_paths = [\"a\", \"a\"]", "alternative_paths[1]"),
            ("[retry]\nmax_attempts = 0", "retry.max_attempts"),
            ("[retry]\njitter = 2.0", "retry.jitter"),
            ("[prediction]\nthreshold = 1.5", "prediction.threshold"),
            ("[prediction]\nmodel_weight = -0.1", "prediction.model_weight"),
            ("[prediction]\nexploration_share = 2", "prediction.exploration_share"),
            ("[prediction]\nlast_path_fail_fast = 1.5", "prediction.last_path_fail_fast"),
            ("[prediction]\nendpoint_half_life_ms = 0", "prediction.endpoint_half_life_ms"),
            ("[[prediction.inputs]]\nname = \"a\"\npointer = \"a\"", "prediction.inputs[0]"),
            (
                "[[prediction.inputs]]\nname = \"a\"\npointer = \"/a\"\n[[prediction.inputs]]\nname = \"a\"\npointer = \"/b\"",
                "prediction.inputs[1]",
            ),
            (
                "[[prediction.rules]]\nname = \"r\"\nwhen = \"input.a > 1\"\nweight = 0.1\nreason = \"x\"",
                "prediction.rules[0]",
            ),
            ("[prediction]\nendpoint_probe_interval_ms = 0", "prediction.endpoint_probe_interval_ms"),
            ("[mirror]\nmode = \"sometimes\"", "mirror.mode"),
            ("[effects]\nidempotency_header = \"Idempotency Key\"", "effects.idempotency_header"),
            ("[effects]\nin_doubt = \"maybe\"", "effects.in_doubt"),
            ("[effects]\njournal = \"yes\"", "effects.journal"),
            ("[effects]\nkey_header = \"X\"", "effects.key_header"),
            ("[randomness]\nprimary = \"strong\"", "randomness.primary"),
            ("[redaction]\nquery = \"hide\"", "redaction.query"),
            ("[hedge]\nafter_percentile = 100", "hedge.after_percentile"),
            ("[hedge]\nafter_percentile = 0", "hedge.after_percentile"),
            ("[hedge]\nafter_ms = 0", "hedge.after_ms"),
            ("[hedge]\nafter_ms = -5", "hedge.after_ms"),
            ("[hedge]\nmin_samples = 0", "hedge.min_samples"),
            ("[hedge]\nyield_ms = 999999999", "hedge.yield_ms"),
            ("[hedge]\ndelay_ms = 5", "hedge.delay_ms"),
            ("[mirror]\nsample = 1.5", "mirror.sample"),
            ("[mirror]\nuncertain_from = -0.1", "mirror.uncertain_from"),
            ("[retry]\nnon_retryable = [\"tired\"]", "retry.non_retryable[0]"),
            ("[retry.overrides.unavailable]\nmax_attempts = 0", "retry.overrides.unavailable.max_attempts"),
            (
                "[[prediction.rules]]\nname = \"x\"\nwhen = \"latency > 1\"\nweight = 0.1\nreason = \"r\"",
                "prediction.rules[0]",
            ),
            ("[[prediction.rules]]\nname = \"x\"\nwhen = \"fuel_ratio > 1\"\nweight = 0.1", "prediction.rules[0]"),
            (
                "[[prediction.rules]]\nname = \"model\"\nwhen = \"fuel_ratio > 1\"\nweight = 0.1\nreason = \"r\"",
                "prediction.rules[0]",
            ),
        ] {
            let err = parse(text).expect_err(text);
            let PolicyError::Invalid { key: got, .. } = &err else { panic!("{err}") };
            assert_eq!(got, key, "{text}: {err}");
        }
    }

    #[test]
    fn file_grants_are_relative_to_the_policy_and_must_exist() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("data")).expect("mkdir");
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "[capabilities]\nfiles = [{ host = \"data\", guest = \"/data\", access = \"read\" }]\n")
            .expect("write");
        let policy = Policy::from_file(&file).expect("valid");
        assert_eq!(policy.capabilities.files[0].host, dir.path().join("data"));

        std::fs::write(&file, "[capabilities]\nfiles = [{ host = \"nope\", guest = \"/data\", access = \"read\" }]\n")
            .expect("write");
        let err = Policy::from_file(&file).expect_err("missing directory");
        assert!(err.to_string().contains("capabilities.files[0].host"), "{err}");
    }

    #[test]
    fn retry_delays_grow_are_capped_and_jittered() {
        let policy = parse("[retry]\ninitial_interval_ms = 100\nmax_interval_ms = 300\njitter = 0.5").expect("valid");
        let retry = &policy.retry;
        let ms = |n, unit| retry.delay(FailureKind::Unavailable, n, unit).as_millis();
        assert_eq!((ms(1, 0.5), ms(2, 0.5), ms(3, 0.5)), (100, 200, 300), "doubling, capped at 300");
        assert_eq!((ms(1, 0.0), ms(1, 0.999_999)), (50, 149), "half the interval either way");
        assert_eq!(retry.attempts_for(FailureKind::Unavailable), 3);
        assert_eq!(retry.attempts_for(FailureKind::FuelExhausted), 1);
        assert_eq!(retry.attempts_for(FailureKind::Conflict), 20);
        let with_override =
            parse("[retry.overrides.unavailable]\nmax_attempts = 5\ninitial_interval_ms = 10").expect("valid");
        assert_eq!(with_override.retry.attempts_for(FailureKind::Unavailable), 5);
        assert_eq!(with_override.retry.delay(FailureKind::Unavailable, 1, 0.5).as_millis(), 10);
    }

    #[test]
    fn paths_are_checked_against_the_module() {
        let policy = parse("alternative_paths = [\"backup\"]").expect("valid");
        let module = vec!["main".to_string(), "backup".to_string()];
        assert_eq!(policy.resolve_paths(&module).expect("ok"), vec!["main", "backup"]);
        let err = policy.resolve_paths(&["main".to_string()]).expect_err("missing path");
        assert!(err.to_string().contains("no path `backup`"), "{err}");
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// Real keys, so that the values reach validation, not only serde.
        const KEYS: [(&str, &str); 17] = [
            ("resource_requirements", "fuel"),
            ("resource_requirements", "memory_mib"),
            ("resource_requirements", "wall_time_ms"),
            ("resource_requirements", "outbound_timeout_ms"),
            ("retry", "max_attempts"),
            ("retry", "jitter"),
            ("prediction", "threshold"),
            ("prediction", "gate_timeout_ms"),
            ("hedge", "after_ms"),
            ("hedge", "after_percentile"),
            ("mirror", "send_methods"),
            ("mirror", "sample"),
            ("effects", "in_doubt"),
            ("capabilities", "outbound_hosts"),
            ("capabilities", "streams"),
            ("redaction", "query"),
            ("idempotency", "retention_secs"),
        ];

        const VALUES: [&str; 18] = [
            "-1",
            "0",
            "1",
            "1.5",
            "1e308",
            "-1e308",
            "nan",
            "\"x\"",
            "\"\"",
            "[]",
            "[\"GET\"]",
            "[\"2130706433\", \"a.test:0\"]",
            "[1, 2]",
            "true",
            "{}",
            "18446744073709551615",
            "9223372036854775807",
            "\"send\"",
        ];

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            /// Any text at all: a policy, or an error that says where.
            #[test]
            fn any_text_parses_or_is_refused(text in "(\\PC|\n){0,200}") {
                if let Err(error) = Policy::parse(&text, Path::new("p.toml")) {
                    prop_assert!(!error.to_string().is_empty());
                }
            }

            /// Real keys with odd values: accepted, or refused naming a key;
            /// never a panic (an overflow in validation, say).
            #[test]
            fn real_keys_with_odd_values_are_accepted_or_refused_by_name(
                entries in proptest::collection::vec((0..KEYS.len(), 0..VALUES.len()), 1..6)
            ) {
                let mut sections: BTreeMap<&str, Vec<String>> = BTreeMap::new();
                for (key, value) in entries {
                    let (section, name) = KEYS[key];
                    let lines = sections.entry(section).or_default();
                    if !lines.iter().any(|line| line.starts_with(&format!("{name} ="))) {
                        lines.push(format!("{name} = {}", VALUES[value]));
                    }
                }
                let text: String = sections
                    .iter()
                    .map(|(section, lines)| format!("[{section}]\n{}\n", lines.join("\n")))
                    .collect();
                match Policy::parse(&text, Path::new("p.toml")) {
                    Ok(policy) => prop_assert!(policy.resource_requirements.fuel > 0),
                    Err(PolicyError::Invalid { key, reason, .. }) => {
                        prop_assert!(!key.is_empty() && !reason.is_empty(), "{text}");
                    }
                    Err(other) => prop_assert!(!other.to_string().is_empty()),
                }
            }
        }
    }
}
