//! Operator rules: conditions on features, with a weight, a reason and a
//! suggested action.
//!
//! A condition is one or more comparisons of a feature with a number,
//! joined by `and`: `validation_errors > 0`, `fuel_ratio >= 0.9 and attempt
//! == 1`. A numeric input the policy declares is compared as
//! `input.NAME` (`input.amount_cents > 100000`); when the input lacks it,
//! the comparison does not hold. Rules are checked when the policy is
//! loaded; a rule that names an unknown feature or input, or does not
//! parse, is refused with its name and why.

use super::features::{FEATURE_NAMES, Features};
use super::inputs::{InputFeature, InputKind, InputProfile};
use super::{Prediction, Reason};
use crate::vocab::Action;
use serde::{Deserialize, Serialize};

/// A rule as written in a policy (`[[prediction.rules]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A short name, shown in reasons.
    pub name: String,
    /// The condition, such as `validation_errors > 0`.
    pub when: String,
    /// Added to the failure probability when the condition holds.
    pub weight: f32,
    /// Why it matters, for a person.
    pub reason: String,
    /// What to do about it.
    #[serde(default = "no_action")]
    pub action: Action,
}

fn no_action() -> Action {
    Action::None
}

/// Why a rule was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("rule `{name}`: {reason}")]
pub struct RuleError {
    /// The rule's name.
    pub name: String,
    /// What is wrong.
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Comparison {
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
    Equal,
    NotEqual,
}

/// What a comparison reads.
#[derive(Debug, Clone, PartialEq)]
enum Operand {
    /// A feature of the schema.
    Feature(&'static str),
    /// A numeric input the policy declares.
    Input(String),
}

#[derive(Debug, Clone, PartialEq)]
struct Term {
    operand: Operand,
    comparison: Comparison,
    value: f32,
}

#[derive(Debug, Clone, PartialEq)]
struct CompiledRule {
    rule: Rule,
    terms: Vec<Term>,
}

/// Rules checked and ready to score features.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSet {
    rules: Vec<CompiledRule>,
}

fn parse_term(text: &str, inputs: &[InputFeature]) -> Result<Term, String> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [operand, op, value] = parts.as_slice() else {
        return Err(format!("`{text}` is not of the form `feature op number`"));
    };
    let operand = if let Some(name) = operand.strip_prefix("input.") {
        match inputs.iter().find(|input| input.name == name) {
            Some(input) if input.kind == InputKind::Number => Operand::Input(name.to_string()),
            Some(_) => return Err(format!("input `{name}` is a category; rules compare numbers")),
            None => return Err(format!("unknown input `{name}`; declare it in [[prediction.inputs]]")),
        }
    } else {
        let feature = FEATURE_NAMES.iter().find(|name| **name == *operand).ok_or_else(|| {
            format!(
                "unknown feature `{operand}`; the features are {}, and declared inputs as input.NAME",
                FEATURE_NAMES.join(", ")
            )
        })?;
        Operand::Feature(feature)
    };
    let comparison = match *op {
        ">" => Comparison::Greater,
        ">=" => Comparison::GreaterOrEqual,
        "<" => Comparison::Less,
        "<=" => Comparison::LessOrEqual,
        "==" => Comparison::Equal,
        "!=" => Comparison::NotEqual,
        other => return Err(format!("unknown comparison `{other}`; use >, >=, <, <=, == or !=")),
    };
    let value: f32 = value.parse().map_err(|_| format!("`{value}` is not a number"))?;
    if !value.is_finite() {
        return Err(format!("`{value}` is not a finite number"));
    }
    Ok(Term { operand, comparison, value })
}

impl Term {
    fn holds(&self, features: &Features, inputs: &InputProfile) -> bool {
        let actual = match &self.operand {
            Operand::Feature(name) => features.get(name),
            Operand::Input(name) => inputs.value(name),
        };
        let Some(actual) = actual else { return false };
        match self.comparison {
            Comparison::Greater => actual > self.value,
            Comparison::GreaterOrEqual => actual >= self.value,
            Comparison::Less => actual < self.value,
            Comparison::LessOrEqual => actual <= self.value,
            Comparison::Equal => actual == self.value,
            Comparison::NotEqual => actual != self.value,
        }
    }
}

