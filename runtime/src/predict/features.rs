//! The feature schema: what the predictor knows about an attempt.
//!
//! The schema is versioned. A model trained on one version is refused by a
//! runtime of another, so the names and their order below are a contract:
//! add a feature, bump [`SCHEMA_VERSION`]. `docs/features.md` describes each.

use crate::trace::{HostCall, HttpOutcome, Trace, TraceEvent};
use crate::vocab::FailureKind;
use serde::{Deserialize, Serialize};

/// The version of the feature schema.
///
/// Version 2 added what the request carries (`input_bytes`,
/// `outbound_request_bytes`) and rate limits (`rate_limited_share`,
/// `rate_limit_load`, `rate_limit_wait_ms`). Version 3 added the circuit
/// breakers' state (`breaker_state`).
pub const SCHEMA_VERSION: u32 = 3;

macro_rules! feature_schema {
    ($( $(#[doc = $doc:literal])* $name:ident ),+ $(,)?) => {
        /// The features of one attempt, computed from its mirror's trace.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
        pub struct Features {
            $( $(#[doc = $doc])* pub $name: f32, )+
        }

        /// The names of the features, in the order of [`Features::to_array`].
        pub const FEATURE_NAMES: &[&str] = &[$( stringify!($name) ),+];

        impl Features {
            /// The values in the order of [`FEATURE_NAMES`].
            pub fn to_array(&self) -> Vec<f32> {
                vec![$( self.$name ),+]
            }

            /// Features from values in the order of [`FEATURE_NAMES`];
            /// `None` unless there is exactly one value per feature.
            pub fn from_slice(values: &[f32]) -> Option<Self> {
                let mut values = values.iter().copied();
                let features = Self { $( $name: values.next()?, )+ };
                values.next().is_none().then_some(features)
            }

            /// The value of the feature called `name`.
            pub fn get(&self, name: &str) -> Option<f32> {
                match name {
                    $( stringify!($name) => Some(self.$name), )+
                    _ => None,
                }
            }
        }
    };
}

feature_schema! {
    /// Keys the mirror read that another transaction has changed since the
    /// snapshot, or is about to change.
    contended_keys,
    /// Validation issues the guest reported.
    validation_errors,
    /// The slowest outbound call seen or predicted, over the policy's timeout
    /// (1.0 or more predicts a timeout).
    outbound_latency_ratio,
    /// 1 if an outbound call is predicted to time out, else 0.
    predicted_timeout,
    /// The worst recent error rate among the endpoints called, in `[0, 1]`.
    endpoint_error_rate,
    /// Fuel burnt over the fuel limit (1.0 means the limit was hit).
    fuel_ratio,
    /// Peak memory over the memory limit.
    memory_ratio,
    /// How far the attempt strays from its path's baseline, in standard deviations.
    baseline_deviation,
    /// The attempt number, from 1.
    attempt,
    /// The path's recent failure rate, in `[0, 1]`.
    path_failure_rate,
    /// Unsafe outbound calls the mirror made (not sent).
    unsafe_calls,
    /// 1 if the mirror itself failed, else 0.
    mirror_failed,
    /// The size of the transaction's input, in bytes.
    input_bytes,
    /// The largest outbound request body the mirror sent or would send, in bytes.
    outbound_request_bytes,
    /// The largest recent share of `429 Too Many Requests` among the
    /// endpoints called, in `[0, 1]`.
    rate_limited_share,
    /// The highest load among the endpoints called: requests in the rate
    /// window, this one included, over the limit learnt from their 429s
    /// (above 1 predicts a 429; 0 while no limit is known).
    rate_limit_load,
    /// The longest wait, in milliseconds, until an endpoint called takes
    /// the request: what its `Retry-After` asked, or at its limit, until
    /// the window frees.
    rate_limit_wait_ms,
    /// The worst state of the circuit breakers of the hosts called, on this
    /// node: 0 closed (or no breaker), 0.5 half-open (a trial is due), 1
    /// open (the call is short-circuited).
    breaker_state,
}

/// The limits an attempt runs under, as far as features compare with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptLimits {
    /// The fuel one attempt may burn.
    pub fuel: u64,
    /// The memory one instance may grow to, in MiB.
    pub memory_mib: u64,
    /// The time one outbound request may take, in milliseconds.
    pub outbound_timeout_ms: u64,
}

/// What the predictor knows besides the trace.
pub struct FeatureContext<'a> {
    /// The attempt's limits.
    pub limits: AttemptLimits,
    /// The attempt number, from 1.
    pub attempt: u32,
    /// Whether a key read from the snapshot at a version (0: absent) is contended.
    pub contended: &'a dyn Fn(&str, &str, u64) -> bool,
    /// What is known of an endpoint, if anything, for a request of this
    /// body size (bytes), if known, from this transaction.
    pub endpoint: &'a EndpointLookup<'a>,
    /// How far `(fuel, host calls, duration µs)` are from the path's
    /// baseline, in standard deviations, if there is a baseline.
    pub deviation: &'a dyn Fn(u64, usize, u64) -> Option<f32>,
    /// The path's recent failure rate.
    pub path_failure_rate: f32,
    /// The size of the transaction's input, in bytes.
    pub input_bytes: u64,
}

impl std::fmt::Debug for FeatureContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureContext").field("attempt", &self.attempt).finish_non_exhaustive()
    }
}

