//! What the runtime has learnt from earlier transactions, for the predictor:
//! per endpoint, recent latency and error rate (per request size and per
//! input condition too) and its rate limit; and the averages it is learnt
//! with, which `paths.rs` (each path's baseline and failure rate) shares.
//!
//! Statistics live in memory and start empty at each start of the runtime.

use super::features::EndpointView;
use super::hold::Hold;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Weight of the newest sample in the moving averages.
const ALPHA: f64 = 0.2;
/// Samples a baseline needs before it judges deviation.
const MIN_BASELINE_SAMPLES: u64 = 5;
/// How many endpoints (or paths, see `predict/paths.rs`) are remembered;
/// beyond it, they start again.
pub(crate) const MAX_ENTRIES: usize = 4096;

/// An exponentially weighted moving average.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Ewma {
    value: Option<f64>,
}

impl Ewma {
    pub(crate) fn add(&mut self, sample: f64) {
        self.value = Some(match self.value {
            Some(value) => value + ALPHA * (sample - value),
            None => sample,
        });
    }

    pub(crate) fn get(&self) -> Option<f64> {
        self.value
    }

    /// Multiplies the average by `factor` (evidence fading with time).
    pub(crate) fn scale(&mut self, factor: f64) {
        if let Some(value) = &mut self.value {
            *value *= factor;
        }
    }
}

/// How what is known of an endpoint ages, as a policy sets it
/// (`prediction.endpoint_half_life_ms`, `prediction.endpoint_probe_interval_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Evidence {
    /// While nothing is asked of an endpoint, its error rate and latency
    /// halve every this long. Without fading, an endpoint that stopped
    /// being called for reasons of its own would look as it last did for
    /// ever.
    pub(crate) half_life: Duration,
    /// While an endpoint's calls are held back, one is let through this
    /// often to measure it again.
    pub(crate) probe_interval: Duration,
}

impl Evidence {
    /// What share of the evidence is left after `elapsed`.
    fn fade(&self, elapsed: Duration) -> f64 {
        0.5_f64.powf(elapsed.as_secs_f64() / self.half_life.as_secs_f64().max(1e-3))
    }
}

/// Running mean and variance (Welford's method).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Running {
    count: u64,
    mean: f64,
    m2: f64,
}

impl Running {
    /// Samples seen.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// Their mean.
    pub(crate) fn mean(&self) -> f64 {
        self.mean
    }

    pub(crate) fn add(&mut self, sample: f64) {
        self.count += 1;
        let delta = sample - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (sample - self.mean);
    }

    /// How many standard deviations `sample` is from the mean, once there
    /// are enough samples.
    pub(crate) fn z_score(&self, sample: f64) -> Option<f64> {
        if self.count < MIN_BASELINE_SAMPLES {
            return None;
        }
        let std = (self.m2 / (self.count - 1) as f64).sqrt();
        // A perfectly stable baseline: any change is a large deviation, none is none.
        let std = if std > 0.0 { std } else { self.mean.abs().max(1.0) * 0.01 };
        Some(((sample - self.mean) / std).abs())
    }
}

/// What is known of an endpoint, if anything.
pub(crate) type Known = Option<EndpointView>;

/// How many request-size classes an endpoint's latency is learnt for.
const SIZE_CLASSES: usize = 8;
/// How many input conditions one endpoint (or path) keeps statistics for; beyond it,
/// they start again (a policy that declares a field with thousands of
/// values learns nothing useful per value, and must not grow without end).
pub(crate) const MAX_CONDITIONS: usize = 64;
/// Answers (or a path's attempts) a condition needs before it speaks for its requests.
pub(crate) const MIN_CONDITION_SAMPLES: u32 = 3;
/// The window an endpoint's request rate is counted over. A limit learnt
/// from 429s is a number of requests in this window.
pub(crate) const RATE_WINDOW: Duration = Duration::from_secs(1);
/// A limit learnt from a 429 is believed less the longer no other 429
/// confirms it: it grows by this factor per [`RATE_WINDOW`] since. Calls
/// held to a limit never exceed it, so a limit learnt wrongly (from the
/// first 429 of a spent quota, at whatever rate traffic had then) would
/// hold calls back for ever; growing, it gets out of the way, and a real
/// one is soon exceeded, answered 429 and learnt again.
const LIMIT_GROWTH: f64 = 1.25;
/// The most sends remembered per endpoint for its rate.
const MAX_RATE_SAMPLES: usize = 1024;

/// The size class of a request body: under 1 KiB, then one class per
/// factor of 4 (1–4 KiB, 4–16 KiB, …), the last one open-ended. A service
/// whose latency grows with what it is sent is predicted per class.
fn size_class(bytes: u64) -> usize {
    let kib = bytes / 1024;
    if kib == 0 {
        return 0;
    }
    let class = 1 + (63 - kib.leading_zeros()) / 2;
    usize::try_from(class).map_or(SIZE_CLASSES - 1, |class| class.min(SIZE_CLASSES - 1))
}

/// Latency and failures of one endpoint's requests that share an input
/// condition (such as `currency=EUR`; see `predict/inputs.rs`).
#[derive(Debug, Clone, Copy)]
struct Conditioned {
    latency_ms: Ewma,
    error_rate: Ewma,
    samples: u32,
    /// Whether its requests are held back while others go.
    hold: Hold,
}

