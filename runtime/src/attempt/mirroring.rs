//! Adaptive mirroring: a mirror only where its prediction can matter.
//!
//! With `[mirror] mode = "always"` (the default) every primary has its
//! mirror. With `mode = "adaptive"` the runtime first asks what it already
//! knows, the *prior*, and runs the mirror only when that is uncertain:
//!
//! - a retry: an earlier attempt of the transaction failed;
//! - a path and caller with fewer than `min_history` outcomes;
//! - a path and caller whose recent rate of rescuable failures (those the
//!   predictor can act on: see `rescuable`) is at least `uncertain_from`;
//! - a path whose recent primaries called an endpoint whose recent error
//!   rate is at least `uncertain_from`.
//!
//! Whatever the prior, a `sample` of transactions, chosen from their id, is
//! mirrored, so that a prior gone wrong is noticed. An attempt without its
//! mirror runs exactly as with `failure_prediction_enabled = false`; if it
//! fails as the mirror could have prevented (fuel, a dependency down…) and
//! sent nothing unsafe, it gets a second look: one more attempt, mirrored,
//! beyond what the retry policy allows.
//!
//! The prior learns only from transactions whose policy mirrors adaptively:
//! under `always`, keeping it would be work for nothing.

use crate::policy::{MirrorMode, Policy};
use crate::predict::history::EndpointHealth;
use crate::trace::{HostCall, TraceEvent};
use crate::vocab::FailureKind;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Whether an attempt falls in a share (of exploration, of mirroring): a
/// uniform draw from the transaction id and the attempt number, so a
/// replayed workload draws the same attempts.
pub(crate) fn sampled(transaction_id: &str, attempt: u32, share: f32) -> bool {
    share > 0.0 && draw(transaction_id, attempt, b"") < f64::from(share)
}

/// A uniform draw in `[0, 1)` from the transaction id, the attempt number
/// and what it is drawn for (`salt`), so that draws for different
/// purposes are independent and a replayed workload draws alike.
pub(crate) fn draw(transaction_id: &str, attempt: u32, salt: &[u8]) -> f64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(transaction_id.as_bytes()).update(&attempt.to_le_bytes()).update(salt);
    let mut bytes = [0_u8; 8];
    bytes.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    // The top 53 bits, so the value is exact in an f64 and below 1.
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1_u64 << 53) as f64
}

/// How many (module, path, caller) entries are remembered before forgetting all.
const MAX_ENTRIES: usize = 4096;
/// How many endpoints are remembered per path.
const ENDPOINTS_PER_PATH: usize = 8;
/// The weight of the newest outcome in a failure rate.
const ALPHA: f64 = 0.05;

/// Why an attempt has its mirror, or not.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MirrorChoice {
    /// Prediction is off for the policy.
    Off,
    /// `mode = "always"`.
    Always,
    /// Adaptive, and this attempt is mirrored for a reason.
    Uncertain(Uncertainty),
    /// Adaptive, and the prior is confident: no mirror.
    Confident,
}

/// What made the prior uncertain.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Uncertainty {
    Retry,
    Sample,
    FewOutcomes(u64),
    FailureRate(f64),
    Endpoint(String, f32),
}

impl MirrorChoice {
    /// Whether the mirror runs.
    pub(crate) fn mirrored(&self) -> bool {
        matches!(self, Self::Always | Self::Uncertain(_))
    }
}

#[derive(Debug, Default)]
struct CallerStats {
    outcomes: u64,
    /// Rate of rescuable failures, exponentially weighted.
    failure_rate: f64,
}