/// The endpoint of a URL, as the endpoint statistics key it: method, scheme,
/// the host in its one spelling with its port, and the path, without the
/// query (see `vocab/hosts.rs`).
pub fn endpoint_key(method: &str, url: &str) -> String {
    match url.parse::<http::Uri>().ok().and_then(|uri| crate::vocab::endpoint_name(method, &uri)) {
        Some(name) => name,
        // Not a URL the allow-list could judge: it was refused, and is its
        // own endpoint.
        None => format!("{method} {}", url.split(['?', '#']).next().unwrap_or(url)),
    }
}

/// What is known of an endpoint: `(endpoint, request bytes)` to what it
/// has shown lately, if it was ever called.
pub type EndpointLookup<'a> = dyn Fn(&str, Option<u64>) -> Option<EndpointView> + 'a;

/// What an endpoint has shown lately, for one request to it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EndpointView {
    /// Its latency for a request like this one, in milliseconds.
    pub latency_ms: f32,
    /// Its error rate (no answer or 5xx) for a request like this one, in `[0, 1]`.
    pub error_rate: f32,
    /// The share of its answers that were 429, in `[0, 1]`.
    pub rate_limited: f32,
    /// Requests in its rate window with this one, over its learnt limit (0: none known).
    pub load: f32,
    /// How long until it takes the request, in milliseconds.
    pub wait_ms: f32,
    /// The request goes as a probe: its endpoint's calls (or those under
    /// one of its input conditions) are being held back, and this one is
    /// let through to measure it again, like a half-open circuit
    /// breaker's trial. The gate passes it whatever it scores.
    pub probe: bool,
    /// Its host's circuit breaker: 0 closed (or none), 0.5 half-open, 1 open.
    pub breaker: f32,
}

/// What is known of an instance besides its host calls.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TraceTotals {
    /// Fuel burnt so far.
    pub fuel_consumed: u64,
    /// The largest linear memory so far, in bytes.
    pub memory_peak_bytes: u64,
    /// The guest's host calls so far (see [`HostCall::is_guest_call`]).
    pub host_calls: usize,
    /// Wall time so far, in microseconds.
    pub duration_micros: u64,
    /// How the instance failed, if it has ended and failed.
    pub failure: Option<FailureKind>,
    /// Whether the instance has ended. Until then, fuel and memory are what
    /// it used so far, and the deviation from the baseline is not judged.
    pub complete: bool,
}

impl TraceTotals {
    /// The totals of a finished trace.
    pub fn of(trace: &Trace) -> Self {
        Self {
            fuel_consumed: trace.fuel_consumed,
            memory_peak_bytes: trace.memory_peak_bytes,
            host_calls: trace.events.iter().filter(|event| event.call.is_guest_call()).count(),
            duration_micros: trace.duration_micros,
            failure: trace.failure,
            complete: true,
        }
    }
}

/// The features of a trace, computed as it grows: each host call is folded
/// in once, when it is first seen ([`FeatureAccumulator::observe`]), and
/// [`FeatureAccumulator::features`] adds what depends on the instance as a
/// whole. The effect gate keeps one per attempt, so scoring at the n-th
/// unsafe call costs only the calls made since the last score.
#[derive(Debug, Clone, Default)]
pub struct FeatureAccumulator {
    seen: usize,
    /// The features that come from host calls.
    from_calls: Features,
    /// A call goes as a probe (see [`EndpointView::probe`]).
    probing: bool,
}

impl FeatureAccumulator {
    /// How many host calls have been folded in.
    pub fn seen(&self) -> usize {
        self.seen
    }

    /// Whether a call folded in goes as a probe of its endpoint.
    pub fn probing(&self) -> bool {
        self.probing
    }