impl Conditioned {
    fn new(now: Instant) -> Self {
        Self { latency_ms: Ewma::default(), error_rate: Ewma::default(), samples: 0, hold: Hold::new(now) }
    }

    /// Forgets what was known of an outage under the condition, keeping
    /// the count of its answers (which says it is known) and its hold.
    fn recovered(&mut self) {
        self.latency_ms = Ewma::default();
        self.error_rate = Ewma::default();
    }
}

#[derive(Debug, Clone)]
struct EndpointStats {
    latency_ms: Ewma,
    /// The latency of requests of each size class, where sizes were known.
    latency_by_size: [Ewma; SIZE_CLASSES],
    error_rate: Ewma,
    /// Per input condition, where the policy declares input features.
    by_condition: HashMap<Box<str>, Conditioned>,
    /// The share of answers that were `429 Too Many Requests`.
    rate_limited: Ewma,
    /// When the requests it accepted (answered other than 429) within the
    /// last [`RATE_WINDOW`] were sent, oldest first.
    sent: VecDeque<Instant>,
    /// The most requests per [`RATE_WINDOW`] the endpoint accepts: learnt
    /// from how many it had accepted in the window when it answered 429,
    /// and raised whenever it accepts more; with when that 429 came (see
    /// [`LIMIT_GROWTH`]).
    limit: Option<(f64, Instant)>,
    /// Until when its last `Retry-After` asked to be left alone.
    retry_after: Option<Instant>,
    /// Whether its calls are held back.
    hold: Hold,
}

impl EndpointStats {
    fn new(now: Instant) -> Self {
        Self {
            latency_ms: Ewma::default(),
            latency_by_size: [Ewma::default(); SIZE_CLASSES],
            error_rate: Ewma::default(),
            by_condition: HashMap::new(),
            rate_limited: Ewma::default(),
            sent: VecDeque::new(),
            limit: None,
            retry_after: None,
            hold: Hold::new(now),
        }
    }

    /// Whether a request under `conditions` should go as a probe at `now`,
    /// and if so, marks it sent as one: the endpoint's calls are held back
    /// and its probe is due, or those under one of the conditions are
    /// (while others go) and that condition's is; never while a
    /// `Retry-After` asks to be left alone. Failed probes of the
    /// endpoint say nothing of a request under a condition not yet known:
    /// a gateway that declines euro charges must not keep dollar charges
    /// from ever being tried.
    fn take_probe(&mut self, conditions: &[String], evidence: &Evidence, now: Instant) -> bool {
        if self.retry_after.is_some_and(|until| until > now) {
            // It asked to be left alone until then: no probe before.
            return false;
        }
        let unknown = conditions.iter().any(|condition| {
            self.by_condition.get(condition.as_str()).is_none_or(|seen| seen.samples < MIN_CONDITION_SAMPLES)
        });
        // A request under a condition whose own calls are held back is
        // probed by that condition's hold: spent on the endpoint's probe,
        // it would tell nothing of the others (in a stream alternating
        // declined euro and dollar charges, every probe of the gateway
        // went to a euro charge, and dollar charges were never tried).
        let under_held_condition = conditions
            .iter()
            .any(|condition| self.by_condition.get(condition.as_str()).is_some_and(|seen| seen.hold.holding_back()));
        let mut probing = false;
        if !under_held_condition && self.hold.probe_due(unknown, evidence, now) {
            self.hold.probe(now);
            probing = true;
        }
        for condition in conditions {
            if let Some(seen) = self.by_condition.get_mut(condition.as_str())
                && seen.hold.probe_due(false, evidence, now)
            {
                seen.hold.probe(now);
                probing = true;
            }
        }
        probing
    }

    /// Forgets what was known of an outage or a spent quota: a probe under
    /// `conditions` was taken and came back well. Its conditions start afresh (keeping the count of
    /// their answers, which says they are known); what is known under
    /// other conditions stays: a dollar charge that goes through says
    /// nothing of euro charges.
    fn recovered(&mut self, conditions: &[String]) {
        self.error_rate = Ewma::default();
        self.rate_limited = Ewma::default();
        self.retry_after = None;
        self.latency_ms = Ewma::default();
        self.latency_by_size = [Ewma::default(); SIZE_CLASSES];
        for condition in conditions {
            if let Some(conditioned) = self.by_condition.get_mut(condition.as_str()) {
                conditioned.recovered();
            }
        }
    }

    /// Fades everything learnt by `factor`.
    fn fade(&mut self, factor: f64) {
        self.latency_ms.scale(factor);
        self.error_rate.scale(factor);
        self.rate_limited.scale(factor);
        for latency in &mut self.latency_by_size {
            latency.scale(factor);
        }
        for conditioned in self.by_condition.values_mut() {
            conditioned.latency_ms.scale(factor);
            conditioned.error_rate.scale(factor);
        }
    }

    /// The limit believed at `now`: as learnt, grown since (see [`LIMIT_GROWTH`]).
    fn limit_at(&self, now: Instant) -> Option<f64> {
        self.limit.map(|(limit, learnt)| {
            let windows = now.saturating_duration_since(learnt).as_secs_f64() / RATE_WINDOW.as_secs_f64();
            limit * LIMIT_GROWTH.powf(windows)
        })
    }

