//! What the runtime has learnt of each path it ran, for the predictor: a
//! baseline of the mirror's fuel, host calls and duration, and a recent
//! failure rate (per input condition too), which the gate also reads
//! before it diverts an attempt to the path.
//!
//! Statistics live in memory and start empty at each start of the runtime.

use super::history::{Evidence, Ewma, MAX_CONDITIONS, MAX_ENTRIES, MIN_CONDITION_SAMPLES, Running, lock};
use super::hold::Hold;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug, Default, Clone)]
struct PathStats {
    fuel: Running,
    host_calls: Running,
    duration_micros: Running,
    failure_rate: Ewma,
    /// The failure rate per input condition, and its attempts: a path that
    /// fails every euro charge and no other is failing for euro charges
    /// and healthy for the rest, as an endpoint is (see
    /// [`PathStats::failure_rate_for`]).
    by_condition: HashMap<Box<str>, (Ewma, u32)>,
    /// Whether diversions to it are held back because it fails, once one
    /// was (see [`PathHistory::worth_diverting_to`]).
    hold: Option<Hold>,
}

/// What is known of one path, for a person (`txmirror model status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathSummary {
    /// The module's content hash.
    pub module: String,
    /// The path.
    pub path: String,
    /// Its recent failure rate.
    pub failure_rate: f64,
    /// Successful mirrors its baseline was learnt from.
    pub baseline_samples: u64,
    /// The baseline's mean fuel.
    pub fuel_mean: f64,
    /// The baseline's mean number of host calls.
    pub host_calls_mean: f64,
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
    pub(crate) fn observe(
        &self,
        (module, path, conditions): (&str, &str, &[String]),
        sample: Option<BaselineSample>,
        failed: bool,
        now: Instant,
    ) {
        let mut paths = lock(&self.paths);
        let key = (module.to_string(), path.to_string());
        if paths.len() >= MAX_ENTRIES && !paths.contains_key(&key) {
            paths.clear();
        }
        let stats = paths.entry(key).or_default();
        if stats.hold.as_mut().is_some_and(|hold| hold.answer(!failed, now)) {
            // A diversion let through to it as a probe went well: what was
            // known of its outage is over.
            stats.failure_rate = Ewma::default();
            for condition in conditions {
                if let Some((rate, _)) = stats.by_condition.get_mut(condition.as_str()) {
                    *rate = Ewma::default();
                }
            }
        }
        let failure = if failed { 1.0 } else { 0.0 };
        stats.failure_rate.add(failure);
        if stats.by_condition.len() + conditions.len() > MAX_CONDITIONS {
            stats.by_condition.clear();
        }
        for condition in conditions {
            let (rate, attempts) = stats.by_condition.entry(condition.as_str().into()).or_default();
            rate.add(failure);
            *attempts = attempts.saturating_add(1);
        }
        if let (false, Some(sample)) = (failed, sample) {
            stats.fuel.add(sample.fuel as f64);
            stats.host_calls.add(sample.host_calls as f64);
            stats.duration_micros.add(sample.micros as f64);
        }
    }

    /// Whether diverting an attempt predicted to fail with probability
    /// `predicted` to this path is worth it at `now`: the path has failed
    /// less often of late, or has never run. Otherwise the diversion is
    /// held back (sending charges into a backup that is down turns attempts
    /// that would have gone through into failures) and, like an endpoint's
    /// calls, now and then one goes anyway as a probe (see `predict/hold.rs`),
    /// so that a path that recovered is found to have.
    pub(crate) fn worth_diverting_to(
        &self,
        (module, path, conditions): (&str, &str, &[String]),
        predicted: f32,
        evidence: &Evidence,
        now: Instant,
    ) -> bool {
        let mut paths = lock(&self.paths);
        let Some(stats) = paths.get_mut(&(module.to_string(), path.to_string())) else { return true };
        if stats.failure_rate_for(conditions) < f64::from(predicted) {
            return true;
        }
        let hold = stats.hold.get_or_insert_with(|| Hold::new(now));
        hold.ask(now);
        let probe = hold.probe_due(false, evidence, now);
        if probe {
            hold.probe(now);
        }
        probe
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

    /// What is known of each path, in (module, path) order.
    pub(crate) fn summary(&self) -> Vec<PathSummary> {
        let paths = lock(&self.paths);
        let mut summary: Vec<PathSummary> = paths
            .iter()
            .map(|((module, path), stats)| PathSummary {
                module: module.clone(),
                path: path.clone(),
                failure_rate: stats.failure_rate.get().unwrap_or(0.0),
                baseline_samples: stats.fuel.count(),
                fuel_mean: stats.fuel.mean(),
                host_calls_mean: stats.host_calls.mean(),
            })
            .collect();
        summary.sort_by(|a, b| (&a.module, &a.path).cmp(&(&b.module, &b.path)));
        summary
    }

    /// The path's recent failure rate for a transaction under these input
    /// conditions (see [`PathStats::failure_rate_for`]), 0 if never run.
    pub(crate) fn failure_rate(&self, (module, path, conditions): (&str, &str, &[String])) -> f32 {
        let paths = lock(&self.paths);
        paths.get(&(module.to_string(), path.to_string())).map_or(0.0, |stats| stats.failure_rate_for(conditions))
            as f32
    }
}