    /// Folds in host calls made since the last call, in any order.
    pub fn observe(&mut self, events: &[TraceEvent], context: &FeatureContext<'_>) {
        let timeout_ms = context.limits.outbound_timeout_ms.max(1) as f32;
        let features = &mut self.from_calls;
        for event in events {
            match &event.call {
                // A read of the store, not of the instance's own write.
                HostCall::KvGet { namespace, key, version: Some(version) }
                    if (context.contended)(namespace, key, *version) =>
                {
                    features.contended_keys += 1.0;
                }
                HostCall::Validation { .. } => features.validation_errors += 1.0,
                HostCall::Http { method, url, safe, request_bytes, outcome } => {
                    let endpoint = endpoint_key(method, url);
                    let known = (context.endpoint)(&endpoint, *request_bytes);
                    // A call the mirror really made is a fresh measurement of
                    // its endpoint; for a stubbed one, the history speaks.
                    let (latency_ms, error, limited) = match outcome {
                        HttpOutcome::Answered { status, .. } => (
                            Some(event.duration_micros as f32 / 1000.0),
                            Some(if *status >= 500 { 1.0 } else { 0.0 }),
                            Some(if *status == 429 { 1.0 } else { 0.0 }),
                        ),
                        HttpOutcome::Failed { .. } => (Some(timeout_ms), Some(1.0), None),
                        // Not sent because its host keeps failing: the
                        // primary's call will fail the same way.
                        HttpOutcome::ShortCircuited { .. } => {
                            features.breaker_state = 1.0;
                            (None, Some(1.0), None)
                        }
                        _ => (
                            known.map(|view| view.latency_ms),
                            known.map(|view| view.error_rate),
                            known.map(|view| view.rate_limited),
                        ),
                    };
                    if let Some(latency) = latency_ms {
                        features.outbound_latency_ratio = features.outbound_latency_ratio.max(latency / timeout_ms);
                    }
                    if let Some(error) = error {
                        features.endpoint_error_rate = features.endpoint_error_rate.max(error);
                    }
                    if let Some(limited) = limited {
                        features.rate_limited_share = features.rate_limited_share.max(limited);
                    }
                    if let Some(view) = known {
                        features.rate_limit_load = features.rate_limit_load.max(view.load);
                        features.rate_limit_wait_ms = features.rate_limit_wait_ms.max(view.wait_ms);
                        features.breaker_state = features.breaker_state.max(view.breaker);
                        self.probing |= view.probe;
                    }
                    if let Some(bytes) = request_bytes {
                        features.outbound_request_bytes = features.outbound_request_bytes.max(*bytes as f32);
                    }
                    if !safe {
                        features.unsafe_calls += 1.0;
                    }
                }
                _ => {}
            }
        }
        self.seen += events.len();
    }

    /// The features so far, given what is known of the instance as a whole.
    pub fn features(&self, totals: &TraceTotals, context: &FeatureContext<'_>) -> Features {
        let limits = context.limits;
        let mut features = Features {
            attempt: context.attempt as f32,
            path_failure_rate: context.path_failure_rate,
            input_bytes: context.input_bytes as f32,
            ..self.from_calls
        };
        features.predicted_timeout = if features.outbound_latency_ratio >= 1.0 { 1.0 } else { 0.0 };
        features.fuel_ratio = totals.fuel_consumed as f32 / limits.fuel.max(1) as f32;
        features.memory_ratio = totals.memory_peak_bytes as f32 / (limits.memory_mib.max(1) << 20) as f32;
        if totals.failure == Some(FailureKind::MemoryLimit) {
            // The refused growth is not in the peak; it asked for the limit or more.
            features.memory_ratio = features.memory_ratio.max(1.0);
        }
        // A run cut short is always far from a baseline of whole runs.
        features.baseline_deviation = if totals.complete {
            (context.deviation)(totals.fuel_consumed, totals.host_calls, totals.duration_micros).unwrap_or(0.0)
        } else {
            0.0
        };
        features.mirror_failed = if totals.failure.is_some() { 1.0 } else { 0.0 };
        features
    }
}