    /// Requests sent in the window that ends at `now`.
    fn in_window(&self, now: Instant) -> usize {
        self.sent.iter().rev().take_while(|sent| now.saturating_duration_since(**sent) < RATE_WINDOW).count()
    }

    /// What is known at `now`, faded as `evidence` says, for a request of
    /// this body size under these input conditions.
    ///
    /// Latency comes from requests of the same size class where such were
    /// seen, else from all. Of the conditions with enough answers, the one
    /// that tells most, the one furthest from the endpoint as a whole, speaks
    /// for the request: a gateway that fails every euro charge and no dollar
    /// charge is failing for a euro charge and healthy for a dollar one,
    /// whatever the amount bucket they share says.
    fn known(&self, request: &Request<'_>, evidence: &Evidence, now: Instant) -> Known {
        let Request { bytes: request_bytes, conditions } = *request;
        let fade = evidence.fade(now.saturating_duration_since(self.fresh_until()));
        let by_size = request_bytes.and_then(|bytes| self.latency_by_size[size_class(bytes)].get());
        let mut latency = by_size.or(self.latency_ms.get())?;
        let mut error_rate = self.error_rate.get()?;
        let overall = (latency, error_rate);
        let (mut latency_told, mut error_told) = (0.0_f64, 0.0_f64);
        for condition in conditions {
            let Some(seen) = self.by_condition.get(condition.as_str()) else { continue };
            if seen.samples < MIN_CONDITION_SAMPLES {
                continue;
            }
            if let Some(conditioned) = seen.latency_ms.get() {
                let told = (conditioned.max(1.0) / overall.0.max(1.0)).ln().abs();
                if told > latency_told {
                    (latency, latency_told) = (conditioned.max(by_size.unwrap_or(0.0)), told);
                }
            }
            if let Some(conditioned) = seen.error_rate.get() {
                let told = (conditioned - overall.1).abs();
                if told > error_told {
                    (error_rate, error_told) = (conditioned, told);
                }
            }
        }
        let limit = self.limit_at(now).filter(|limit| *limit >= 1.0);
        let in_window = self.in_window(now);
        let load = limit.map_or(0.0, |limit| (in_window + 1) as f64 / limit);
        // The wait until the endpoint takes the request: what its
        // Retry-After asked, and at its limit, until the oldest request in
        // the window leaves it.
        let retry_wait = self.retry_after.map_or(Duration::ZERO, |until| until.saturating_duration_since(now));
        let window_wait = match self.sent.iter().rev().nth(in_window.saturating_sub(1)) {
            Some(oldest) if load > 1.0 => (*oldest + RATE_WINDOW).saturating_duration_since(now),
            _ => Duration::ZERO,
        };
        Some(EndpointView {
            latency_ms: (latency * fade) as f32,
            error_rate: (error_rate * fade) as f32,
            rate_limited: (self.rate_limited.get().unwrap_or(0.0) * fade) as f32,
            load: load as f32,
            wait_ms: retry_wait.max(window_wait).as_secs_f32() * 1000.0,
            probe: false,
            // The breakers are the runtime's; it adds their state.
            breaker: 0.0,
        })
    }

    /// When what is known of it starts to fade (see [`Hold::fresh_until`]).
    fn fresh_until(&self) -> Instant {
        self.hold.fresh_until()
    }
}

/// One request really sent, as the endpoint's health learns from it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Exchange<'a> {
    /// When it was sent.
    pub(crate) sent_at: Instant,
    /// The request body's size, if known.
    pub(crate) request_bytes: Option<u64>,
    /// How long the answer took (or the wait, if none came).
    pub(crate) latency_ms: f64,
    /// The answer's status; `None` for no answer (a timeout, a refused connection).
    pub(crate) status: Option<u16>,
    /// How long the answer's `Retry-After` asked to wait, if it had one.
    pub(crate) retry_after: Option<Duration>,
    /// The transaction's input conditions (see `predict/inputs.rs`).
    pub(crate) conditions: &'a [String],
}

impl Exchange<'_> {
    /// No answer, or a 5xx: the endpoint failed. A 429 is not a failure of
    /// the endpoint; it is counted apart, as a rate limit.
    fn failed(&self) -> bool {
        self.status.is_none_or(|status| status >= 500)
    }
}

