//! How the arms of a split (`transaction/split.rs`) compare on the
//! transactions they ran: success rate, latency and cost, each with a 95%
//! confidence interval, so that an operator can tell a difference from
//! noise before moving traffic.

use super::RecordedTransaction;
use crate::policy::PathMeta;
use crate::store::TransactionOutcome;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The normal quantile of a two-sided 95% interval.
const Z95: f64 = 1.959_963_984_540_054;

/// A value with its 95% confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The estimate.
    pub value: f64,
    /// The interval's lower end.
    pub low: f64,
    /// The interval's upper end.
    pub high: f64,
}

/// One arm's transactions, summed up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmReport {
    /// The arm (`control` for the usual order).
    pub arm: String,
    /// Its transactions among those looked at.
    pub transactions: u64,
    /// Those that committed.
    pub committed: u64,
    /// The share that committed (a Wilson interval).
    pub success_rate: Estimate,
    /// Mean time over all attempts, in milliseconds (a normal interval).
    pub latency_ms: Estimate,
    /// The median and 95th percentile of that time.
    pub latency_p50_ms: f64,
    /// See `latency_p50_ms`.
    pub latency_p95_ms: f64,
    /// Mean cost per transaction: each attempt costs its path's
    /// `[paths.NAME] cost`; `None` when no path has one.
    pub cost: Option<Estimate>,
    /// Attempts per transaction, on average.
    pub attempts_per_transaction: f64,
}

/// The arms of a module's split, compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitReport {
    /// The module (its content hash).
    pub module: String,
    /// How many transaction records were looked at (of every module).
    pub scanned: usize,
    /// Each arm that ran any of them, `control` first.
    pub arms: Vec<ArmReport>,
}

/// Compares the arms of the records of `module` among `records`; each
/// attempt costs what `paths` says of its path.
pub(crate) fn compare<'a>(
    module: &str,
    records: impl IntoIterator<Item = &'a RecordedTransaction>,
    paths: &BTreeMap<String, PathMeta>,
) -> Vec<ArmReport> {
    #[derive(Default)]
    struct Sums {
        committed: u64,
        latencies_ms: Vec<f64>,
        costs: Vec<f64>,
        attempts: u64,
    }
    let priced = paths.values().any(|meta| meta.cost.is_some());
    let mut arms: BTreeMap<String, Sums> = BTreeMap::new();
    for record in records {
        let Some(arm) = record.history.first().and_then(|first| first.split_arm.clone()) else { continue };
        if record.module != module {
            continue;
        }
        let sums = arms.entry(arm).or_default();
        sums.committed += u64::from(matches!(record.outcome, TransactionOutcome::Committed { .. }));
        let micros: u64 = record.attempts.iter().map(|attempt| attempt.duration_micros).sum();
        sums.latencies_ms.push(micros as f64 / 1_000.0);
        let cost = record.attempts.iter().filter_map(|attempt| paths.get(&attempt.path).and_then(|m| m.cost)).sum();
        sums.costs.push(cost);
        sums.attempts += record.attempts.len() as u64;
    }
    let mut reports: Vec<ArmReport> = arms
        .into_iter()
        .map(|(arm, mut sums)| {
            let n = sums.latencies_ms.len() as u64;
            sums.latencies_ms.sort_by(f64::total_cmp);
            ArmReport {
                arm,
                transactions: n,
                committed: sums.committed,
                success_rate: wilson(sums.committed, n),
                latency_ms: mean(&sums.latencies_ms),
                latency_p50_ms: percentile(&sums.latencies_ms, 0.50),
                latency_p95_ms: percentile(&sums.latencies_ms, 0.95),
                cost: priced.then(|| mean(&sums.costs)),
                attempts_per_transaction: if n == 0 { 0.0 } else { sums.attempts as f64 / n as f64 },
            }
        })
        .collect();
    reports.sort_by_key(|report| report.arm != super::split::CONTROL);
    reports
}

/// The Wilson score interval of `successes` in `n`.
fn wilson(successes: u64, n: u64) -> Estimate {
    if n == 0 {
        return Estimate { value: 0.0, low: 0.0, high: 1.0 };
    }
    let (k, n) = (successes as f64, n as f64);
    let p = k / n;
    let z2 = Z95 * Z95;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
    Estimate { value: p, low: (centre - half).max(0.0), high: (centre + half).min(1.0) }
}

/// The mean and its normal interval (the interval is the mean itself
/// for fewer than two values).
fn mean(values: &[f64]) -> Estimate {
    let n = values.len() as f64;
    if values.is_empty() {
        return Estimate { value: 0.0, low: 0.0, high: 0.0 };
    }
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return Estimate { value: mean, low: mean, high: mean };
    }
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let half = Z95 * (variance / n).sqrt();
    Estimate { value: mean, low: mean - half, high: mean + half }
}

/// The `q` quantile of sorted values (nearest rank).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_intervals_are_the_textbook_ones() {
        // 8 of 10: Wilson's 95% interval is [0.490, 0.943].
        let rate = wilson(8, 10);
        assert!((rate.value - 0.8).abs() < 1e-12);
        assert!((rate.low - 0.4902).abs() < 1e-3 && (rate.high - 0.9433).abs() < 1e-3, "{rate:?}");
        // All of them: the interval still says how few there were.
        let all = wilson(5, 5);
        assert!(all.high == 1.0 && (all.low - 0.5655).abs() < 1e-3, "{all:?}");
        // 1..=5: mean 3, standard error sqrt(2.5 / 5).
        let estimate = mean(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        let half = Z95 * (2.5_f64 / 5.0).sqrt();
        assert!((estimate.value - 3.0).abs() < 1e-12 && (estimate.high - 3.0 - half).abs() < 1e-12);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.95), 4.0);
    }
}