impl PathStats {
    /// The recent failure rate for a transaction under these input
    /// conditions: of the conditions with enough attempts, the one furthest
    /// from the path as a whole speaks; without any, the path as a whole.
    fn failure_rate_for(&self, conditions: &[String]) -> f64 {
        let overall = self.failure_rate.get().unwrap_or(0.0);
        conditions
            .iter()
            .filter_map(|condition| self.by_condition.get(condition.as_str()))
            .filter(|(_, attempts)| *attempts >= MIN_CONDITION_SAMPLES)
            .filter_map(|(rate, _)| rate.get())
            .max_by(|a, b| (a - overall).abs().total_cmp(&(b - overall).abs()))
            .unwrap_or(overall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const EVIDENCE: Evidence = Evidence { half_life: Duration::from_secs(30), probe_interval: Duration::from_secs(5) };

    #[test]
    fn paths_learn_baselines_and_failure_rates() {
        let paths = PathHistory::default();
        let sample = BaselineSample { fuel: 1000, host_calls: 3, micros: 50 };
        for _ in 0..5 {
            paths.observe(("m", "p", &[]), Some(sample), false, Instant::now());
        }
        assert_eq!(paths.deviation("m", "p", 1000, 3), Some(0.0));
        assert!(paths.deviation("m", "p", 5000, 3).expect("baseline") > 3.0, "five times the fuel is far off");
        assert_eq!(paths.failure_rate(("m", "p", &[])), 0.0);
        // A failure counts for the failure rate, never for the baseline.
        paths.observe(
            ("m", "p", &[]),
            Some(BaselineSample { fuel: 1, host_calls: 1, micros: 1 }),
            true,
            Instant::now(),
        );
        assert!((paths.failure_rate(("m", "p", &[])) - 0.2).abs() < 1e-6);
        assert_eq!(paths.deviation("m", "p", 1000, 3), Some(0.0));
        // An attempt without a mirror has no sample: only its end counts.
        paths.observe(("m", "p", &[]), None, false, Instant::now());
        assert_eq!(paths.deviation("m", "p", 1000, 3), Some(0.0));
        assert_eq!(paths.deviation("m", "other", 1, 1), None);
    }

    /// A diversion goes to a path likelier to succeed than the attempt is
    /// predicted to; to one that fails more, it is held back, with a probe
    /// now and then, and a probe that goes well opens the path again.
    #[test]
    fn diversions_go_to_a_path_likelier_to_succeed_and_probe_one_that_is_not() {
        let paths = PathHistory::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let backup = ("m", "backup", &[][..]);
        assert!(paths.worth_diverting_to(backup, 0.3, &EVIDENCE, t0), "never run: nothing against it");
        for ms in 0..5 {
            paths.observe(backup, None, true, at(ms));
        }
        assert!(!paths.worth_diverting_to(backup, 0.9, &EVIDENCE, at(10)), "it fails every time");
        let probed = (11..30).find(|ms| paths.worth_diverting_to(backup, 0.9, &EVIDENCE, at(*ms)));
        let probed = probed.expect("after a few held back, one goes as a probe");
        assert!(probed <= 15, "{probed}");
        assert!(!paths.worth_diverting_to(backup, 0.9, &EVIDENCE, at(probed + 1)), "one probe at a time");
        paths.observe(backup, None, false, at(probed + 2));
        assert!(paths.worth_diverting_to(backup, 0.3, &EVIDENCE, at(probed + 3)), "the probe went well: open again");
    }
}