/// Recent latency, error rate and rate limits of outbound endpoints, from
/// real responses.
///
/// Evidence fades while nothing is asked of an endpoint, and not while its
/// calls are held back because of it: then, now and then, one call is
/// marked as a probe, which the gate lets through to measure the endpoint
/// again, like a half-open circuit breaker's trial (see `predict/hold.rs`).
/// A probe that succeeds clears the error rate; one that fails renews it.
#[derive(Debug, Default)]
pub(crate) struct EndpointHealth {
    endpoints: Mutex<HashMap<String, EndpointStats>>,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent even if a holder panicked.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl EndpointHealth {
    /// Records a request that was really sent and how it went, at `now`.
    pub(crate) fn observe(&self, endpoint: &str, exchange: Exchange<'_>, evidence: &Evidence, now: Instant) {
        let failed = exchange.failed();
        let mut endpoints = lock(&self.endpoints);
        if endpoints.len() >= MAX_ENTRIES && !endpoints.contains_key(endpoint) {
            endpoints.clear();
        }
        let stats = endpoints.entry(endpoint.to_string()).or_insert_with(|| EndpointStats::new(now));
        let taken = !failed && exchange.status != Some(429);
        if stats.hold.answer(taken, now) {
            // The first answer since a probe was let through came back
            // well: the endpoint has recovered, and what was known of its
            // outage is over.
            stats.recovered(exchange.conditions);
        }
        // The old evidence has faded meanwhile: start from what is left of it.
        stats.fade(evidence.fade(now.saturating_duration_since(stats.fresh_until())));
        stats.latency_ms.add(exchange.latency_ms);
        if let Some(bytes) = exchange.request_bytes {
            stats.latency_by_size[size_class(bytes)].add(exchange.latency_ms);
        }
        let error = if failed { 1.0 } else { 0.0 };
        stats.error_rate.add(error);
        if stats.by_condition.len() + exchange.conditions.len() > MAX_CONDITIONS {
            stats.by_condition.clear();
        }
        for condition in exchange.conditions {
            let conditioned =
                stats.by_condition.entry(condition.as_str().into()).or_insert_with(|| Conditioned::new(now));
            if conditioned.hold.answer(taken, now) {
                // A probe under this condition came back well, while
                // requests under others went: its outage is over.
                conditioned.recovered();
            }
            conditioned.latency_ms.add(exchange.latency_ms);
            conditioned.error_rate.add(error);
            conditioned.samples = conditioned.samples.saturating_add(1);
        }
        let limited = exchange.status == Some(429);
        stats.rate_limited.add(if limited { 1.0 } else { 0.0 });
        // The window keeps the requests it accepted, by when they were sent.
        while stats.sent.front().is_some_and(|first| exchange.sent_at.saturating_duration_since(*first) >= RATE_WINDOW)
            || stats.sent.len() >= MAX_RATE_SAMPLES
        {
            stats.sent.pop_front();
        }
        let accepted = stats.in_window(exchange.sent_at) as f64;
        if limited {
            // It had taken this many in the window and no more. None at all
            // is a spent quota, not a rate: its Retry-After says how long,
            // and a limit learnt from the 429 that began it (taken at the
            // rate traffic happened to have then) was never one.
            stats.limit = match (accepted >= 1.0, stats.limit_at(now)) {
                (true, Some(limit)) => Some((limit + 0.2 * (accepted - limit), now)),
                (true, None) => Some((accepted, now)),
                (false, _) => None,
            };
        } else {
            let at = stats.sent.iter().rposition(|sent| *sent <= exchange.sent_at).map_or(0, |i| i + 1);
            stats.sent.insert(at, exchange.sent_at);
            let accepted = accepted + 1.0;
            if stats.limit_at(now).is_some_and(|limit| accepted > limit) {
                stats.limit = Some((accepted, now));
            }
        }
        if let Some(wait) = exchange.retry_after {
            stats.retry_after = Some(now + wait);
        }
    }

    /// Records that a mirror asked for the endpoint at `now` with an unsafe
    /// call under these input conditions, which was stubbed: the endpoint
    /// is wanted. Unless the primary's call follows, it is being held back,
    /// and so are calls under those conditions.
    pub(crate) fn asked(&self, endpoint: &str, conditions: &[String], now: Instant) {
        if let Some(stats) = lock(&self.endpoints).get_mut(endpoint) {
            stats.hold.ask(now);
            for condition in conditions {
                if let Some(seen) = stats.by_condition.get_mut(condition.as_str()) {
                    seen.hold.ask(now);
                }
            }
        }
    }

    /// What is known of an endpoint at `now` for a request of this size
    /// under these input conditions, if it was ever called (see
    /// [`EndpointStats::known`]).
    pub(crate) fn get(&self, endpoint: &str, request: &Request<'_>, evidence: &Evidence, now: Instant) -> Known {
        lock(&self.endpoints).get(endpoint)?.known(request, evidence, now)
    }

    /// What the predictor should know of an endpoint when it scores a
    /// mirror's call to it: as [`EndpointHealth::get`], except that now and
    /// then while an endpoint (or a condition of its calls) is held back,
    /// the view says `probe`, and the gate lets this one call through to
    /// measure it (see `predict/hold.rs` for when). The view itself stays
    /// what is known, so that what is learnt from the probe's outcome is
    /// learnt from the features it really had. No probe goes while the
    /// endpoint's `Retry-After` asks to be left alone.
    pub(crate) fn for_prediction(
        &self,
        endpoint: &str,
        request: &Request<'_>,
        evidence: &Evidence,
        now: Instant,
    ) -> Known {
        let mut endpoints = lock(&self.endpoints);
        let stats = endpoints.get_mut(endpoint)?;
        let probe = stats.take_probe(request.conditions, evidence, now);
        stats.known(request, evidence, now).map(|view| EndpointView { probe, ..view })
    }
}

/// What is known of one endpoint, for a person (`txmirror model status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointSummary {
    /// Method, scheme, authority and path.
    pub endpoint: String,
    /// Its recent latency, in milliseconds.
    pub latency_ms: f64,
    /// Its recent error rate (no answer or 5xx).
    pub error_rate: f64,
    /// Its recent share of 429 answers.
    pub rate_limited: f64,
    /// The requests per rate window it was learnt to take, if it ever refused one.
    pub limit_per_window: Option<f64>,
    /// Per input condition with enough answers: its latency, error rate and answers.
    pub conditions: Vec<ConditionSummary>,
}