/// What the runtime knows before a transaction runs.
#[derive(Debug, Default)]
pub(crate) struct MirrorPrior {
    callers: Mutex<HashMap<(String, String, String), CallerStats>>,
    endpoints: Mutex<HashMap<(String, String), Vec<String>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether the predictor could have done something about a failure: a
/// dependency down or slow, a limit the mirror would have shown (fuel,
/// memory, time), an output the success criteria refuse, or its own
/// diversion. Invalid input and business refusals fail however the attempt
/// runs; a conflict is settled by the retry (which is mirrored); a cancelled
/// hedge is no failure of the path.
fn rescuable(kind: FailureKind) -> bool {
    matches!(
        kind,
        FailureKind::Unavailable
            | FailureKind::FuelExhausted
            | FailureKind::MemoryLimit
            | FailureKind::WallTimeExceeded
            | FailureKind::SuccessCriteria
            | FailureKind::Diverted
            | FailureKind::PredictedFailure
    )
}

/// The endpoint key of `EndpointHealth` for a request of the trace.
fn endpoint_of(method: &str, url: &str) -> Option<String> {
    crate::vocab::endpoint_name(method, &url.parse().ok()?)
}

/// Whether a failure of an attempt that adaptive mirroring ran without its
/// mirror earns a second attempt, with the mirror, whatever the retry
/// policy says (the caller checks that nothing unsafe was sent).
pub(crate) fn second_look(policy: &Policy, kind: FailureKind) -> bool {
    policy.failure_prediction_enabled && policy.mirror.mode == MirrorMode::Adaptive && rescuable(kind)
}

impl MirrorPrior {
    /// Decides whether attempt `number` of `transaction_id` runs its mirror.
    #[allow(clippy::too_many_arguments, reason = "the prior's inputs, named")]
    pub(crate) fn choose(
        &self,
        policy: &Policy,
        (module, path, caller): (&str, &str, &str),
        transaction_id: &str,
        number: u32,
        health: &EndpointHealth,
    ) -> MirrorChoice {
        if !policy.failure_prediction_enabled {
            return MirrorChoice::Off;
        }
        let settings = &policy.mirror;
        if settings.mode == MirrorMode::Always {
            return MirrorChoice::Always;
        }
        if number > 1 {
            return MirrorChoice::Uncertain(Uncertainty::Retry);
        }
        if sampled(transaction_id, 0, settings.sample) {
            return MirrorChoice::Uncertain(Uncertainty::Sample);
        }
        let uncertain_from = f64::from(settings.uncertain_from);
        {
            let callers = lock(&self.callers);
            let stats = callers.get(&(module.to_string(), path.to_string(), caller.to_string()));
            let outcomes = stats.map_or(0, |s| s.outcomes);
            if outcomes < u64::from(settings.min_history) {
                return MirrorChoice::Uncertain(Uncertainty::FewOutcomes(outcomes));
            }
            if let Some(stats) = stats
                && stats.failure_rate >= uncertain_from
            {
                return MirrorChoice::Uncertain(Uncertainty::FailureRate(stats.failure_rate));
            }
        }
        let endpoints = lock(&self.endpoints);
        let evidence = policy.prediction.evidence();
        for endpoint in endpoints.get(&(module.to_string(), path.to_string())).into_iter().flatten() {
            let any = crate::predict::history::Request::default();
            if let Some(view) = health.get(endpoint, &any, &evidence, std::time::Instant::now())
                && f64::from(view.error_rate) >= uncertain_from
            {
                return MirrorChoice::Uncertain(Uncertainty::Endpoint(endpoint.clone(), view.error_rate));
            }
        }
        MirrorChoice::Confident
    }

