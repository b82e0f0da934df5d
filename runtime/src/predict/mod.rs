//! Predictive analysis: from the mirror's trace to a failure probability.
//!
//! - [`features`]: the versioned feature schema, computed from a trace.
//! - [`rules`]: operator rules over features (weights, reasons, actions).
//!
//! A [`Prediction`] is the sum of the weights of the rules that hold,
//! clamped to `[0, 1]`, with the reason and suggested action of each.

pub mod features;
pub mod rules;

pub use features::{FEATURE_NAMES, FeatureContext, Features, SCHEMA_VERSION};
pub use rules::{Action, Rule, RuleError, RuleSet};

use serde::{Deserialize, Serialize};

/// One reason behind a prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    /// The rule that held.
    pub rule: String,
    /// Its weight.
    pub weight: f32,
    /// Why it matters, for a person.
    pub reason: String,
    /// What the rule suggests doing about it.
    pub action: Action,
}

/// The predictor's verdict on one trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The estimated probability that the primary fails, in `[0, 1]`.
    pub failure_probability: f32,
    /// The rules that held, heaviest first.
    pub reasons: Vec<Reason>,
    /// What produced the probability: `rules` until a model is configured.
    pub source: String,
    /// The features it was computed from.
    pub features: Features,
}