/// What is known of an endpoint's requests under one input condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConditionSummary {
    /// The condition, such as `currency=EUR`.
    pub condition: String,
    /// The recent latency, in milliseconds.
    pub latency_ms: f64,
    /// The recent error rate.
    pub error_rate: f64,
    /// Answers seen.
    pub answers: u32,
}

impl EndpointHealth {
    /// What is known of each endpoint at `now`, faded as `evidence` says,
    /// in endpoint order.
    pub(crate) fn summary(&self, evidence: &Evidence, now: Instant) -> Vec<EndpointSummary> {
        let endpoints = lock(&self.endpoints);
        let mut summary: Vec<EndpointSummary> = endpoints
            .iter()
            .map(|(endpoint, stats)| {
                let fade = evidence.fade(now.saturating_duration_since(stats.fresh_until()));
                let faded = |ewma: &Ewma| ewma.get().unwrap_or(0.0) * fade;
                let mut conditions: Vec<ConditionSummary> = stats
                    .by_condition
                    .iter()
                    .filter(|(_, seen)| seen.samples >= MIN_CONDITION_SAMPLES)
                    .map(|(condition, seen)| ConditionSummary {
                        condition: condition.to_string(),
                        latency_ms: faded(&seen.latency_ms),
                        error_rate: faded(&seen.error_rate),
                        answers: seen.samples,
                    })
                    .collect();
                conditions.sort_by(|a, b| a.condition.cmp(&b.condition));
                EndpointSummary {
                    endpoint: endpoint.clone(),
                    latency_ms: faded(&stats.latency_ms),
                    error_rate: faded(&stats.error_rate),
                    rate_limited: faded(&stats.rate_limited),
                    limit_per_window: stats.limit.map(|(limit, _)| limit),
                    conditions,
                }
            })
            .collect();
        summary.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
        summary
    }
}

