//! The order a transaction tries its paths in, when the policy describes
//! them (`[paths.NAME]`): by predicted success, latency and cost, weighed
//! by the caller's profile (`[profiles.NAME]`). A pure function, so that
//! every ordering is unit-tested; the runtime brings what it learnt.
//!
//! Each path's predicted success is its reliability prior (0.9 unless the
//! policy says) times one minus its recent failure rate on this node. Its
//! latency and cost are the policy's, each divided by the largest among
//! the paths (a path without one counts as the fastest or the cheapest).
//! With `r` the profile's risk tolerance and `w` its weight of speed
//! against cost, a path's score is
//!
//! ```text
//! (1 − r) × success + r × (1 − (w × latency + (1 − w) × cost))
//! ```
//!
//! so a cautious caller (`r = 0`) goes by predicted success alone, and a
//! tolerant one (`r = 1`) by speed and cost alone. Paths of equal score
//! keep the policy's order.

use serde::{Deserialize, Serialize};

/// The reliability prior of a path the policy gives none.
pub const DEFAULT_RELIABILITY: f64 = 0.9;

/// A caller's weighing of success against speed and cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Weights {
    /// 0 (only predicted success counts) to 1 (only speed and cost).
    pub(crate) risk_tolerance: f64,
    /// 0 (only cost counts) to 1 (only speed), within speed and cost.
    pub(crate) speed_weight: f64,
}

/// What is known of one path before the transaction runs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Candidate {
    pub(crate) path: String,
    /// The policy's prior, 0 to 1.
    pub(crate) reliability: f64,
    /// Its recent failure rate on this node, 0 to 1.
    pub(crate) failure_rate: f64,
    pub(crate) expected_latency_ms: Option<u64>,
    pub(crate) cost: Option<f64>,
}

/// One path's place in the order, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathChoice {
    /// The path.
    pub path: String,
    /// Its score: the order is by score, highest first.
    pub score: f64,
    /// Its predicted success: the prior times one minus the failure rate.
    pub success: f64,
    /// The policy's reliability prior.
    pub reliability: f64,
    /// Its recent failure rate on this node.
    pub failure_rate: f64,
    /// The policy's expected latency, if any.
    pub expected_latency_ms: Option<u64>,
    /// The policy's cost, if any.
    pub cost: Option<f64>,
    /// The profile the order was weighed for.
    pub profile: String,
}

/// The candidates in the order to try them, with each one's reasons.
pub(crate) fn order(candidates: Vec<Candidate>, weights: Weights, profile: &str) -> Vec<PathChoice> {
    let longest = candidates.iter().filter_map(|c| c.expected_latency_ms).max().unwrap_or(0) as f64;
    let dearest = candidates.iter().filter_map(|c| c.cost).fold(0.0_f64, f64::max);
    let share = |value: f64, largest: f64| if largest > 0.0 { value / largest } else { 0.0 };
    let Weights { risk_tolerance: r, speed_weight: w } = weights;
    let mut choices: Vec<PathChoice> = candidates
        .into_iter()
        .map(|c| {
            let success = c.reliability * (1.0 - c.failure_rate.clamp(0.0, 1.0));
            let latency = share(c.expected_latency_ms.unwrap_or(0) as f64, longest);
            let cost = share(c.cost.unwrap_or(0.0), dearest);
            let score = (1.0 - r) * success + r * (1.0 - (w * latency + (1.0 - w) * cost));
            PathChoice {
                path: c.path,
                score,
                success,
                reliability: c.reliability,
                failure_rate: c.failure_rate,
                expected_latency_ms: c.expected_latency_ms,
                cost: c.cost,
                profile: profile.to_string(),
            }
        })
        .collect();
    // Stable: equal scores keep the policy's order.
    choices.sort_by(|a, b| b.score.total_cmp(&a.score));
    choices
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> Vec<Candidate> {
        let path = |name: &str, reliability, latency, cost| Candidate {
            path: name.into(),
            reliability,
            failure_rate: 0.0,
            expected_latency_ms: Some(latency),
            cost: Some(cost),
        };
        vec![path("card", 0.99, 800, 0.30), path("wallet", 0.95, 200, 0.10), path("invoice", 0.999, 2_000, 0.05)]
    }

    fn names(choices: &[PathChoice]) -> Vec<&str> {
        choices.iter().map(|c| c.path.as_str()).collect()
    }

    #[test]
    fn a_cautious_caller_goes_by_success_a_hurried_one_by_speed_a_thrifty_one_by_cost() {
        let cautious = order(paths(), Weights { risk_tolerance: 0.0, speed_weight: 0.5 }, "cautious");
        assert_eq!(names(&cautious), ["invoice", "card", "wallet"]);
        let hurried = order(paths(), Weights { risk_tolerance: 1.0, speed_weight: 1.0 }, "hurried");
        assert_eq!(names(&hurried), ["wallet", "card", "invoice"]);
        let thrifty = order(paths(), Weights { risk_tolerance: 1.0, speed_weight: 0.0 }, "thrifty");
        assert_eq!(names(&thrifty), ["invoice", "wallet", "card"]);
        assert_eq!(thrifty[0].profile, "thrifty");
    }

    #[test]
    fn what_the_node_learnt_of_a_path_moves_it_down() {
        let mut candidates = paths();
        candidates[2].failure_rate = 0.5;
        let cautious = order(candidates, Weights { risk_tolerance: 0.0, speed_weight: 0.5 }, "cautious");
        assert_eq!(names(&cautious), ["card", "wallet", "invoice"]);
        assert!((cautious[2].success - 0.4995).abs() < 1e-9, "{:?}", cautious[2]);
    }

    #[test]
    fn paths_the_policy_does_not_tell_apart_keep_its_order() {
        let plain = |name: &str| Candidate {
            path: name.into(),
            reliability: DEFAULT_RELIABILITY,
            failure_rate: 0.0,
            expected_latency_ms: None,
            cost: None,
        };
        let choices =
            order(vec![plain("b"), plain("a"), plain("c")], Weights { risk_tolerance: 0.3, speed_weight: 0.5 }, "");
        assert_eq!(names(&choices), ["b", "a", "c"]);
    }
}
