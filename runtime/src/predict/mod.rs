//! Predictive analysis: from the mirror's trace to a failure probability.
//!
//! - [`features`]: the versioned feature schema, computed from a trace.
//! - [`inputs`]: the input fields a policy declares, read per transaction.
//! - [`rules`]: operator rules over features (weights, reasons, actions).
//! - [`model`]: an ONNX model over the same features, run by ONNX Runtime.
//! - [`model_slot`]: the runtime's current model, replaceable while it runs.
//! - [`online`]: a logistic regression learnt from the deployment's own
//!   outcomes, with the ONNX model as its prior.
//! - [`standing`]: the model's record of its lone calls, which says how
//!   often the gate acts on a call that only the model's share carried.
//! - `history`, `paths` and `hold`: what is learnt of endpoints and paths
//!   as transactions run, and the half-open breaker kept for each.
//!
//! ## How rules and model combine
//!
//! The rules give `p_rules`: the sum of the weights of the rules that hold,
//! clamped to `[0, 1]`. The model, if one is configured, gives `p_model`.
//! With online learning (`prediction.online_learning`, on by default), the
//! [`online`] model refines it into `p_learnt`, a probability fitted to
//! this deployment's outcomes, which counts with weight `w` =
//! `prediction.model_weight`, 1 if unset. Without online learning,
//! `p_model` counts with `w` = the policy's value or, unset, the gate's
//! threshold over the model's own (`txmirror.threshold`, chosen in
//! training), at most 1: the model alone then crosses the gate's threshold
//! exactly where its training chose to flag; a model without a threshold
//! counts in full.
//! The two are independent pieces of evidence of failure, combined as a
//! noisy OR:
//!
//! ```text
//! p = 1 - (1 - p_rules) * (1 - w * p_learnt)      (or p_model, unlearnt)
//! ```
//!
//! So the model can raise what the rules say but never lower it: a rule an
//! operator wrote always counts in full. The model's share appears among the
//! reasons as `model`, with `w * p_model` as its weight and the policy's
//! `prediction.model_action` as its action. The action taken is that of the
//! heaviest rule that suggests one, else the model's. Without a model, the
//! rules alone decide, and [`Prediction::source`] says so.

mod evaluation;
mod features;
pub(crate) mod history;
mod hold;
mod inputs;
mod model;
pub(crate) mod model_slot;
pub(crate) mod online;
pub(crate) mod paths;
mod rules;
mod standing;

pub use evaluation::{Evaluation, evaluate};
pub use features::{
    AttemptLimits, EndpointLookup, EndpointView, FEATURE_NAMES, FeatureAccumulator, FeatureContext, Features,
    SCHEMA_VERSION, TraceTotals,
};
pub use history::{ConditionSummary, EndpointSummary};
pub use inputs::{InputFeature, InputKind, InputProfile, MAX_INPUTS};
pub use model::{Model, ModelError, ModelInfo};
pub use model_slot::Reloaded;
pub use online::{Learnt, LearntModel, OnlineModel, Prior};
pub use paths::PathSummary;
pub use rules::{Rule, RuleError, RuleSet};
pub use standing::Standing;
// Actions are part of the vocabulary; they are named here too, where rules suggest them.
pub use crate::vocab::Action;

/// The name under which the model's share appears among the reasons.
pub const MODEL_REASON: &str = "model";
/// [`Prediction::source`] when no model is configured.
pub const RULES_ALONE: &str = "rules alone (no model configured)";

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
    /// What produced the probability: [`RULES_ALONE`], `rules + model NAME
    /// VERSION`, or why the configured model did not take part.
    pub source: String,
    /// The features it was computed from.
    pub features: Features,
    /// The rules' probability alone.
    #[serde(default)]
    pub rules_probability: f32,
    /// The model's probability, before the policy's weight, if it scored.
    #[serde(default)]
    pub model_probability: Option<f32>,
    /// The online model's refinement of it, if online learning is on: the
    /// probability that counted.
    #[serde(default)]
    pub learnt_probability: Option<f32>,
    /// A call it scored goes as a probe of an endpoint being held back
    /// (see `EndpointView::probe`): the gate lets the attempt through
    /// whatever it scores, as it does in the exploration share.
    #[serde(default)]
    pub probe: bool,
}

/// What the model said of an attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelScore {
    /// The ONNX model's probability.
    pub probability: f32,
    /// The online model's, if online learning is on.
    pub learnt: Option<f32>,
}

