//! The model's standing: how often its lone calls turn out right, and so
//! how often the gate acts on one.
//!
//! The online model learns only from honest labels: attempts the gate let
//! go. Where the model alone carries an attempt over the gate's threshold
//! (no rule agrees), the gate diverts or hedges it, and its outcome is
//! never seen. So nothing corrects the model where it matters most: after
//! a burst of failures its features could not explain, its bias rises, it
//! flags every ordinary call, and each diversion hides the outcome that
//! would have brought it back down. Measured on the shop workload, such
//! lone calls were right about one time in ten while the gate's threshold
//! asks for three.
//!
//! So the gate acts on a lone call only as often as the model's record of
//! lone calls earns. The record is the outcomes of the latest lone calls
//! let through as trials ([`WINDOW`] of them). The rate `q` at which lone
//! calls fail is uncertain; given the record, with a uniform prior, it
//! follows `Beta(failures + 1, successes + 1)`. The gate acts with the
//! probability that `q` reaches its threshold, and lets the call through as
//! a trial otherwise (Thompson sampling: a call is acted on when a draw of
//! `q` says acting is worth it). A model with no record acts on 70% of its
//! lone calls at the default threshold of 0.3; one whose lone calls failed
//! 1 time in 20 acts on about 1%, and its trials keep the record fresh, so
//! it earns its standing back as soon as its calls come true again. The
//! draw is taken from the transaction id and the attempt number, so a
//! rerun of the same history decides alike.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// How many of the latest trials the record keeps: enough for the rate to
/// be told from the threshold, few enough to follow a deployment that
/// changes within a few minutes of traffic.
pub const WINDOW: usize = 50;

/// The model's record of its lone calls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Standing {
    /// The outcomes of the latest lone calls let through as trials, oldest
    /// first: `true` where the attempt failed.
    pub trials: VecDeque<bool>,
    /// Lone calls acted on, over the model's life.
    pub acted: u64,
    /// Lone calls let through as trials, over the model's life.
    pub tried: u64,
}

impl Standing {
    /// How many of the trials in the record failed.
    pub fn failures(&self) -> usize {
        self.trials.iter().filter(|failed| **failed).count()
    }

    /// The probability that lone calls fail at least `threshold`-often,
    /// given the record: `P(q >= threshold)` for `q ~ Beta(f + 1, s + 1)`,
    /// which for whole counts is `P(Binomial(f + s + 1, threshold) <= f)`.
    pub fn earned(&self, threshold: f32) -> f64 {
        let t = f64::from(threshold).clamp(1e-9, 1.0 - 1e-9);
        let trials = self.trials.len() as u32 + 1;
        let failures = self.failures() as u32;
        // The binomial's terms from k = 0, each from the one before.
        let mut term = (1.0 - t).powi(trials as i32);
        let mut sum = term;
        for k in 0..failures {
            term *= f64::from(trials - k) / f64::from(k + 1) * t / (1.0 - t);
            sum += term;
        }
        sum.clamp(0.0, 1.0)
    }

    /// Whether the gate acts on a lone call, given a uniform `draw` in
    /// `[0, 1)` taken for it; counts the call either way.
    pub fn acts(&mut self, threshold: f32, draw: f64) -> bool {
        let acts = draw < self.earned(threshold);
        if acts {
            self.acted += 1;
        } else {
            self.tried += 1;
        }
        acts
    }

    /// Records the outcome of a lone call let through as a trial.
    pub fn record(&mut self, failed: bool) {
        if self.trials.len() == WINDOW {
            self.trials.pop_front();
        }
        self.trials.push_back(failed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(failures: usize, successes: usize) -> Standing {
        let mut standing = Standing::default();
        for i in 0..failures + successes {
            standing.record(i < failures);
        }
        standing
    }

    #[test]
    fn without_a_record_the_model_acts_as_often_as_a_uniform_prior_says() {
        assert!((with(0, 0).earned(0.3) - 0.7).abs() < 1e-6, "thresholds are f32");
        assert!((with(0, 0).earned(0.5) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn a_record_of_wrong_calls_loses_the_standing_and_right_ones_earn_it() {
        // 1 failure in 20: the calls are rarely right.
        assert!(with(1, 19).earned(0.3) < 0.01, "{}", with(1, 19).earned(0.3));
        // Half of them failed: acting is worth it at 0.3.
        assert!(with(10, 10).earned(0.3) > 0.95, "{}", with(10, 10).earned(0.3));
        // The exact value for a small case: Beta(2, 2) beyond 0.5 is one half.
        assert!((with(1, 1).earned(0.5) - 0.5).abs() < 1e-9);
        // More evidence, more certainty either way.
        assert!(with(3, 7).earned(0.5) > with(15, 35).earned(0.5));
        assert!(with(7, 3).earned(0.5) < with(35, 15).earned(0.5));
    }

    #[test]
    fn the_record_keeps_only_the_latest_trials_so_a_model_earns_its_standing_back() {
        let mut standing = with(0, WINDOW);
        assert!(standing.earned(0.3) < 1e-6);
        for _ in 0..WINDOW / 2 {
            standing.record(true);
        }
        assert_eq!(standing.trials.len(), WINDOW);
        assert!(standing.earned(0.3) > 0.95, "{}", standing.earned(0.3));
    }

    #[test]
    fn acting_follows_the_draw_and_every_call_is_counted() {
        let mut standing = with(0, 0);
        assert!(standing.acts(0.3, 0.69));
        assert!(!standing.acts(0.3, 0.71));
        assert_eq!((standing.acted, standing.tried), (1, 1));
        // Absurd thresholds stay within [0, 1].
        assert!((0.0..=1.0).contains(&standing.earned(-1.0)) && (0.0..=1.0).contains(&standing.earned(2.0)));
    }
}
