//! The online model: what the predictor learns from this deployment's own
//! outcomes, as they happen.
//!
//! The shipped ONNX model is trained offline on a synthetic workload; it
//! cannot know a deployment's endpoints, inputs and rhythms. Beside it runs
//! a logistic regression updated after every attempt whose outcome is an
//! honest label (see [`crate::dataset`]: not stopped by the gate, not
//! rescued by an adjustment; the exploration share keeps flagged attempts
//! among them). Its inputs are the features, each as `ln(1 + x)`, and the
//! ONNX model's logit, which makes the ONNX model its prior: it starts with
//! weight 1 on that logit and 0 on every feature, and a bias that maps the
//! model card's threshold onto the default gate threshold, so that before
//! it has learnt anything it flags exactly what the card flags. Updates are
//! AdaGrad steps on the log loss, so features of very different scales
//! learn at their own pace, with a little L2 shrinkage on the features.
//! AdaGrad gives each weight's first large gradient a full step, so one
//! surprising attempt could move every weight at once: a handful of
//! failures nothing foretold (a backup path going down) made the model
//! flag every attempt. So each update is scaled down, if need be, to move
//! the attempt's own logit by at most a bound that falls as the model
//! learns, to a floor that keeps it following a deployment that changes.
//!
//! Its output is a probability fitted to outcomes, and the runtime reports
//! how well: each attempt is scored before it is learnt from (prequential),
//! and the calibration error over those scores is kept with the weights.
//! The weights are saved in the store (see `StateStore::save_learnt`), so
//! a restart keeps them; once the runtime's model is replaced by one with
//! another digest, the online model starts afresh on it.

use super::features::{FEATURE_NAMES, Features, SCHEMA_VERSION};
use super::standing::Standing;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// The name under which the online model is saved in the store.
pub(crate) const STORE_NAME: &str = "online-model";
/// The version of the saved form; another is refused and started afresh.
const FORMAT: u32 = 1;
/// The gate threshold a fresh model's card threshold is mapped onto.
const REFERENCE_THRESHOLD: f64 = 0.3;
/// AdaGrad's step size.
const STEP: f64 = 0.5;
/// How far one update may move its own attempt's logit at first; the
/// bound falls as `MAX_MOVE / sqrt(1 + updates / MOVE_DECAY_UPDATES)`…
const MAX_MOVE: f64 = 0.5;
const MOVE_DECAY_UPDATES: f64 = 100.0;
/// …to this floor.
const MIN_MOVE: f64 = 0.1;
/// L2 shrinkage of the feature weights per update.
const SHRINK: f64 = 1e-4;
/// The largest transformed feature value: `ln(1 + x)` of anything bigger
/// than about 5e8 is cut, so that one absurd value cannot swing the model.
const MAX_INPUT: f64 = 20.0;
/// Probabilities the prior's logit is taken at are kept this far from 0 and 1.
const PRIOR_EPSILON: f64 = 1e-4;
/// Calibration bins over `[0, 1]`.
const BINS: usize = 10;

/// The online model as saved and shown: its weights by name and how it
/// has done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearntModel {
    /// The saved form's version.
    pub format: u32,
    /// The feature schema its weights belong to.
    pub feature_schema_version: u32,
    /// The digest of the ONNX model it refines (its prior).
    pub prior_digest: String,
    /// `bias`, `prior` (the ONNX model's logit), then the features, in order.
    pub names: Vec<String>,
    /// One weight per name.
    pub weights: Vec<f64>,
    /// AdaGrad's sums of squared gradients, one per weight.
    pub squared_gradients: Vec<f64>,
    /// Attempts learnt from.
    pub updates: u64,
    /// Of them, the ones that failed.
    pub failures: u64,
    /// Per probability bin, `(attempts, sum of scores, failures)` of the
    /// scores given before learning from each attempt.
    pub calibration: Vec<(u64, f64, u64)>,
    /// The mean log loss of those scores.
    pub mean_log_loss: f64,
    /// Their expected calibration error: over the bins, weighted by their
    /// attempts, how far the mean score is from the share that failed.
    pub calibration_error: f64,
    /// Its record of lone calls, which says how often the gate acts on one
    /// (see [`super::standing`]). Saved models from before it start with none.
    #[serde(default)]
    pub standing: Standing,
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