impl Prediction {
    /// Adds the model's probability (see the module's documentation).
    pub fn with_model(mut self, model: &ModelInfo, score: ModelScore, weight: f32, action: Action) -> Self {
        let counted = score.learnt.unwrap_or(score.probability);
        let share = (weight * counted).clamp(0.0, 1.0);
        self.failure_probability = (1.0 - (1.0 - self.rules_probability) * (1.0 - share)).clamp(0.0, 1.0);
        self.model_probability = Some(score.probability);
        self.learnt_probability = score.learnt;
        self.source = match score.learnt {
            Some(_) => format!("rules + model {} (learning online)", model.label()),
            None => format!("rules + model {}", model.label()),
        };
        let said = match score.learnt {
            Some(learnt) => format!(
                "the model {} puts the chance of failure at {:.0}%, {:.0}% as learnt from this deployment",
                model.label(),
                score.probability * 100.0,
                learnt * 100.0
            ),
            None => {
                format!("the model {} puts the chance of failure at {:.0}%", model.label(), score.probability * 100.0)
            }
        };
        let reason = Reason { rule: MODEL_REASON.into(), weight: share, reason: said, action };
        let at = self.reasons.iter().position(|r| r.weight < share).unwrap_or(self.reasons.len());
        self.reasons.insert(at, reason);
        self
    }

    /// Records why the configured model did not take part.
    pub fn without_model(mut self, why: String) -> Self {
        self.source = format!("rules alone ({why})");
        self
    }

    /// The action to take: the heaviest rule's that suggests one, else the model's.
    pub fn suggested_action(&self) -> Action {
        let suggests = |r: &&Reason| r.action != Action::None;
        self.reasons
            .iter()
            .filter(|r| r.rule != MODEL_REASON)
            .find(suggests)
            .or_else(|| self.reasons.iter().find(suggests))
            .map_or(Action::None, |r| r.action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ModelInfo {
        ModelInfo {
            path: "m.onnx".into(),
            name: "m".into(),
            version: "7".into(),
            trained_on: None,
            threshold: None,
            digest: String::new(),
        }
    }

    fn unlearnt(probability: f32) -> ModelScore {
        ModelScore { probability, learnt: None }
    }

    #[test]
    fn the_model_adds_evidence_as_a_noisy_or() {
        let rules = RuleSet::defaults();
        let alone = rules.score(&Features { contended_keys: 1.0, ..Default::default() }, &InputProfile::default());
        assert_eq!(alone.source, RULES_ALONE);
        assert!((alone.failure_probability - 0.2).abs() < 1e-6);

        let combined = alone.clone().with_model(&info(), unlearnt(0.5), 1.0, Action::Hedge);
        assert!((combined.failure_probability - 0.6).abs() < 1e-6, "1 - 0.8 * 0.5");
        assert_eq!(combined.rules_probability, alone.failure_probability);
        assert_eq!(combined.model_probability, Some(0.5));
        assert_eq!(combined.source, "rules + model m 7");
        assert_eq!(combined.reasons[0].rule, MODEL_REASON, "heaviest first");
        assert_eq!(combined.suggested_action(), Action::Hedge, "no rule suggests an action");

        let halved = alone.clone().with_model(&info(), unlearnt(0.5), 0.5, Action::Hedge);
        assert!((halved.failure_probability - 0.4).abs() < 1e-6, "1 - 0.8 * 0.75");

        // Learning online, the learnt probability is what counts.
        let learnt = alone.with_model(&info(), ModelScore { probability: 0.5, learnt: Some(0.25) }, 1.0, Action::Hedge);
        assert!((learnt.failure_probability - 0.4).abs() < 1e-6, "1 - 0.8 * 0.75");
        assert_eq!((learnt.model_probability, learnt.learnt_probability), (Some(0.5), Some(0.25)));
        assert_eq!(learnt.source, "rules + model m 7 (learning online)");
    }

    #[test]
    fn a_rule_that_suggests_an_action_outranks_the_model() {
        let rules = RuleSet::defaults();
        let p = rules
            .score(&Features { validation_errors: 1.0, ..Default::default() }, &InputProfile::default())
            .with_model(&info(), unlearnt(0.9), 1.0, Action::Hedge);
        assert_eq!(p.reasons[0].rule, MODEL_REASON);
        assert_eq!(p.suggested_action(), Action::FailFast);
        assert!(p.failure_probability >= p.rules_probability, "the model never lowers the rules");
    }
}
