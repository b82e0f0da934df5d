//! How well a predictor separates failed attempts from committed ones, on
//! labelled examples: the numbers of a model card (see `docs/learning.md`).

use serde::{Deserialize, Serialize};

/// Scores against labels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Labelled examples scored.
    pub rows: usize,
    /// The share that failed.
    pub failure_rate: f64,
    /// Area under the ROC curve: the chance that a failed example scores
    /// above a committed one (ties count half).
    pub auc: f64,
    /// Of the examples flagged (score at or above the threshold), the share that failed.
    pub precision: f64,
    /// Of the failed examples, the share flagged.
    pub recall: f64,
    /// Of the committed examples, the share flagged: false diversions.
    pub false_positive_rate: f64,
    /// Examples flagged.
    pub flagged: usize,
    /// Expected calibration error over ten equal-width probability bins.
    pub calibration_error: f64,
}

/// Evaluates `(score, failed)` pairs at `threshold`.
pub fn evaluate(scored: &[(f64, bool)], threshold: f64) -> Evaluation {
    let rows = scored.len();
    let positives = scored.iter().filter(|(_, failed)| *failed).count();
    let negatives = rows - positives;
    let (mut tp, mut fp) = (0_usize, 0_usize);
    for (score, failed) in scored {
        if *score >= threshold {
            if *failed {
                tp += 1;
            } else {
                fp += 1;
            }
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Evaluation {
        rows,
        failure_rate: ratio(positives, rows),
        auc: auc(scored, positives, negatives),
        precision: ratio(tp, tp + fp),
        recall: ratio(tp, positives),
        false_positive_rate: ratio(fp, negatives),
        flagged: tp + fp,
        calibration_error: calibration_error(scored),
    }
}

/// The Mann-Whitney statistic over ranks, ties sharing their mean rank.
fn auc(scored: &[(f64, bool)], positives: usize, negatives: usize) -> f64 {
    if positives == 0 || negatives == 0 {
        return f64::NAN;
    }
    let mut sorted: Vec<(f64, bool)> = scored.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1].0 == sorted[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their mean.
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += mean_rank * sorted[i..=j].iter().filter(|(_, failed)| *failed).count() as f64;
        i = j + 1;
    }
    let (p, n) = (positives as f64, negatives as f64);
    (rank_sum - p * (p + 1.0) / 2.0) / (p * n)
}

fn calibration_error(scored: &[(f64, bool)]) -> f64 {
    let bins = 10;
    let mut total = 0.0;
    for bin in 0..bins {
        let (lo, hi) = (bin as f64 / bins as f64, (bin + 1) as f64 / bins as f64);
        let inside: Vec<&(f64, bool)> =
            scored.iter().filter(|(p, _)| *p >= lo && (*p < hi || (bin == bins - 1 && *p <= hi))).collect();
        if inside.is_empty() {
            continue;
        }
        let mean_p = inside.iter().map(|(p, _)| p).sum::<f64>() / inside.len() as f64;
        let rate = inside.iter().filter(|(_, failed)| *failed).count() as f64 / inside.len() as f64;
        total += inside.len() as f64 / scored.len() as f64 * (mean_p - rate).abs();
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_numbers_of_a_small_example() {
        let scored = [(0.9, true), (0.8, false), (0.7, true), (0.2, false), (0.1, false), (0.7, false)];
        let e = evaluate(&scored, 0.7);
        assert_eq!((e.rows, e.flagged), (6, 4));
        assert!((e.precision - 0.5).abs() < 1e-12);
        assert!((e.recall - 1.0).abs() < 1e-12);
        assert!((e.false_positive_rate - 0.5).abs() < 1e-12);
        // Pairs (failed, committed) ordered right: 0.9 beats all 4; 0.7 beats 0.2, 0.1 and ties 0.7: 4 + 2.5.
        assert!((e.auc - 6.5 / 8.0).abs() < 1e-12, "{}", e.auc);
        assert!(e.calibration_error > 0.0 && e.calibration_error < 1.0);
        assert!(evaluate(&[(0.5, true)], 0.5).auc.is_nan(), "one class has no AUC");
    }
}
