//! What the runtime has learnt from earlier transactions, for the predictor:
//! per endpoint, recent latency and error rate; per path, a baseline of
//! fuel, host calls and duration, and a recent failure rate.
//!
//! Statistics live in memory and start empty at each start of the runtime.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Weight of the newest sample in the moving averages.
const ALPHA: f64 = 0.2;
/// Samples a baseline needs before it judges deviation.
const MIN_BASELINE_SAMPLES: u64 = 5;
/// How many endpoints or paths are remembered; beyond it, the oldest go.
const MAX_ENTRIES: usize = 4096;

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

/// What is known of an endpoint: `(latency in ms, error rate)`, if anything.
pub(crate) type Known = Option<(f32, f32)>;

/// How many request-size classes an endpoint's latency is learnt for.
const SIZE_CLASSES: usize = 8;

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

#[derive(Debug, Clone, Copy)]
struct EndpointStats {
    latency_ms: Ewma,
    /// The latency of requests of each size class, where sizes were known.
    latency_by_size: [Ewma; SIZE_CLASSES],
    error_rate: Ewma,
    /// When a response (or a failure to get one) last arrived.
    heard: Instant,
    /// When a mirror last asked for the endpoint with an unsafe call that
    /// was stubbed. Later than `heard`, the endpoint is wanted and not
    /// reached: its calls are held back (diverted or stopped at the gate).
    asked: Option<Instant>,
    /// When a probe was last let through.
    probed: Option<Instant>,
}

impl EndpointStats {
    /// Whether the endpoint's calls are being held back.
    fn held(&self) -> bool {
        self.asked.is_some_and(|asked| asked > self.heard)
    }

    /// `(latency in ms, error rate)` at `now`, faded as `evidence` says: the
    /// latency of requests of this body size where such requests were
    /// seen, else of all its requests.
    fn known(&self, request_bytes: Option<u64>, evidence: &Evidence, now: Instant) -> Known {
        let fade = evidence.fade(now.saturating_duration_since(self.fresh_until()));
        let by_size = request_bytes.and_then(|bytes| self.latency_by_size[size_class(bytes)].get());
        let latency = by_size.or(self.latency_ms.get())?;
        Some(((latency * fade) as f32, (self.error_rate.get()? * fade) as f32))
    }

    /// When what is known of it starts to fade: from its last response, or
    /// while it is held back, from the last time it was asked for, so that
    /// an outage the gate keeps away from stays visible.
    fn fresh_until(&self) -> Instant {
        self.asked.map_or(self.heard, |asked| asked.max(self.heard))
    }
}

/// One request really sent, as the endpoint's health learns from it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Exchange {
    /// The request body's size, if known.
    pub(crate) request_bytes: Option<u64>,
    /// How long the answer took (or the wait, if none came).
    pub(crate) latency_ms: f64,
    /// No answer, a timeout, or a 5xx.
    pub(crate) failed: bool,
}

