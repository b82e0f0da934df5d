//! Prometheus metrics, one registry per tenant: `GET /metrics` with an
//! operator's token shows that tenant's series and no other's.
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `txmirror_transactions_total` | `outcome` | transactions ended: `committed`, `failed`, `deduplicated` |
//! | `txmirror_transactions_in_flight` | | accepted, not ended |
//! | `txmirror_transaction_duration_seconds` | | from acceptance to the end |
//! | `txmirror_predictions_total` | `source` | mirror traces scored: `rules`, `rules_and_model` |
//! | `txmirror_gate_decisions_total` | `decision` | gate decisions: `pass`, `divert`, `fail_fast`, `hedge`, … |
//! | `txmirror_diversions_total` | `reason` | diversions, by the heaviest rule behind them |
//! | `txmirror_gate_wait_seconds` | | how long primaries waited for their mirror at a gate |
//! | `txmirror_grants_total` | `resource` | resources granted to running primaries |
//! | `txmirror_instance_duration_seconds` | `twin` | wall time of primaries and mirrors |
//! | `txmirror_fuel_consumed_total` | `twin` | fuel burnt by primaries and mirrors: the mirror's CPU overhead |
//! | `txmirror_leases_held` | | accepted transactions this node holds the lease of, at its last renewal |
//! | `txmirror_takeovers_total` | | transactions this node took over from a node whose lease lapsed |
//! | `txmirror_node_heartbeat_age_seconds` | `node`, `state` | each node's time since its last heartbeat, as the catalog saw it at the scrape |
//! | `txmirror_stream_events_total` | `stream` | events committed |
//! | `txmirror_stream_predictions` | `stream`, `kind` | predicted events on this node, by how they were settled |
//! | `txmirror_stream_prediction_mismatch_ratio`, `…_lead_seconds` | `stream` | predictions that did not match; mean lead before the commit |
//! | `txmirror_webhook_attempts_total` | `webhook`, `outcome` | delivery attempts on this node: `delivered`, `unavailable`, `refused`; events `parked` |
//! | `txmirror_webhook_breaker_state` | `webhook` | the endpoint's breaker on this node: 0 closed, 1 open, 2 half-open |
//! | `txmirror_connections_open` | | this node's open connections, at the scrape |
//! | `txmirror_connections_closed_total` | `reason` | connections this node closed for a limit: `refused` (over `max_connections`), `timed_out` (a late head or body), `idle` |
//! | `txmirror_quota_in_flight` | | the tenant's transactions in flight on this node, counted against `max_in_flight` |
//! | `txmirror_quota_refused_total` | `quota` | the tenant's requests this node refused for a quota: `rate`, `in_flight` |
//! | `txmirror_breaker_state` | `host` | the breaker of each host guests call, on this node, at the scrape: 0 closed, 1 open, 2 half-open |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use txmirror_runtime::GateVerdict;
use txmirror_runtime::PredictionStats;
use txmirror_runtime::TxReport;
use txmirror_runtime::predict::MODEL_REASON;
use txmirror_runtime::store::TransactionOutcome;
use txmirror_runtime::trace::{Effect, HostCall};

macro_rules! label_set {
    ($name:ident, $field:ident) => {
        #[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
        struct $name {
            $field: String,
        }
    };
}

label_set!(Outcome, outcome);
label_set!(Source, source);
label_set!(Decision, decision);
label_set!(Reason, reason);
label_set!(Resource, resource);
label_set!(Twin, twin);
label_set!(Stream, stream);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PredictionLabels {
    stream: String,
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    webhook: String,
    outcome: String,
}

label_set!(Webhook, webhook);
label_set!(Host, host);
label_set!(Quota, quota);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
    state: String,
}