impl Features {
    /// Computes the features of a whole trace at once.
    pub fn from_trace(trace: &Trace, context: &FeatureContext<'_>) -> Self {
        let mut accumulator = FeatureAccumulator::default();
        accumulator.observe(&trace.events, context);
        accumulator.features(&TraceTotals::of(trace), context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::TraceEvent;
    use crate::vocab::Role;

    fn trace(events: Vec<HostCall>) -> Trace {
        Trace {
            role: Role::Mirror,
            events: events
                .into_iter()
                .map(|call| TraceEvent { at_micros: 0, duration_micros: 2_500_000, call })
                .collect(),
            fuel_consumed: 600,
            memory_peak_bytes: 32 << 20,
            duration_micros: 10,
            ended: "returned 2 bytes".into(),
            output: Some("{}".into()),
            failure: None,
        }
    }

    #[test]
    fn schema_names_match_the_struct() {
        let features = Features::default();
        assert_eq!(FEATURE_NAMES.len(), features.to_array().len());
        for name in FEATURE_NAMES {
            assert_eq!(features.get(name), Some(0.0), "{name}");
        }
        assert_eq!(features.get("no_such_feature"), None);
    }

    #[test]
    fn the_training_pipeline_knows_the_same_schema() {
        let text = include_str!("../../../models/feature_schema.json");
        let schema: serde_json::Value = serde_json::from_str(text).expect("JSON");
        assert_eq!(schema["version"], SCHEMA_VERSION, "models/feature_schema.json has another version");
        let names: Vec<&str> =
            schema["features"].as_array().expect("a list").iter().filter_map(|n| n.as_str()).collect();
        assert_eq!(names, FEATURE_NAMES, "models/feature_schema.json lists other features");
    }

    #[test]
    fn a_call_short_circuited_by_its_breaker_says_the_breaker_is_open() {
        let t = trace(vec![HostCall::Http {
            method: "POST".into(),
            url: "http://h/charge".into(),
            safe: false,
            request_bytes: Some(80),
            outcome: HttpOutcome::ShortCircuited { host: "h:80".into(), opens_in_ms: 500 },
        }]);
        let context = FeatureContext {
            limits: AttemptLimits { fuel: 1000, memory_mib: 64, outbound_timeout_ms: 2000 },
            attempt: 1,
            contended: &|_, _, _| false,
            endpoint: &|_, _| None,
            deviation: &|_, _, _| None,
            path_failure_rate: 0.0,
            input_bytes: 0,
        };
        let f = Features::from_trace(&t, &context);
        assert_eq!((f.breaker_state, f.endpoint_error_rate), (1.0, 1.0));
    }

    #[test]
    fn features_come_from_the_trace_and_the_context() {
        let limits = AttemptLimits { fuel: 1000, memory_mib: 64, outbound_timeout_ms: 2000 };
        let t = trace(vec![
            HostCall::KvGet { namespace: "a".into(), key: "hot".into(), version: Some(3) },
            HostCall::KvGet { namespace: "a".into(), key: "cold".into(), version: Some(3) },
            HostCall::Validation { field: "x".into(), message: "bad".into() },
            HostCall::Http {
                method: "GET".into(),
                url: "http://h/slow?q=1".into(),
                safe: true,
                request_bytes: None,
                outcome: HttpOutcome::Answered { status: 200, response_bytes: 2, retry_after_ms: None },
            },
            HostCall::Http {
                method: "POST".into(),
                url: "http://h/charge".into(),
                safe: false,
                request_bytes: Some(80),
                outcome: HttpOutcome::Stubbed { status: 201, source: "policy".into() },
            },
        ]);
        let context = FeatureContext {
            limits,
            attempt: 2,
            contended: &|_, key, _| key == "hot",
            endpoint: &|endpoint, _| {
                (endpoint == "POST http://h:80/charge").then_some(EndpointView {
                    latency_ms: 100.0,
                    error_rate: 0.5,
                    rate_limited: 0.25,
                    load: 1.2,
                    wait_ms: 300.0,
                    probe: true,
                    breaker: 0.5,
                })
            },
            deviation: &|_, _, _| Some(1.5),
            path_failure_rate: 0.25,
            input_bytes: 42,
        };
        let f = Features::from_trace(&t, &context);
        assert_eq!(f.contended_keys, 1.0);
        assert_eq!(f.validation_errors, 1.0);
        assert_eq!(f.outbound_latency_ratio, 1.25, "2.5 s measured against a 2 s timeout");
        assert_eq!(f.predicted_timeout, 1.0);
        assert_eq!(f.endpoint_error_rate, 0.5);
        assert_eq!(f.unsafe_calls, 1.0);
        assert_eq!(f.fuel_ratio, 0.6);
        assert_eq!(f.memory_ratio, 0.5);
        assert_eq!(f.baseline_deviation, 1.5);
        assert_eq!(f.attempt, 2.0);
        assert_eq!(f.path_failure_rate, 0.25);
        assert_eq!(f.mirror_failed, 0.0);
        assert_eq!(f.input_bytes, 42.0);
        assert_eq!(f.outbound_request_bytes, 80.0);
        assert_eq!((f.rate_limited_share, f.rate_limit_load, f.rate_limit_wait_ms), (0.25, 1.2, 300.0));
        assert_eq!(f.breaker_state, 0.5, "the half-open breaker of the charge's host");
        assert_eq!(endpoint_key("GET", "http://h/slow?q=1"), "GET http://h:80/slow");

        // Folding the calls in as they come gives the same features.
        let mut accumulator = FeatureAccumulator::default();
        for chunk in t.events.chunks(2) {
            accumulator.observe(chunk, &context);
        }
        assert_eq!(accumulator.seen(), t.events.len());
        assert_eq!(accumulator.features(&TraceTotals::of(&t), &context), f);
        assert!(accumulator.probing(), "the stubbed charge goes as a probe");
        assert!(!FeatureAccumulator::default().probing());
    }
}