impl Default for RuleSet {
    fn default() -> Self {
        Self::defaults()
    }
}

impl RuleSet {
    /// Checks and compiles rules, which may compare the declared `inputs`.
    pub fn new(rules: &[Rule], inputs: &[InputFeature]) -> Result<Self, RuleError> {
        let mut compiled = Vec::with_capacity(rules.len());
        for rule in rules {
            let error = |reason: String| RuleError { name: rule.name.clone(), reason };
            if rule.name.trim().is_empty() {
                return Err(error("a rule needs a name".into()));
            }
            if rule.name == super::MODEL_REASON {
                return Err(error(format!("`{}` is reserved for the model's share", super::MODEL_REASON)));
            }
            if !(rule.weight.is_finite() && (-1.0..=1.0).contains(&rule.weight)) {
                return Err(error(format!("weight {} is not between -1 and 1", rule.weight)));
            }
            let terms = rule
                .when
                .split(" and ")
                .map(|term| parse_term(term, inputs))
                .collect::<Result<Vec<_>, _>>()
                .map_err(error)?;
            compiled.push(CompiledRule { rule: rule.clone(), terms });
        }
        Ok(Self { rules: compiled })
    }

    /// The default rules, after seed 002's analysis: contention +0.2, a
    /// validation error +0.4, a predicted timeout +0.3, deviation from the
    /// baseline +0.1; resource exhaustion, which more resources cure; and a
    /// rate limit, which waiting for its window cures.
    pub fn defaults() -> Self {
        let rule = |name: &str, when: &str, weight: f32, reason: &str, action: Action| Rule {
            name: name.into(),
            when: when.into(),
            weight,
            reason: reason.into(),
            action,
        };
        let rules = [
            rule(
                "contention",
                "contended_keys > 0",
                0.2,
                "keys it read are being changed by other transactions",
                Action::None,
            ),
            rule("validation", "validation_errors > 0", 0.4, "the guest found the input invalid", Action::FailFast),
            rule(
                "timeout",
                "predicted_timeout > 0",
                0.3,
                "an outbound call is predicted to exceed its timeout",
                Action::Divert,
            ),
            rule("deviation", "baseline_deviation > 3", 0.1, "it strays far from the path's baseline", Action::None),
            rule(
                "failing_endpoint",
                "endpoint_error_rate >= 0.5",
                0.3,
                "an endpoint it calls is failing",
                Action::Divert,
            ),
            rule("fuel", "fuel_ratio >= 1", 0.5, "it needs more fuel than its limit", Action::GrantFuel),
            rule("memory", "memory_ratio >= 1", 0.5, "it needs more memory than its limit", Action::GrantMemory),
            rule(
                "rate_limit",
                "rate_limit_wait_ms > 0",
                0.3,
                "an endpoint it calls is rate limiting: the call would be refused with 429 now",
                Action::Delay,
            ),
        ];
        match Self::new(&rules, &[]) {
            Ok(set) => set,
            Err(error) => unreachable!("the default rules are valid: {error}"),
        }
    }

