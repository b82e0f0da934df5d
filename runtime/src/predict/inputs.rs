//! What a transaction's input says to the predictor.
//!
//! A dependency may be slow or failing for some requests and not others,
//! because of what they carry: a gateway that declines one currency, a
//! service that times out on large orders. A policy declares the input
//! fields that may matter (`[[prediction.inputs]]`, JSON pointers into the
//! input), and each transaction's values of them become:
//!
//! - **conditions**, such as `currency=EUR` or `amount_cents~14` (a number's
//!   power-of-two bucket), under which every endpoint's latency and failures
//!   are learnt apart (`predict/history.rs`), so that the gate can say "a
//!   euro charge to this gateway fails" while dollar charges go through;
//! - **values** that rules can compare, as `input.amount_cents > 100000`.
//!
//! The input's size needs no declaration: it is the `input_bytes` feature.

use serde::{Deserialize, Serialize};

/// The most input features one policy may declare.
pub const MAX_INPUTS: usize = 16;
/// The longest category value kept in a condition, in bytes; longer values
/// are cut (at a character boundary).
const MAX_CATEGORY_BYTES: usize = 64;

/// An input field a policy declares as a feature (`[[prediction.inputs]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputFeature {
    /// The name rules use (`input.NAME`) and conditions show.
    pub name: String,
    /// Where the field is in the JSON input: an RFC 6901 pointer such as
    /// `/amount_cents` or `/order/currency`.
    pub pointer: String,
    /// How its values are told apart.
    #[serde(default)]
    pub kind: InputKind,
    /// The paths it is read on; all of them if empty.
    #[serde(default)]
    pub paths: Vec<String>,
}

/// How an input feature's values are told apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum InputKind {
    /// A number: conditions by power-of-two bucket (`amount_cents~14` for
    /// 16,384 to 32,767), and its value for rules.
    #[default]
    Number,
    /// A category: one condition per value (`currency=EUR`).
    Category,
}

impl InputFeature {
    /// Checks one declaration; the error says what is wrong.
    pub(crate) fn check(&self) -> Result<(), String> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !name_ok {
            return Err(format!("`{}` is not a name of 1 to 64 lowercase letters, digits and `_`", self.name));
        }
        if !self.pointer.starts_with('/') {
            return Err(format!("`{}` is not a JSON pointer: it must start with `/`", self.pointer));
        }
        Ok(())
    }

    fn applies_to(&self, path: &str) -> bool {
        self.paths.is_empty() || self.paths.iter().any(|p| p == path)
    }
}

/// What one transaction's input says, as the policy declares it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InputProfile {
    /// The input's size, in bytes.
    pub bytes: u64,
    /// The declared numbers present in the input, by name.
    pub values: Vec<(String, f32)>,
    /// The conditions its requests are learnt under.
    pub conditions: Vec<String>,
}

/// The power-of-two bucket of a number: `k` for `2^k - 1 <= |x| < 2^(k+1) - 1`,
/// negative for negative numbers.
fn bucket(value: f64) -> i32 {
    let magnitude = (value.abs() + 1.0).log2().floor();
    // At most 1024 for any finite f64, so the cast cannot saturate.
    let magnitude = magnitude.clamp(0.0, 1100.0) as i32;
    if value < 0.0 { -magnitude - 1 } else { magnitude }
}

fn cut(text: &str) -> &str {
    if text.len() <= MAX_CATEGORY_BYTES {
        return text;
    }
    let mut end = MAX_CATEGORY_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl InputProfile {
    /// Reads the declared features of `input` on `path`. An input that is
    /// not JSON, or lacks a field, has no value and no condition for it:
    /// the guest judges its input, the predictor only learns from it.
    pub fn read(input: &[u8], declared: &[InputFeature], path: &str) -> Self {
        let bytes = u64::try_from(input.len()).unwrap_or(u64::MAX);
        let mut profile = Self { bytes, ..Self::default() };
        let declared: Vec<&InputFeature> = declared.iter().filter(|feature| feature.applies_to(path)).collect();
        if declared.is_empty() {
            return profile;
        }
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(input) else { return profile };
        for feature in declared {
            let Some(value) = json.pointer(&feature.pointer) else { continue };
            match (feature.kind, value) {
                (InputKind::Number, serde_json::Value::Number(number)) => {
                    let Some(number) = number.as_f64() else { continue };
                    profile.values.push((feature.name.clone(), number as f32));
                    profile.conditions.push(format!("{}~{}", feature.name, bucket(number)));
                }
                (InputKind::Category, serde_json::Value::String(text)) => {
                    profile.conditions.push(format!("{}={}", feature.name, cut(text)));
                }
                (InputKind::Category, serde_json::Value::Bool(_) | serde_json::Value::Number(_)) => {
                    profile.conditions.push(format!("{}={value}", feature.name));
                }
                // A number that is not one, or a category that is an
                // object: the field says nothing the predictor can use.
                _ => {}
            }
        }
        profile
    }

    /// The declared number called `name`, if the input has it.
    pub fn value(&self, name: &str) -> Option<f32> {
        self.values.iter().find(|(n, _)| n == name).map(|(_, value)| *value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feature(name: &str, pointer: &str, kind: InputKind, paths: &[&str]) -> InputFeature {
        InputFeature {
            name: name.into(),
            pointer: pointer.into(),
            kind,
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn declared_fields_become_values_and_conditions() {
        let declared = [
            feature("amount_cents", "/amount_cents", InputKind::Number, &[]),
            feature("currency", "/order/currency", InputKind::Category, &[]),
            feature("express", "/express", InputKind::Category, &[]),
            feature("refund_only", "/refund", InputKind::Number, &["refund"]),
        ];
        let input = br#"{"amount_cents": 20000, "order": {"currency": "EUR"}, "express": true, "refund": 5}"#;
        let profile = InputProfile::read(input, &declared, "charge");
        assert_eq!(profile.bytes, input.len() as u64);
        assert_eq!(profile.value("amount_cents"), Some(20000.0));
        assert_eq!(profile.value("refund_only"), None, "declared for another path");
        assert_eq!(profile.conditions, ["amount_cents~14", "currency=EUR", "express=true"]);

        // Missing fields, wrong types and inputs that are not JSON say nothing.
        let profile = InputProfile::read(br#"{"amount_cents": "lots"}"#, &declared, "charge");
        assert!(profile.values.is_empty() && profile.conditions.is_empty());
        let profile = InputProfile::read(b"\xff not json", &declared, "charge");
        assert_eq!((profile.bytes, profile.conditions.len()), (10, 0));
    }

    #[test]
    fn buckets_are_powers_of_two_and_categories_are_cut() {
        assert_eq!([0.0, 1.0, 2.0, 3.0, 1e6, -1.0, -3.0, f64::MAX].map(bucket), [0, 1, 1, 2, 19, -2, -3, 1024]);
        let long = "é".repeat(40);
        assert_eq!(cut(&long).len(), 64);
        assert!(cut(&long).chars().all(|c| c == 'é'));
    }

    #[test]
    fn bad_declarations_are_refused() {
        assert!(feature("Amount", "/a", InputKind::Number, &[]).check().is_err_and(|e| e.contains("lowercase")));
        assert!(feature("a", "a", InputKind::Number, &[]).check().is_err_and(|e| e.contains("JSON pointer")));
        assert!(feature("a", "/a", InputKind::Number, &[]).check().is_ok());
    }
}