    /// Learns from an attempt's end: its failure kind, if it failed, and the
    /// endpoints its primary called.
    pub(crate) fn observe(
        &self,
        (module, path, caller): (&str, &str, &str),
        failure: Option<FailureKind>,
        primary_events: &[TraceEvent],
    ) {
        {
            let mut callers = lock(&self.callers);
            let key = (module.to_string(), path.to_string(), caller.to_string());
            if callers.len() >= MAX_ENTRIES && !callers.contains_key(&key) {
                callers.clear();
            }
            let stats = callers.entry(key).or_default();
            let failed = if failure.is_some_and(rescuable) { 1.0 } else { 0.0 };
            stats.failure_rate =
                if stats.outcomes == 0 { failed } else { stats.failure_rate * (1.0 - ALPHA) + failed * ALPHA };
            stats.outcomes += 1;
        }
        let called = primary_events.iter().filter_map(|event| match &event.call {
            HostCall::Http { method, url, .. } => endpoint_of(method, url),
            _ => None,
        });
        let mut endpoints = lock(&self.endpoints);
        let key = (module.to_string(), path.to_string());
        if endpoints.len() >= MAX_ENTRIES && !endpoints.contains_key(&key) {
            endpoints.clear();
        }
        let known = endpoints.entry(key).or_default();
        for endpoint in called {
            if !known.contains(&endpoint) {
                if known.len() >= ENDPOINTS_PER_PATH {
                    known.remove(0);
                }
                known.push(endpoint);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn adaptive(extra: &str) -> Policy {
        Policy::parse(&format!("[mirror]\nmode = \"adaptive\"\n{extra}"), Path::new("p.toml")).expect("valid policy")
    }

    fn calling(url: &str) -> Vec<TraceEvent> {
        vec![TraceEvent {
            at_micros: 0,
            duration_micros: 0,
            call: HostCall::Http {
                method: "POST".into(),
                url: url.into(),
                safe: false,
                request_bytes: None,
                outcome: crate::trace::HttpOutcome::Failed { error: "refused".into() },
            },
        }]
    }

    #[test]
    fn the_prior_is_trusted_only_after_enough_quiet_history() {
        let prior = MirrorPrior::default();
        let health = EndpointHealth::default();
        let policy = adaptive("min_history = 3\nsample = 0");
        let who = ("m", "charge", "shop");
        let choose = |number| prior.choose(&policy, who, "tx", number, &health);
        assert_eq!(choose(1), MirrorChoice::Uncertain(Uncertainty::FewOutcomes(0)));
        for _ in 0..3 {
            prior.observe(who, None, &[]);
        }
        assert_eq!(choose(1), MirrorChoice::Confident);
        assert_eq!(choose(2), MirrorChoice::Uncertain(Uncertainty::Retry), "a retry is always mirrored");
        assert_eq!(
            prior.choose(&policy, ("m", "charge", "another caller"), "tx", 1, &health),
            MirrorChoice::Uncertain(Uncertainty::FewOutcomes(0)),
            "each caller has its own history"
        );

        // Invalid input says nothing about the next transaction; a dependency down does.
        prior.observe(who, Some(FailureKind::Validation), &[]);
        assert_eq!(choose(1), MirrorChoice::Confident);
        prior.observe(who, Some(FailureKind::Unavailable), &[]);
        assert!(matches!(choose(1), MirrorChoice::Uncertain(Uncertainty::FailureRate(_))));

        let always = Policy::default();
        assert_eq!(prior.choose(&always, who, "tx", 1, &health), MirrorChoice::Always);
        let off = Policy::parse("failure_prediction_enabled = false", Path::new("p.toml")).expect("valid");
        assert_eq!(prior.choose(&off, who, "tx", 1, &health), MirrorChoice::Off);
    }

    #[test]
    fn a_failing_endpoint_of_the_path_makes_the_prior_uncertain() {
        let prior = MirrorPrior::default();
        let health = EndpointHealth::default();
        let policy = adaptive("min_history = 1\nsample = 0");
        let who = ("m", "charge", "shop");
        prior.observe(who, None, &calling("http://127.0.0.1:9/charge?x=1"));
        assert_eq!(prior.choose(&policy, who, "tx", 1, &health), MirrorChoice::Confident);
        let now = std::time::Instant::now();
        let failed = crate::predict::history::Exchange {
            sent_at: now,
            request_bytes: None,
            latency_ms: 5.0,
            status: None,
            retry_after: None,
            conditions: &[],
        };
        health.observe("POST http://127.0.0.1:9/charge", failed, &policy.prediction.evidence(), now);
        assert!(matches!(
            prior.choose(&policy, who, "tx", 1, &health),
            MirrorChoice::Uncertain(Uncertainty::Endpoint(endpoint, _)) if endpoint == "POST http://127.0.0.1:9/charge"
        ));
    }

    #[test]
    fn a_sample_is_mirrored_whatever_the_prior() {
        let prior = MirrorPrior::default();
        let health = EndpointHealth::default();
        let policy = adaptive("min_history = 0\nsample = 0.25");
        let mirrored = (0..4000)
            .filter(|i| prior.choose(&policy, ("m", "p", "c"), &format!("tx-{i}"), 1, &health).mirrored())
            .count();
        assert!((800..1200).contains(&mirrored), "{mirrored} of 4000 sampled at 25%");
    }
}