/// Recent latency and error rate of outbound endpoints, from real responses.
///
/// Evidence fades while nothing is asked of an endpoint, and not while its
/// calls are held back because of it: then, once per probe interval, one
/// scoring sees the endpoint as unknown so that one call goes through and
/// measures it again, like a half-open circuit breaker's trial. A probe
/// that succeeds clears the error rate; one that fails renews it.
#[derive(Debug, Default)]
pub(crate) struct EndpointHealth {
    endpoints: Mutex<HashMap<String, EndpointStats>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent even if a holder panicked.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl EndpointHealth {
    /// Records a request that was really sent and how it went, at `now`.
    pub(crate) fn observe(&self, endpoint: &str, exchange: Exchange, evidence: &Evidence, now: Instant) {
        let Exchange { request_bytes, latency_ms, failed } = exchange;
        let mut endpoints = lock(&self.endpoints);
        if endpoints.len() >= MAX_ENTRIES && !endpoints.contains_key(endpoint) {
            endpoints.clear();
        }
        let stats = endpoints.entry(endpoint.to_string()).or_insert(EndpointStats {
            latency_ms: Ewma::default(),
            latency_by_size: [Ewma::default(); SIZE_CLASSES],
            error_rate: Ewma::default(),
            heard: now,
            asked: None,
            probed: None,
        });
        if !failed && stats.probed.is_some_and(|probed| probed > stats.heard) {
            // The first answer since a probe was let through came back
            // well: the endpoint has recovered, and what was known of its
            // outage is over.
            stats.error_rate = Ewma::default();
            stats.latency_ms = Ewma::default();
            stats.latency_by_size = [Ewma::default(); SIZE_CLASSES];
        }
        // The old evidence has faded meanwhile: start from what is left of it.
        let fade = evidence.fade(now.saturating_duration_since(stats.fresh_until()));
        stats.latency_ms.scale(fade);
        stats.error_rate.scale(fade);
        for latency in &mut stats.latency_by_size {
            latency.scale(fade);
        }
        stats.latency_ms.add(latency_ms);
        if let Some(bytes) = request_bytes {
            stats.latency_by_size[size_class(bytes)].add(latency_ms);
        }
        stats.error_rate.add(if failed { 1.0 } else { 0.0 });
        stats.heard = now;
    }

    /// Records that a mirror asked for the endpoint at `now` with an unsafe
    /// call, which was stubbed: the endpoint is wanted. Unless the
    /// primary's call follows, it is being held back.
    pub(crate) fn asked(&self, endpoint: &str, now: Instant) {
        if let Some(stats) = lock(&self.endpoints).get_mut(endpoint) {
            stats.asked = Some(now);
        }
    }

    /// `(latency in ms, error rate)` of an endpoint at `now`, if it was ever
    /// called (see [`EndpointStats::known`]).
    pub(crate) fn get(&self, endpoint: &str, request: Option<u64>, evidence: &Evidence, now: Instant) -> Known {
        lock(&self.endpoints).get(endpoint)?.known(request, evidence, now)
    }

    /// What the predictor should know of an endpoint when it scores a
    /// mirror's call to it: as [`EndpointHealth::get`], except that once
    /// per probe interval of an endpoint held back, the answer is `None`
    /// (unknown), so that this one call goes through and measures it.
    pub(crate) fn for_prediction(
        &self,
        endpoint: &str,
        request: Option<u64>,
        evidence: &Evidence,
        now: Instant,
    ) -> Known {
        let mut endpoints = lock(&self.endpoints);
        let stats = endpoints.get_mut(endpoint)?;
        let last_try = stats.probed.map_or(stats.heard, |probed| probed.max(stats.heard));
        if stats.held() && now.saturating_duration_since(last_try) >= evidence.probe_interval {
            stats.probed = Some(now);
            return None;
        }
        stats.known(request, evidence, now)
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct PathStats {
    fuel: Running,
    host_calls: Running,
    duration_micros: Running,
    failure_rate: Ewma,
}

/// Baselines and failure rates of (module, path) pairs.
#[derive(Debug, Default)]
pub(crate) struct PathHistory {
    paths: Mutex<HashMap<(String, String), PathStats>>,
}

/// What one instance used, as a path's baseline counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BaselineSample {
    /// Fuel burnt.
    pub(crate) fuel: u64,
    /// The guest's host calls (the runtime's own events, such as the gate's,
    /// are not the guest's and are not counted).
    pub(crate) host_calls: usize,
    /// Wall time, in microseconds.
    pub(crate) micros: u64,
}

impl PathHistory {
    /// Records an attempt's end: its failure or success for the path's
    /// failure rate and, from a success, the sample for its baseline. The
    /// sample must come from the twin that [`PathHistory::deviation`] is
    /// asked about: the mirror.
    pub(crate) fn observe(&self, module: &str, path: &str, sample: Option<BaselineSample>, failed: bool) {
        let mut paths = lock(&self.paths);
        let key = (module.to_string(), path.to_string());
        if paths.len() >= MAX_ENTRIES && !paths.contains_key(&key) {
            paths.clear();
        }
        let stats = paths.entry(key).or_default();
        stats.failure_rate.add(if failed { 1.0 } else { 0.0 });
        if let (false, Some(sample)) = (failed, sample) {
            stats.fuel.add(sample.fuel as f64);
            stats.host_calls.add(sample.host_calls as f64);
            stats.duration_micros.add(sample.micros as f64);
        }
    }

    /// The largest deviation, in standard deviations, of fuel and host calls
    /// from the path's baseline. (Duration is recorded but not judged: on a
    /// shared machine it deviates for reasons of its own.)
    pub(crate) fn deviation(&self, module: &str, path: &str, fuel: u64, host_calls: usize) -> Option<f32> {
        let paths = lock(&self.paths);
        let stats = paths.get(&(module.to_string(), path.to_string()))?;
        let fuel = stats.fuel.z_score(fuel as f64)?;
        let calls = stats.host_calls.z_score(host_calls as f64)?;
        Some(fuel.max(calls) as f32)
    }

    /// The path's recent failure rate, 0 if never run.
    pub(crate) fn failure_rate(&self, module: &str, path: &str) -> f32 {
        let paths = lock(&self.paths);
        paths.get(&(module.to_string(), path.to_string())).and_then(|s| s.failure_rate.get()).unwrap_or(0.0) as f32
    }
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

    fn sent(request_bytes: Option<u64>, latency_ms: f64, failed: bool) -> Exchange {
        Exchange { request_bytes, latency_ms, failed }
    }

    const EVIDENCE: Evidence = Evidence { half_life: Duration::from_secs(30), probe_interval: Duration::from_secs(5) };

    #[test]
    fn endpoints_and_paths_learn_from_observations() {
        let endpoints = EndpointHealth::default();
        let t0 = Instant::now();
        assert_eq!(endpoints.get("GET x", None, &EVIDENCE, t0), None);
        endpoints.observe("GET x", sent(None, 100.0, false), &EVIDENCE, t0);
        endpoints.observe("GET x", sent(None, 200.0, true), &EVIDENCE, t0);
        let (latency, errors) = endpoints.get("GET x", None, &EVIDENCE, t0).expect("observed");
        assert!((latency - 120.0).abs() < 0.01 && (errors - 0.2).abs() < 1e-4, "{latency} {errors}");

        // An endpoint not heard from, and not asked for, fades: half after
        // the policy's half-life.
        let later = t0 + EVIDENCE.half_life;
        let (latency, errors) = endpoints.get("GET x", None, &EVIDENCE, later).expect("observed");
        assert!((latency - 60.0).abs() < 0.01 && (errors - 0.1).abs() < 1e-4, "{latency} {errors}");
        let short = Evidence { half_life: Duration::from_secs(1), ..EVIDENCE };
        let (_, errors) = endpoints.get("GET x", None, &short, t0 + Duration::from_secs(2)).expect("observed");
        assert!((errors - 0.05).abs() < 1e-4, "another policy, another half-life: {errors}");

        let paths = PathHistory::default();
        let sample = BaselineSample { fuel: 1000, host_calls: 3, micros: 50 };
        for _ in 0..5 {
            paths.observe("m", "p", Some(sample), false);
        }
        assert_eq!(paths.deviation("m", "p", 1000, 3), Some(0.0));
        assert!(paths.deviation("m", "p", 5000, 3).expect("baseline") > 3.0, "five times the fuel is far off");
        assert_eq!(paths.failure_rate("m", "p"), 0.0);
        // A failure counts for the failure rate, never for the baseline.
        paths.observe("m", "p", Some(BaselineSample { fuel: 1, host_calls: 1, micros: 1 }), true);
        assert!((paths.failure_rate("m", "p") - 0.2).abs() < 1e-6);
        assert_eq!(paths.deviation("m", "p", 1000, 3), Some(0.0));
        // An attempt without a mirror has no sample: only its end counts.
        paths.observe("m", "p", None, false);
        assert_eq!(paths.deviation("m", "p", 1000, 3), Some(0.0));
        assert_eq!(paths.deviation("m", "other", 1, 1), None);
    }

    /// The evidence faded in one second whatever happened, so an endpoint
    /// the gate diverted away from looked healthy again within a fraction
    /// of a second and charges went back to it while it was still down.
    #[test]
    fn an_outage_stays_visible_while_held_back_until_a_probe_succeeds() {
        let endpoints = EndpointHealth::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let errors = |ms: u64| endpoints.get("POST c", None, &EVIDENCE, at(ms)).map(|(_, e)| e);
        for _ in 0..10 {
            endpoints.observe("POST c", sent(None, 2000.0, true), &EVIDENCE, t0);
        }
        let outage = errors(0).expect("observed");
        assert!(outage > 0.85, "{outage}");

        // Mirrors keep asking for it and nothing is sent (diverted): no fade,
        // an hour later as at once.
        for ms in (1_000..=3_600_000).step_by(1_000) {
            endpoints.asked("POST c", at(ms));
        }
        assert_eq!(errors(3_600_000), Some(outage));

        // One probe per interval: the first scoring after it sees the
        // endpoint as unknown, the next ones as failing.
        assert_eq!(endpoints.for_prediction("POST c", None, &EVIDENCE, at(3_600_000)), None, "a probe goes");
        assert!(endpoints.for_prediction("POST c", None, &EVIDENCE, at(3_600_001)).is_some(), "one probe at a time");
        assert!(
            endpoints.for_prediction("POST c", None, &EVIDENCE, at(3_604_000)).is_some(),
            "not before the interval"
        );

        // The probe fails: the outage is renewed, and the next probe waits.
        endpoints.observe("POST c", sent(None, 2000.0, true), &EVIDENCE, at(3_600_100));
        endpoints.asked("POST c", at(3_600_200));
        assert!(errors(3_600_200).is_some_and(|e| e > 0.85));
        assert!(
            endpoints.for_prediction("POST c", None, &EVIDENCE, at(3_604_000)).is_some(),
            "the interval starts again"
        );
        assert_eq!(endpoints.for_prediction("POST c", None, &EVIDENCE, at(3_605_200)), None, "the next probe");

        // It succeeds: the outage is over at once.
        endpoints.observe("POST c", sent(None, 40.0, false), &EVIDENCE, at(3_605_300));
        let (latency, errors) = endpoints.get("POST c", None, &EVIDENCE, at(3_605_300)).expect("observed");
        assert!(errors == 0.0 && (latency - 40.0).abs() < 0.01, "{latency} {errors}");

        // An endpoint that is neither called nor asked for still fades.
        endpoints.observe("POST d", sent(None, 10.0, true), &EVIDENCE, t0);
        let faded = endpoints.get("POST d", None, &EVIDENCE, at(60_000)).map(|(_, e)| e);
        assert!(faded.is_some_and(|e| (e - 0.25).abs() < 1e-4), "{faded:?}");
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
        let latency = |bytes| endpoints.get("POST u", bytes, &EVIDENCE, t0).map(|(latency, _)| latency);
        assert!(latency(Some(100)).is_some_and(|l| (l - 20.0).abs() < 0.5), "{:?}", latency(Some(100)));
        assert!(latency(Some(400_000)).is_some_and(|l| (l - 2300.0).abs() < 1.0), "{:?}", latency(Some(400_000)));
        // A size never seen, or an unknown one, gets the endpoint's overall average.
        let overall = latency(None).expect("observed");
        assert!(overall > 20.0 && overall < 2300.0, "{overall}");
        assert_eq!(latency(Some(20_000)), Some(overall));
    }
}