fn logit(p: f64) -> f64 {
    let p = p.clamp(PRIOR_EPSILON, 1.0 - PRIOR_EPSILON);
    (p / (1.0 - p)).ln()
}

impl LearntModel {
    /// A model that has learnt nothing: the ONNX model with digest
    /// `prior_digest`, its card's threshold (if any) mapped onto the
    /// reference threshold.
    pub(crate) fn fresh(prior_digest: &str, card_threshold: Option<f64>) -> Self {
        let names: Vec<String> =
            ["bias", "prior"].into_iter().chain(FEATURE_NAMES.iter().copied()).map(String::from).collect();
        let mut weights = vec![0.0; names.len()];
        weights[0] =
            card_threshold.filter(|t| *t > 0.0 && *t < 1.0).map_or(0.0, |own| logit(REFERENCE_THRESHOLD) - logit(own));
        weights[1] = 1.0;
        Self {
            format: FORMAT,
            feature_schema_version: SCHEMA_VERSION,
            prior_digest: prior_digest.to_string(),
            squared_gradients: vec![0.0; names.len()],
            names,
            weights,
            updates: 0,
            failures: 0,
            calibration: vec![(0, 0.0, 0); BINS],
            mean_log_loss: 0.0,
            calibration_error: 0.0,
            standing: Standing::default(),
        }
    }

    /// Whether a saved model fits this runtime: its format, schema and shape.
    fn fits(&self) -> bool {
        let width = FEATURE_NAMES.len() + 2;
        self.format == FORMAT
            && self.feature_schema_version == SCHEMA_VERSION
            && self.names.len() == width
            && self.names.iter().skip(2).zip(FEATURE_NAMES).all(|(a, b)| a == b)
            && self.weights.len() == width
            && self.squared_gradients.len() == width
            && self.calibration.len() == BINS
            && self.weights.iter().chain(&self.squared_gradients).all(|w| w.is_finite())
    }

    fn inputs(features: &Features, prior: f32) -> Vec<f64> {
        let transformed = features.to_array().into_iter().map(|x| f64::from(x).max(0.0).ln_1p().min(MAX_INPUT));
        [1.0, logit(f64::from(prior))].into_iter().chain(transformed).collect()
    }

    fn probability(&self, inputs: &[f64]) -> f64 {
        sigmoid(self.weights.iter().zip(inputs).map(|(w, x)| w * x).sum())
    }

    /// The expected calibration error of the scores given before learning.
    fn expected_calibration_error(&self) -> f64 {
        let total: u64 = self.calibration.iter().map(|(n, _, _)| n).sum();
        if total == 0 {
            return 0.0;
        }
        self.calibration
            .iter()
            .filter(|(n, _, _)| *n > 0)
            .map(|(n, sum, failures)| {
                let n_f = *n as f64;
                n_f / total as f64 * (sum / n_f - *failures as f64 / n_f).abs()
            })
            .sum()
    }

    /// The weights by name, largest magnitude first, for a person.
    pub fn strongest(&self, how_many: usize) -> Vec<(String, f64)> {
        let mut named: Vec<(String, f64)> = self.names.iter().cloned().zip(self.weights.iter().copied()).collect();
        named.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        named.truncate(how_many);
        named
    }

    fn learn(&mut self, features: &Features, prior: f32, failed: bool) {
        let inputs = Self::inputs(features, prior);
        let p = self.probability(&inputs);
        let y = if failed { 1.0 } else { 0.0 };
        // Scored before it is learnt from: the calibration is prequential.
        let bin = ((p * BINS as f64) as usize).min(BINS - 1);
        let (n, sum, failures) = &mut self.calibration[bin];
        *n += 1;
        *sum += p;
        *failures += u64::from(failed);
        let loss = -(y * p.max(1e-12).ln() + (1.0 - y) * (1.0 - p).max(1e-12).ln());
        self.updates += 1;
        self.failures += u64::from(failed);
        self.mean_log_loss += (loss - self.mean_log_loss) / self.updates as f64;
        self.calibration_error = self.expected_calibration_error();
        let steps: Vec<f64> = inputs
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let gradient = (p - y) * x;
                self.squared_gradients[i] += gradient * gradient;
                STEP / (self.squared_gradients[i].sqrt() + 1e-8) * gradient
            })
            .collect();
        let moved: f64 = steps.iter().zip(&inputs).map(|(step, x)| step * x).sum::<f64>().abs();
        let bound = (MAX_MOVE / (1.0 + self.updates as f64 / MOVE_DECAY_UPDATES).sqrt()).max(MIN_MOVE);
        let scale = if moved > bound { bound / moved } else { 1.0 };
        for (i, step) in steps.iter().enumerate() {
            // The bias and the prior are not shrunk: shrinking the prior's
            // weight would forget the offline model for no reason.
            let shrink = if i >= 2 { SHRINK * self.weights[i] } else { 0.0 };
            self.weights[i] -= scale * step + shrink;
        }
    }
}

