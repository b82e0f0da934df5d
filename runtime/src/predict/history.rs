//! What the runtime has learnt from earlier transactions, for the predictor:
//! per endpoint, recent latency and error rate; per path, a baseline of
//! fuel, host calls and duration, and a recent failure rate.
//!
//! Statistics live in memory and start empty at each start of the runtime.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How fast what is known of an endpoint fades once nothing new is heard
/// from it: its error rate and latency halve every this long. Without it,
/// an endpoint the runtime diverts away from would never be called again,
/// so never re-measured, and would look failing forever.
pub(crate) const ENDPOINT_EVIDENCE_HALF_LIFE: Duration = Duration::from_secs(1);

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

/// What share of the evidence is left after `elapsed`.
fn fade(elapsed: Duration) -> f64 {
    0.5_f64.powf(elapsed.as_secs_f64() / ENDPOINT_EVIDENCE_HALF_LIFE.as_secs_f64())
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

#[derive(Debug, Clone, Copy)]
struct EndpointStats {
    latency_ms: Ewma,
    error_rate: Ewma,
    /// When a response last arrived.
    heard: Instant,
}

/// Recent latency and error rate of outbound endpoints, from real responses.
#[derive(Debug, Default)]
pub(crate) struct EndpointHealth {
    endpoints: Mutex<HashMap<String, EndpointStats>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent even if a holder panicked.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl EndpointHealth {
    /// Records a request that was really sent: its latency, and whether it
    /// failed (no answer, a timeout, or a 5xx).
    pub(crate) fn observe(&self, endpoint: &str, latency_ms: f64, failed: bool) {
        let mut endpoints = lock(&self.endpoints);
        if endpoints.len() >= MAX_ENTRIES && !endpoints.contains_key(endpoint) {
            endpoints.clear();
        }
        let now = Instant::now();
        let stats = endpoints.entry(endpoint.to_string()).or_insert(EndpointStats {
            latency_ms: Ewma::default(),
            error_rate: Ewma::default(),
            heard: now,
        });
        // The old evidence has faded meanwhile: start from what is left of it.
        let fade = fade(now.saturating_duration_since(stats.heard));
        stats.latency_ms.scale(fade);
        stats.error_rate.scale(fade);
        stats.latency_ms.add(latency_ms);
        stats.error_rate.add(if failed { 1.0 } else { 0.0 });
        stats.heard = now;
    }

    /// `(latency in ms, error rate)` of an endpoint, if it was ever called,
    /// faded by the time since it was last heard from.
    pub(crate) fn get(&self, endpoint: &str) -> Option<(f32, f32)> {
        self.get_at(endpoint, Instant::now())
    }

    fn get_at(&self, endpoint: &str, now: Instant) -> Option<(f32, f32)> {
        let endpoints = lock(&self.endpoints);
        let stats = endpoints.get(endpoint)?;
        let fade = fade(now.saturating_duration_since(stats.heard));
        Some(((stats.latency_ms.get()? * fade) as f32, (stats.error_rate.get()? * fade) as f32))
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

    #[test]
    fn endpoints_and_paths_learn_from_observations() {
        let endpoints = EndpointHealth::default();
        assert_eq!(endpoints.get("GET x"), None);
        endpoints.observe("GET x", 100.0, false);
        endpoints.observe("GET x", 200.0, true);
        let (latency, errors) = endpoints.get("GET x").expect("observed");
        // Microseconds passed between the calls: the evidence faded a hair.
        assert!((latency - 120.0).abs() < 0.01 && (errors - 0.2).abs() < 1e-4, "{latency} {errors}");

        // An endpoint not heard from fades: half after the half-life.
        let later = Instant::now() + ENDPOINT_EVIDENCE_HALF_LIFE;
        let (latency, errors) = endpoints.get_at("GET x", later).expect("observed");
        assert!((latency - 60.0).abs() < 0.01 && (errors - 0.1).abs() < 1e-4, "{latency} {errors}");

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
}