    /// Scores features and the transaction's inputs: the sum of the
    /// weights of the rules that hold.
    pub fn score(&self, features: &Features, inputs: &InputProfile) -> Prediction {
        let mut reasons: Vec<Reason> = self
            .rules
            .iter()
            .filter(|compiled| compiled.terms.iter().all(|term| term.holds(features, inputs)))
            .map(|compiled| Reason {
                rule: compiled.rule.name.clone(),
                weight: compiled.rule.weight,
                reason: compiled.rule.reason.clone(),
                action: compiled.rule.action,
            })
            .collect();
        reasons.sort_by(|a, b| b.weight.total_cmp(&a.weight));
        // A fold from +0.0: `sum` of no floats is -0.0.
        let failure_probability = reasons.iter().fold(0.0_f32, |total, r| total + r.weight).clamp(0.0, 1.0);
        Prediction {
            failure_probability,
            reasons,
            source: super::RULES_ALONE.into(),
            features: *features,
            rules_probability: failure_probability,
            model_probability: None,
            learnt_probability: None,
            probe: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rules_reproduce_seed_002() {
        let rules = RuleSet::defaults();
        let quiet = rules.score(&Features::default(), &InputProfile::default());
        assert_eq!(quiet.failure_probability.to_bits(), 0.0_f32.to_bits(), "+0.0, not -0.0");
        assert!(quiet.reasons.is_empty());

        let features = Features {
            contended_keys: 2.0,
            validation_errors: 1.0,
            predicted_timeout: 1.0,
            baseline_deviation: 4.0,
            ..Default::default()
        };
        let p = rules.score(&features, &InputProfile::default());
        assert!((p.failure_probability - 1.0).abs() < 1e-6, "0.2 + 0.4 + 0.3 + 0.1");
        assert_eq!(p.reasons[0].rule, "validation", "heaviest first");
        assert_eq!(p.reasons[0].action, Action::FailFast);

        let timeout = rules.score(&Features { predicted_timeout: 1.0, ..Default::default() }, &InputProfile::default());
        assert!((timeout.failure_probability - 0.3).abs() < 1e-6);
        assert_eq!(timeout.reasons[0].action, Action::Divert);
    }

    #[test]
    fn conditions_combine_with_and() {
        let rule = Rule {
            name: "r".into(),
            when: "fuel_ratio >= 0.9 and attempt == 1".into(),
            weight: 0.5,
            reason: "x".into(),
            action: Action::GrantFuel,
        };
        let rules = RuleSet::new(&[rule], &[]).expect("valid");
        let none = InputProfile::default();
        assert_eq!(
            rules.score(&Features { fuel_ratio: 0.95, attempt: 1.0, ..Default::default() }, &none).reasons.len(),
            1
        );
        assert!(
            rules.score(&Features { fuel_ratio: 0.95, attempt: 2.0, ..Default::default() }, &none).reasons.is_empty()
        );
    }

    #[test]
    fn rules_compare_declared_inputs() {
        let inputs = [
            InputFeature {
                name: "amount_cents".into(),
                pointer: "/amount_cents".into(),
                kind: InputKind::Number,
                paths: vec![],
            },
            InputFeature {
                name: "currency".into(),
                pointer: "/currency".into(),
                kind: InputKind::Category,
                paths: vec![],
            },
        ];
        let rule = |when: &str| Rule {
            name: "big".into(),
            when: when.into(),
            weight: 0.5,
            reason: "a large charge".into(),
            action: Action::Hedge,
        };
        let rules = RuleSet::new(&[rule("input.amount_cents > 100000 and attempt == 1")], &inputs).expect("valid");
        let features = Features { attempt: 1.0, ..Default::default() };
        let read = |json: &str| InputProfile::read(json.as_bytes(), &inputs, "p");
        assert_eq!(rules.score(&features, &read(r#"{"amount_cents": 250000}"#)).reasons.len(), 1);
        assert!(rules.score(&features, &read(r#"{"amount_cents": 900}"#)).reasons.is_empty());
        assert!(rules.score(&features, &read("{}")).reasons.is_empty(), "an input without the field");

        let unknown = RuleSet::new(&[rule("input.weight > 1")], &inputs).expect_err("undeclared");
        assert!(unknown.to_string().contains("unknown input `weight`"), "{unknown}");
        let category = RuleSet::new(&[rule("input.currency > 1")], &inputs).expect_err("a category");
        assert!(category.to_string().contains("is a category"), "{category}");
    }

    #[test]
    fn bad_rules_are_refused_with_the_reason() {
        let rule = |when: &str, weight: f32| Rule {
            name: "bad".into(),
            when: when.into(),
            weight,
            reason: "x".into(),
            action: Action::None,
        };
        for (when, weight, words) in [
            ("latency > 3", 0.1, "unknown feature `latency`"),
            ("fuel_ratio => 3", 0.1, "unknown comparison `=>`"),
            ("fuel_ratio > lots", 0.1, "`lots` is not a number"),
            ("fuel_ratio>3", 0.1, "not of the form"),
            ("fuel_ratio > 3", 7.0, "not between -1 and 1"),
        ] {
            let err = RuleSet::new(&[rule(when, weight)], &[]).expect_err(when);
            assert!(err.to_string().contains(words), "{when}: {err}");
            assert!(err.to_string().starts_with("rule `bad`"), "{err}");
        }
    }
}