/// What a runtime has learnt of its deployment: the online model, and
/// what it knows of each endpoint and path. Saved in the store with the
/// online model; `txmirror model status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Learnt {
    /// The online model, once it has started (a model is configured and
    /// online learning is on).
    pub model: Option<LearntModel>,
    /// Per endpoint really called.
    pub endpoints: Vec<super::history::EndpointSummary>,
    /// Per path run.
    pub paths: Vec<super::paths::PathSummary>,
}

/// The ONNX model an online model refines: its probability for one
/// attempt, and which model gave it.
#[derive(Debug, Clone, Copy)]
pub struct Prior<'a> {
    /// The model's probability of failure.
    pub probability: f32,
    /// The model file's digest.
    pub digest: &'a str,
    /// Its card's threshold, if it has one.
    pub card_threshold: Option<f64>,
}

impl<'a> Prior<'a> {
    /// The prior a model gives: its probability for one attempt, and the
    /// model's digest and card threshold.
    pub fn of(model: &'a super::ModelInfo, probability: f32) -> Self {
        Self { probability, digest: &model.digest, card_threshold: model.threshold }
    }
}

/// The runtime's online model, shared by every attempt.
///
/// It refines one ONNX model: when the runtime's model is replaced (a
/// reload), what was learnt on the old one's logit no longer means the same
/// and the online model starts afresh on the new one.
#[derive(Debug, Default)]
pub struct OnlineModel {
    learnt: Mutex<Option<LearntModel>>,
}

impl OnlineModel {
    /// An online model that goes on from `saved`, if it was saved by this
    /// runtime's schema and format (the prior is checked when it scores).
    pub fn restore(saved: Option<LearntModel>) -> Self {
        let saved = saved.filter(LearntModel::fits);
        Self { learnt: Mutex::new(saved) }
    }

    /// Runs `f` on the model for `prior`, starting afresh if it refines another.
    fn with<T>(&self, prior: &Prior<'_>, f: impl FnOnce(&mut LearntModel) -> T) -> T {
        let mut learnt = self.learnt.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let learnt = match &mut *learnt {
            Some(model) if model.prior_digest == prior.digest => model,
            other => other.insert(LearntModel::fresh(prior.digest, prior.card_threshold)),
        };
        f(learnt)
    }

    /// The probability of failure given the features and the prior.
    pub fn score(&self, features: &Features, prior: &Prior<'_>) -> f32 {
        self.with(prior, |learnt| learnt.probability(&LearntModel::inputs(features, prior.probability)) as f32)
    }

    /// Learns from one attempt's honest outcome; returns how many attempts
    /// it has learnt from.
    pub fn learn(&self, features: &Features, prior: &Prior<'_>, failed: bool) -> u64 {
        self.with(prior, |learnt| {
            learnt.learn(features, prior.probability, failed);
            learnt.updates
        })
    }

    /// Whether the gate acts on a call the model alone carried over the
    /// gate's `threshold`, given a uniform `draw` taken for the call (see
    /// [`super::standing`]). Before the model has started, it does.
    pub fn acts_alone(&self, threshold: f32, draw: f64) -> bool {
        let mut learnt = self.learnt.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        learnt.as_mut().is_none_or(|model| model.standing.acts(threshold, draw))
    }

    /// Records the outcome of a lone call the gate let through as a trial.
    pub fn record_trial(&self, failed: bool) {
        let mut learnt = self.learnt.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(model) = learnt.as_mut() {
            model.standing.record(failed);
        }
    }