fn latency_histogram() -> Histogram {
    // 100 µs to about 6.5 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// One tenant's metrics.
#[derive(Debug)]
pub struct TenantMetrics {
    registry: Registry,
    outcomes: Family<Outcome, Counter>,
    in_flight: Gauge,
    duration: Histogram,
    predictions: Family<Source, Counter>,
    decisions: Family<Decision, Counter>,
    diversions: Family<Reason, Counter>,
    gate_wait: Histogram,
    grants: Family<Resource, Counter>,
    instance_duration: Family<Twin, Histogram, fn() -> Histogram>,
    fuel: Family<Twin, Counter>,
    leases_held: Gauge,
    takeovers: Counter,
    heartbeats: Family<NodeLabels, Gauge<f64, AtomicU64>>,
    stream_events: Family<Stream, Counter>,
    stream_predictions: Family<PredictionLabels, Gauge>,
    prediction_mismatch: Family<Stream, Gauge<f64, AtomicU64>>,
    prediction_lead: Family<Stream, Gauge<f64, AtomicU64>>,
    webhook_attempts: Family<WebhookLabels, Counter>,
    webhook_breakers: Family<Webhook, Gauge>,
    breakers: Family<Host, Gauge>,
    connections_open: Gauge,
    quota_in_flight: Gauge,
    quota_refused: Family<Quota, Counter>,
    connections_closed: Family<Reason, Counter>,
}

impl Default for TenantMetrics {
    fn default() -> Self {
        let mut metrics = Self {
            registry: Registry::default(),
            outcomes: Family::default(),
            in_flight: Gauge::default(),
            duration: latency_histogram(),
            predictions: Family::default(),
            decisions: Family::default(),
            diversions: Family::default(),
            gate_wait: latency_histogram(),
            grants: Family::default(),
            instance_duration: Family::new_with_constructor(latency_histogram),
            fuel: Family::default(),
            leases_held: Gauge::default(),
            takeovers: Counter::default(),
            heartbeats: Family::default(),
            stream_events: Family::default(),
            stream_predictions: Family::default(),
            prediction_mismatch: Family::default(),
            prediction_lead: Family::default(),
            webhook_attempts: Family::default(),
            webhook_breakers: Family::default(),
            breakers: Family::default(),
            connections_open: Gauge::default(),
            quota_in_flight: Gauge::default(),
            quota_refused: Family::default(),
            connections_closed: Family::default(),
        };
        let r = &mut metrics.registry;
        r.register("txmirror_transactions", "Transactions ended, by outcome", metrics.outcomes.clone());
        r.register("txmirror_transactions_in_flight", "Transactions accepted and not ended", metrics.in_flight.clone());
        r.register(
            "txmirror_transaction_duration_seconds",
            "Time from acceptance to the end of a transaction",
            metrics.duration.clone(),
        );
        r.register("txmirror_predictions", "Mirror traces scored, by source", metrics.predictions.clone());
        r.register("txmirror_gate_decisions", "Decisions of the effect gate", metrics.decisions.clone());
        r.register("txmirror_diversions", "Diversions, by the heaviest rule behind them", metrics.diversions.clone());
        r.register("txmirror_gate_wait_seconds", "Time primaries waited for their mirror", metrics.gate_wait.clone());
        r.register("txmirror_grants", "Resources granted to running primaries", metrics.grants.clone());
        r.register(
            "txmirror_instance_duration_seconds",
            "Wall time of instances, by twin",
            metrics.instance_duration.clone(),
        );
        r.register("txmirror_fuel_consumed", "Fuel burnt, by twin", metrics.fuel.clone());
        r.register(
            "txmirror_leases_held",
            "Accepted transactions this node holds the lease of",
            metrics.leases_held.clone(),
        );
        r.register(
            "txmirror_takeovers",
            "Transactions taken over from a node whose lease lapsed",
            metrics.takeovers.clone(),
        );
        r.register(
            "txmirror_node_heartbeat_age_seconds",
            "Time since each node's last heartbeat, as the catalog saw it",
            metrics.heartbeats.clone(),
        );
        r.register("txmirror_stream_events", "Events committed, by stream", metrics.stream_events.clone());
        r.register(
            "txmirror_stream_predictions",
            "Predicted events on this node, by stream and how they were settled",
            metrics.stream_predictions.clone(),
        );
        r.register(
            "txmirror_stream_prediction_mismatch_ratio",
            "Of the events of predicted attempts that committed, the share that did not match a prediction",
            metrics.prediction_mismatch.clone(),
        );
        r.register(
            "txmirror_stream_prediction_lead_seconds",
            "Mean time from a prediction to its commit",
            metrics.prediction_lead.clone(),
        );
        r.register(
            "txmirror_webhook_attempts",
            "Webhook delivery attempts on this node, by outcome; events parked",
            metrics.webhook_attempts.clone(),
        );
        r.register(
            "txmirror_webhook_breaker_state",
            "Each webhook endpoint's breaker on this node: 0 closed, 1 open, 2 half-open",
            metrics.webhook_breakers.clone(),
        );
        r.register(
            "txmirror_breaker_state",
            "The circuit breaker of each host guests call, on this node: 0 closed, 1 open, 2 half-open",
            metrics.breakers.clone(),
        );
        r.register("txmirror_connections_open", "This node's open connections", metrics.connections_open.clone());
        r.register(
            "txmirror_connections_closed",
            "Connections this node closed for a limit, by reason",
            metrics.connections_closed.clone(),
        );
        r.register(
            "txmirror_quota_in_flight",
            "The tenant's transactions in flight on this node, counted against its quota",
            metrics.quota_in_flight.clone(),
        );
        r.register(
            "txmirror_quota_refused",
            "The tenant's requests this node refused for a quota, by quota",
            metrics.quota_refused.clone(),
        );
        metrics
    }
}

fn label<T>(make: impl FnOnce(String) -> T, value: &str) -> T {
    make(value.to_string())
}

impl TenantMetrics {
    /// A transaction was accepted.
    pub fn started(&self) {
        self.in_flight.inc();
    }

    /// This node took over a transaction whose lease lapsed.
    pub fn took_over(&self) {
        self.takeovers.inc();
    }

    /// The nodes as the catalog lists them now: `(id, state, heartbeat age)`;
    /// nodes no longer listed are dropped from the series.
    pub fn nodes(&self, nodes: impl IntoIterator<Item = (String, String, Duration)>) {
        self.heartbeats.clear();
        for (node, state, age) in nodes {
            self.heartbeats.get_or_create(&NodeLabels { node, state }).set(age.as_secs_f64());
        }
    }

    /// This node holds `count` leases, as its last renewal found.
    pub fn leases_held(&self, count: usize) {
        self.leases_held.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// A transaction accepted earlier ended (or was handed back) without a report.
    pub fn abandoned(&self) {
        self.in_flight.dec();
    }

    /// A transaction ended with this report, `elapsed` after its acceptance.
    pub fn ended(&self, report: &TxReport, elapsed: Duration) {
        self.in_flight.dec();
        self.duration.observe(elapsed.as_secs_f64());
        let outcome = match (&report.outcome, report.deduplicated) {
            (_, true) => "deduplicated",
            (TransactionOutcome::Committed { .. }, false) => "committed",
            _ => "failed",
        };
        self.outcomes.get_or_create(&label(|outcome| Outcome { outcome }, outcome)).inc();
        if report.deduplicated {
            return;
        }
        // The committing attempt's events are what the streams received.
        if let (TransactionOutcome::Committed { .. }, Some(last)) = (&report.outcome, report.attempts.last()) {
            for event in &last.primary.events {
                if let HostCall::Emit { stream, effect: Effect::Buffered, .. } = &event.call {
                    self.stream_events.get_or_create(&label(|stream| Stream { stream }, stream)).inc();
                }
            }
        }
        for attempt in &report.attempts {
            if let Some(prediction) = &attempt.prediction {
                let source = if prediction.model_probability.is_some() { "rules_and_model" } else { "rules" };
                self.predictions.get_or_create(&label(|source| Source { source }, source)).inc();
            }
            for (twin, trace) in [("primary", Some(&attempt.primary)), ("mirror", attempt.mirror.as_ref())] {
                let Some(trace) = trace else { continue };
                let twin = label(|twin| Twin { twin }, twin);
                self.instance_duration.get_or_create(&twin).observe(trace.duration_micros as f64 / 1e6);
                self.fuel.get_or_create(&twin).inc_by(trace.fuel_consumed);
            }
            for event in &attempt.primary.events {
                match &event.call {
                    HostCall::Gate { waited_micros, decision, .. } => {
                        self.gate_wait.observe(*waited_micros as f64 / 1e6);
                        self.decisions.get_or_create(&Decision { decision: decision.to_string() }).inc();
                        if *decision == GateVerdict::Divert {
                            let reason = attempt
                                .gate_prediction
                                .as_ref()
                                .and_then(|p| p.reasons.iter().find(|r| r.rule != MODEL_REASON).or(p.reasons.first()))
                                .map_or("unknown", |r| r.rule.as_str());
                            self.diversions.get_or_create(&label(|reason| Reason { reason }, reason)).inc();
                        }
                    }
                    HostCall::Grant { resource, .. } => {
                        self.grants.get_or_create(&label(|resource| Resource { resource }, resource)).inc();
                    }
                    _ => {}
                }
            }
        }
    }

    /// How each stream's predictions have fared, as the runtime counts
    /// them now (set at each scrape).
    pub fn predictions(&self, streams: impl IntoIterator<Item = (String, PredictionStats)>) {
        for (stream, stats) in streams {
            for (kind, count) in [
                ("predicted", stats.predicted),
                ("confirmed", stats.confirmed),
                ("corrected", stats.corrected),
                ("retracted", stats.retracted),
                ("not_emitted", stats.not_emitted),
                ("unpredicted", stats.unpredicted),
            ] {
                let labels = PredictionLabels { stream: stream.clone(), kind: kind.to_string() };
                self.stream_predictions.get_or_create(&labels).set(i64::try_from(count).unwrap_or(i64::MAX));
            }
            let labels = Stream { stream };
            if let Some(rate) = stats.mismatch_rate() {
                self.prediction_mismatch.get_or_create(&labels).set(rate);
            }
            if let Some(lead) = stats.mean_lead_micros() {
                self.prediction_lead.get_or_create(&labels).set(lead as f64 / 1e6);
            }
        }
    }

    /// A webhook delivery attempt ended so (or an event was `parked`).
    pub fn webhook_attempt(&self, webhook: &str, outcome: &str) {
        let labels = WebhookLabels { webhook: webhook.to_string(), outcome: outcome.to_string() };
        self.webhook_attempts.get_or_create(&labels).inc();
    }

    /// A webhook endpoint's breaker is in `state` (its gauge value).
    pub fn webhook_breaker(&self, webhook: &str, state: i64) {
        self.webhook_breakers.get_or_create(&label(|webhook| Webhook { webhook }, webhook)).set(state);
    }

    /// The hosts' breakers as the runtime has them now (set at each scrape).
    pub fn breakers(&self, states: impl IntoIterator<Item = (String, i64)>) {
        for (host, state) in states {
            self.breakers.get_or_create(&Host { host }).set(state);
        }
    }

    /// The server's connections as counted now (set at each scrape).
    pub fn connections(&self, counts: crate::server::ConnectionCounts) {
        self.connections_open.set(i64::try_from(counts.open).unwrap_or(i64::MAX));
        for (reason, total) in [("refused", counts.refused), ("timed_out", counts.timed_out), ("idle", counts.idle)] {
            let counter = self.connections_closed.get_or_create(&label(|reason| Reason { reason }, reason));
            // The server counts; the registry's counter follows it.
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// The tenant's quota use as counted now (set at each scrape).
    pub fn quota(&self, usage: &crate::quota::QuotaUsage) {
        self.quota_in_flight.set(i64::from(usage.in_flight));
        for (quota, total) in [("rate", usage.refused_for_rate), ("in_flight", usage.refused_for_in_flight)] {
            let counter = self.quota_refused.get_or_create(&label(|quota| Quota { quota }, quota));
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