/// A request about to be sent, as far as what is known of its endpoint
/// depends on it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Request<'a> {
    /// Its body's size, if known.
    pub(crate) bytes: Option<u64>,
    /// The transaction's input conditions.
    pub(crate) conditions: &'a [String],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_and_baselines() {
        let mut ewma = Ewma::default();
        assert_eq!(ewma.get(), None);
        ewma.add(10.0);
        ewma.add(20.0);
        assert_eq!(ewma.get(), Some(12.0));

        let mut running = Running::default();
        for sample in [10.0, 12.0, 8.0, 10.0] {
            running.add(sample);
        }
        assert_eq!(running.z_score(10.0), None, "four samples are too few");
        running.add(10.0);
        let z = running.z_score(14.0).expect("five samples");
        assert!((z - 4.0 / 2f64.sqrt()).abs() < 1e-9, "{z}");
    }

    fn sent(request_bytes: Option<u64>, latency_ms: f64, failed: bool) -> Exchange<'static> {
        let status = Some(if failed { 503 } else { 200 });
        Exchange { sent_at: Instant::now(), request_bytes, latency_ms, status, retry_after: None, conditions: &[] }
    }

    const ANY: Request<'static> = Request { bytes: None, conditions: &[] };

    fn sized(bytes: Option<u64>) -> Request<'static> {
        Request { bytes, conditions: &[] }
    }

    fn pair(view: Known) -> Option<(f32, f32)> {
        view.map(|view| (view.latency_ms, view.error_rate))
    }

    const EVIDENCE: Evidence = Evidence { half_life: Duration::from_secs(30), probe_interval: Duration::from_secs(5) };

    #[test]
    fn endpoints_learn_from_observations() {
        let endpoints = EndpointHealth::default();
        let t0 = Instant::now();
        assert_eq!(pair(endpoints.get("GET x", &ANY, &EVIDENCE, t0)), None);
        endpoints.observe("GET x", sent(None, 100.0, false), &EVIDENCE, t0);
        endpoints.observe("GET x", sent(None, 200.0, true), &EVIDENCE, t0);
        let (latency, errors) = pair(endpoints.get("GET x", &ANY, &EVIDENCE, t0)).expect("observed");
        assert!((latency - 120.0).abs() < 0.01 && (errors - 0.2).abs() < 1e-4, "{latency} {errors}");

        // An endpoint not heard from, and not asked for, fades: half after
        // the policy's half-life.
        let later = t0 + EVIDENCE.half_life;
        let (latency, errors) = pair(endpoints.get("GET x", &ANY, &EVIDENCE, later)).expect("observed");
        assert!((latency - 60.0).abs() < 0.01 && (errors - 0.1).abs() < 1e-4, "{latency} {errors}");
        let short = Evidence { half_life: Duration::from_secs(1), ..EVIDENCE };
        let (_, errors) = pair(endpoints.get("GET x", &ANY, &short, t0 + Duration::from_secs(2))).expect("observed");
        assert!((errors - 0.05).abs() < 1e-4, "another policy, another half-life: {errors}");
    }

    /// The evidence faded in one second whatever happened, so an endpoint
    /// the gate diverted away from looked healthy again within a fraction
    /// of a second and charges went back to it while it was still down.
    #[test]
    fn an_outage_stays_visible_while_held_back_until_a_probe_succeeds() {
        let endpoints = EndpointHealth::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let errors = |ms: u64| pair(endpoints.get("POST c", &ANY, &EVIDENCE, at(ms))).map(|(_, e)| e);
        for _ in 0..10 {
            endpoints.observe("POST c", sent(None, 2000.0, true), &EVIDENCE, t0);
        }
        let outage = errors(0).expect("observed");
        assert!(outage > 0.85, "{outage}");

        // Mirrors keep asking for it and nothing is sent (diverted): no fade,
        // an hour later as at once.
        for ms in (1_000..=3_600_000).step_by(1_000) {
            endpoints.asked("POST c", &[], at(ms));
        }
        assert_eq!(errors(3_600_000), Some(outage));

        // A probe goes a sixteenth of the interval (312.5 ms) after the last
        // answer: the first scoring then sees the endpoint as it is known
        // (failing), marked as a probe that the gate lets through; the
        // next ones are not probes.
        let probe = |ms: u64| endpoints.for_prediction("POST c", &ANY, &EVIDENCE, at(ms));
        let view = probe(3_600_000).expect("observed");
        assert!(view.probe && view.error_rate == outage, "the probe's view is what is known: {view:?}");
        let probes = |ms: u64| probe(ms).is_some_and(|view| view.probe);
        assert!(!probes(3_600_001), "one probe at a time");
        assert!(!probes(3_600_300), "not before its wait");

        // Each probe that fails renews the outage and doubles the wait:
        // 625 ms, 1.25 s, 2.5 s, then the whole interval (5 s) at most.
        let mut last = 3_600_000;
        for wait in [625, 1_250, 2_500, 5_000, 5_000] {
            endpoints.observe("POST c", sent(None, 2000.0, true), &EVIDENCE, at(last + 100));
            endpoints.asked("POST c", &[], at(last + 200));
            assert!(errors(last + 200).is_some_and(|e| e > 0.85));
            assert!(!probes(last + 100 + wait - 10), "the wait after a failed probe is {wait} ms");
            assert!(probes(last + 100 + wait), "then the next probe goes");
            last += 100 + wait;
        }
        let last = last;

        // It succeeds: the outage is over at once, and the next outage's
        // first probe goes early again.
        endpoints.observe("POST c", sent(None, 40.0, false), &EVIDENCE, at(last + 100));
        let (latency, errors) = pair(endpoints.get("POST c", &ANY, &EVIDENCE, at(last + 100))).expect("observed");
        assert!(errors == 0.0 && (latency - 40.0).abs() < 0.01, "{latency} {errors}");
        endpoints.observe("POST c", sent(None, 2000.0, true), &EVIDENCE, at(last + 200));
        endpoints.asked("POST c", &[], at(last + 300));
        assert!(probes(last + 200 + 313), "{:?}", endpoints.get("POST c", &ANY, &EVIDENCE, at(last + 513)));

        // An endpoint that is neither called nor asked for still fades.
        endpoints.observe("POST d", sent(None, 10.0, true), &EVIDENCE, t0);
        let faded = pair(endpoints.get("POST d", &ANY, &EVIDENCE, at(60_000))).map(|(_, e)| e);
        assert!(faded.is_some_and(|e| (e - 0.25).abs() < 1e-4), "{faded:?}");
    }

    /// At many calls a second, a recovery is found after a few held calls,
    /// long before a sixteenth of the probe interval has passed.
    #[test]
    fn under_heavy_traffic_a_probe_goes_after_a_few_held_calls() {
        let endpoints = EndpointHealth::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        endpoints.observe("POST c", sent(None, 2000.0, true), &EVIDENCE, t0);
        let probes = |ms: u64| endpoints.for_prediction("POST c", &ANY, &EVIDENCE, at(ms)).is_some_and(|v| v.probe);
        // The first ask holds it; four more are held calls.
        for ms in 1..=4 {
            endpoints.asked("POST c", &[], at(ms));
        }
        assert!(!probes(4), "three held calls are not yet enough");
        endpoints.asked("POST c", &[], at(5));
        assert!(probes(5), "the fourth held call goes as a probe");
        assert!(!probes(6), "and the count starts again");
    }

    /// What a big request to an endpoint will take is learnt from big
    /// requests to it: a service slow on large bodies is predicted slow
    /// for the next large one, and fast for a small one.
    #[test]
    fn latency_is_learnt_per_request_size() {
        assert_eq!([0, 1023, 1024, 4095, 4096, 16 * 1024, 1 << 40].map(size_class), [0, 0, 1, 1, 2, 3, 7]);
        let endpoints = EndpointHealth::default();
        let t0 = Instant::now();
        for _ in 0..20 {
            endpoints.observe("POST u", sent(Some(200), 20.0, false), &EVIDENCE, t0);
            endpoints.observe("POST u", sent(Some(300_000), 2300.0, false), &EVIDENCE, t0);
        }
        let latency = |bytes| endpoints.get("POST u", &sized(bytes), &EVIDENCE, t0).map(|view| view.latency_ms);
        assert!(latency(Some(100)).is_some_and(|l| (l - 20.0).abs() < 0.5), "{:?}", latency(Some(100)));
        assert!(latency(Some(400_000)).is_some_and(|l| (l - 2300.0).abs() < 1.0), "{:?}", latency(Some(400_000)));
        // A size never seen, or an unknown one, gets the endpoint's overall average.
        let overall = latency(None).expect("observed");
        assert!(overall > 20.0 && overall < 2300.0, "{overall}");
        assert_eq!(latency(Some(20_000)), Some(overall));
    }

    /// A gateway that fails euro charges and serves dollar ones: each
    /// request is judged by the condition that tells most about it, not by
    /// the endpoint's average nor by a condition the two share.
    #[test]
    fn failures_are_learnt_per_input_condition() {
        let endpoints = EndpointHealth::default();
        let t0 = Instant::now();
        let euro = ["currency=EUR".to_string(), "amount_cents~10".to_string()];
        let dollar = ["currency=USD".to_string(), "amount_cents~10".to_string()];
        for _ in 0..20 {
            let failing = Exchange { status: Some(502), conditions: &euro, ..sent(None, 30.0, true) };
            endpoints.observe("POST g", failing, &EVIDENCE, t0);
            endpoints.observe("POST g", Exchange { conditions: &dollar, ..sent(None, 30.0, false) }, &EVIDENCE, t0);
        }
        let error = |conditions: &[String]| {
            endpoints.get("POST g", &Request { bytes: None, conditions }, &EVIDENCE, t0).map(|view| view.error_rate)
        };
        let overall = error(&[]).expect("observed");
        assert!(overall > 0.3 && overall < 0.7, "{overall}");
        assert!(error(&euro).is_some_and(|e| e > 0.95), "{:?}", error(&euro));
        assert!(error(&dollar).is_some_and(|e| e < 0.05), "{:?}", error(&dollar));
        // A condition seen too rarely does not speak.
        let rare = ["currency=JPY".to_string()];
        endpoints.observe("POST g", Exchange { conditions: &rare, ..sent(None, 30.0, true) }, &EVIDENCE, t0);
        let rare_error = error(&rare).expect("observed");
        let overall = error(&[]).expect("observed");
        assert!((rare_error - overall).abs() < 1e-6, "{rare_error} {overall}");
    }

    /// While a gateway declined euro charges and took all others, euro
    /// charges were diverted for ever: the endpoint kept answering, so its
    /// own hold never saw them held back, and no probe went to find the
    /// outage's end.
    #[test]
    fn a_condition_held_back_while_others_go_is_probed_and_recovers() {
        let endpoints = EndpointHealth::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let euro = ["currency=EUR".to_string()];
        let dollar = ["currency=USD".to_string()];
        let request = |conditions| Request { bytes: None, conditions };
        for ms in 0..10 {
            let declined = Exchange { status: Some(502), conditions: &euro, ..sent(None, 5.0, true) };
            endpoints.observe("POST g", declined, &EVIDENCE, at(ms));
            endpoints.observe("POST g", Exchange { conditions: &dollar, ..sent(None, 5.0, false) }, &EVIDENCE, at(ms));
        }
        // Euro charges are asked for and held back; dollar charges go.
        let mut probed_at = None;
        for ms in 20..40 {
            endpoints.asked("POST g", &euro, at(ms));
            let view = endpoints.for_prediction("POST g", &request(&euro), &EVIDENCE, at(ms)).expect("observed");
            assert!(view.error_rate > 0.9, "{view:?}");
            if view.probe {
                probed_at = Some(ms);
                break;
            }
            endpoints.observe("POST g", Exchange { conditions: &dollar, ..sent(None, 5.0, false) }, &EVIDENCE, at(ms));
        }
        let probed_at = probed_at.expect("a euro charge goes as a probe after a few held back");
        assert!(probed_at <= 25, "{probed_at}");
        // The probe comes back well: euro charges are healthy again.
        endpoints.observe(
            "POST g",
            Exchange { conditions: &euro, ..sent(None, 5.0, false) },
            &EVIDENCE,
            at(probed_at + 1),
        );
        let view = endpoints.for_prediction("POST g", &request(&euro), &EVIDENCE, at(probed_at + 2));
        assert!(view.is_some_and(|view| view.error_rate < 0.1 && !view.probe), "{view:?}");
    }

    /// An endpoint whose `Retry-After` asks to be left alone gets no probe
    /// before it passes, however many calls are held back meanwhile.
    #[test]
    fn no_probe_goes_before_a_retry_after_passes() {
        let endpoints = EndpointHealth::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let refused =
            Exchange { status: Some(429), retry_after: Some(Duration::from_secs(2)), ..sent(None, 5.0, false) };
        endpoints.observe("POST q", refused, &EVIDENCE, t0);
        let probes = |ms: u64| endpoints.for_prediction("POST q", &ANY, &EVIDENCE, at(ms)).is_some_and(|v| v.probe);
        for ms in 1..=40 {
            endpoints.asked("POST q", &[], at(ms * 40));
            assert!(!probes(ms * 40), "no probe at {} ms", ms * 40);
        }
        endpoints.asked("POST q", &[], at(2_001));
        assert!(probes(2_001), "once it has passed, the held calls have earned one");
    }

    /// 429s teach the endpoint's limit, and `Retry-After` how long to wait.
    #[test]
    fn rate_limits_are_learnt_from_429s() {
        let endpoints = EndpointHealth::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let answer = |ms: u64, status: u16, retry_after: Option<Duration>| Exchange {
            sent_at: at(ms),
            status: Some(status),
            retry_after,
            ..sent(None, 5.0, false)
        };
        // Five a second go through; the sixth within the second is refused.
        for ms in [0, 100, 200, 300, 400] {
            endpoints.observe("POST r", answer(ms, 200, None), &EVIDENCE, at(ms + 5));
        }
        let view = endpoints.get("POST r", &ANY, &EVIDENCE, at(450)).expect("observed");
        assert_eq!((view.load, view.wait_ms, view.rate_limited), (0.0, 0.0, 0.0), "no limit known yet");
        endpoints.observe("POST r", answer(500, 429, None), &EVIDENCE, at(505));
        let view = endpoints.get("POST r", &ANY, &EVIDENCE, at(505)).expect("observed");
        assert!(view.rate_limited > 0.0, "{view:?}");
        assert!((view.load - 6.0 / 5.0).abs() < 1e-6, "five taken in the window and one more, against five: {view:?}");
        assert!((view.wait_ms - 495.0).abs() < 1.0, "until the request sent at 0 leaves the window: {view:?}");
        assert_eq!(view.error_rate, 0.0, "a 429 is not a failure of the endpoint");
        // A Retry-After longer than that wins.
        endpoints.observe("POST r", answer(600, 429, Some(Duration::from_millis(800))), &EVIDENCE, at(605));
        let view = endpoints.get("POST r", &ANY, &EVIDENCE, at(605)).expect("observed");
        assert!((view.wait_ms - 800.0).abs() < 1.0, "Retry-After: {view:?}");
        // Two seconds on, the window is empty: one request is well under
        // the limit, which no 429 has confirmed since the one at 605 ms
        // (which moved it a fifth of the way to the five then taken): it
        // has grown.
        let at_605 = 5.0 * LIMIT_GROWTH.powf(0.1);
        let grown = (at_605 + 0.2 * (5.0 - at_605)) * LIMIT_GROWTH.powf(1.895);
        let view = endpoints.get("POST r", &ANY, &EVIDENCE, at(2_500)).expect("observed");
        assert!((f64::from(view.load) - 1.0 / grown).abs() < 1e-6 && view.wait_ms == 0.0, "{view:?}");
        // A spent quota (nothing taken, 429 to all) teaches no rate: only
        // its Retry-After holds calls back, and only until it passes.
        let quota = EndpointHealth::default();
        for ms in [0, 100, 200] {
            quota.observe("POST q", answer(ms, 429, Some(Duration::from_secs(1))), &EVIDENCE, at(ms + 5));
        }
        let view = quota.get("POST q", &ANY, &EVIDENCE, at(300)).expect("observed");
        assert!(view.load == 0.0 && (view.wait_ms - 905.0).abs() < 1.0, "{view:?}");
        // A quota spent after traffic was taken: the first 429 looks like a
        // limit at that traffic's rate, the next, with nothing taken, says
        // it was not one.
        let spent = EndpointHealth::default();
        for ms in [0, 100, 200] {
            spent.observe("POST s", answer(ms, 200, None), &EVIDENCE, at(ms + 5));
        }
        spent.observe("POST s", answer(300, 429, Some(Duration::from_secs(1))), &EVIDENCE, at(305));
        assert!(spent.get("POST s", &ANY, &EVIDENCE, at(306)).is_some_and(|v| v.load > 1.0), "three taken, then a 429");
        spent.observe("POST s", answer(1_400, 429, Some(Duration::from_secs(1))), &EVIDENCE, at(1_405));
        let view = spent.get("POST s", &ANY, &EVIDENCE, at(2_500)).expect("observed");
        assert!(view.load == 0.0 && view.wait_ms == 0.0, "a quota, not a rate: {view:?}");
        let view = quota.get("POST q", &ANY, &EVIDENCE, at(1_300)).expect("observed");
        assert!(view.load == 0.0 && view.wait_ms == 0.0, "{view:?}");
        // A limit is raised when the endpoint takes more than it: here, at
        // 3.3 s, more than the 9.1 it has grown to.
        for ms in (3_000..3_300).step_by(25) {
            endpoints.observe("POST r", answer(ms, 200, None), &EVIDENCE, at(ms + 5));
        }
        let view = endpoints.get("POST r", &ANY, &EVIDENCE, at(3_300)).expect("observed");
        assert!((view.load - 13.0 / 12.0).abs() < 0.01, "twelve taken: the limit is about twelve now: {view:?}");
        // Held to it, traffic never exceeds a limit learnt wrongly (from
        // the first 429 of a spent quota, say): unconfirmed, it grows out
        // of the way, by a quarter a second.
        let view = endpoints.get("POST r", &ANY, &EVIDENCE, at(13_300)).expect("observed");
        let grown = 12.0 * LIMIT_GROWTH.powf(10.0);
        assert!((f64::from(view.load) * grown - 1.0).abs() < 0.01, "about {grown} now: {view:?}");
    }
}