    /// A copy of what it has learnt, if it has started.
    pub fn snapshot(&self) -> Option<LearntModel> {
        self.learnt.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(rate_limited: f32, noise: f32) -> Features {
        Features { rate_limited_share: rate_limited, attempt: 1.0, input_bytes: 200.0 + noise, ..Default::default() }
    }

    #[test]
    fn a_fresh_model_flags_what_the_card_flags() {
        let model = LearntModel::fresh("d", Some(0.869));
        let at = |prior: f32| model.probability(&LearntModel::inputs(&Features::default(), prior));
        assert!((at(0.869) - REFERENCE_THRESHOLD).abs() < 1e-6, "{}", at(0.869));
        assert!(at(0.95) > REFERENCE_THRESHOLD && at(0.5) < REFERENCE_THRESHOLD);
        let uncarded = LearntModel::fresh("d", None);
        let p = uncarded.probability(&LearntModel::inputs(&Features::default(), 0.4));
        assert!((p - 0.4).abs() < 1e-6, "without a card, the prior as it is: {p}");
    }

    /// A model that has learnt a quiet deployment sees a burst of failures
    /// it had no sign of (a backup path down, say): it moves, and does not
    /// flip to flagging every quiet attempt.
    #[test]
    fn a_burst_of_surprising_failures_does_not_flip_a_model_that_has_learnt() {
        let model = OnlineModel::default();
        let prior = Prior { probability: 0.1, digest: "d", card_threshold: Some(0.869) };
        for i in 0..500 {
            model.learn(&features(0.0, (i % 50) as f32), &prior, i % 50 == 0);
        }
        let before = model.score(&features(0.0, 10.0), &prior);
        for i in 0..8 {
            model.learn(&features(0.0, (i * 7) as f32), &prior, true);
        }
        let after = model.score(&features(0.0, 10.0), &prior);
        assert!(after > before, "it learns from them: {before} -> {after}");
        assert!(after < REFERENCE_THRESHOLD as f32, "and does not flag every quiet attempt: {before} -> {after}");
    }

    /// What the offline model never saw: here, failures wherever an
    /// endpoint rate limits. The online model learns it, and its scores
    /// become calibrated on the outcomes.
    #[test]
    fn it_learns_what_the_prior_does_not_know_and_keeps_calibrated() {
        let model = OnlineModel::default();
        let prior = Prior { probability: 0.1, digest: "d", card_threshold: Some(0.869) };
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 1000) as f32 / 1000.0
        };
        for _ in 0..3000 {
            let limited = next() < 0.3;
            // 90% of rate-limited attempts fail, 5% of the others.
            let failed = next() < if limited { 0.9 } else { 0.05 };
            model.learn(&features(if limited { 0.6 } else { 0.0 }, next() * 50.0), &prior, failed);
        }
        let limited = model.score(&features(0.6, 10.0), &prior);
        let quiet = model.score(&features(0.0, 10.0), &prior);
        assert!(limited > 0.75 && quiet < 0.15, "{limited} {quiet}");
        let learnt = model.snapshot().expect("started");
        assert_eq!(learnt.updates, 3000);
        assert!(learnt.calibration_error < 0.1, "{}", learnt.calibration_error);
        assert!(learnt.mean_log_loss < 0.45, "{}", learnt.mean_log_loss);
        assert_eq!(learnt.strongest(1)[0].0, "rate_limited_share", "{:?}", learnt.strongest(3));

        // Saved and restored, it goes on where it was; on another prior
        // (a reloaded model), afresh.
        let saved: LearntModel = serde_json::from_str(&serde_json::to_string(&learnt).expect("JSON")).expect("JSON");
        let restored = OnlineModel::restore(Some(saved));
        assert_eq!(restored.score(&features(0.6, 10.0), &prior), limited);
        let reloaded = Prior { digest: "another model", ..prior };
        restored.learn(&features(0.0, 0.0), &reloaded, false);
        assert_eq!(restored.snapshot().map(|l| l.updates), Some(1));
        // A saved model of another schema is not restored.
        let old = LearntModel { feature_schema_version: SCHEMA_VERSION - 1, ..learnt };
        assert_eq!(OnlineModel::restore(Some(old)).snapshot(), None);
    }
}
