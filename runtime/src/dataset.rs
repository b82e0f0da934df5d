//! Labelled examples for the learning loop: one per mirrored attempt, taken
//! from the durable transaction records, and their file format.
//!
//! An example is the attempt's features and prediction as the gate acted on
//! them (at the primary's first unsafe call if it made one, else when the
//! attempt ended, before its commit), what the gate did, and the real
//! outcome.
//! The label, `failed`, is left empty (censored) when the runtime's own
//! adjustment decided the outcome: a diverted, failed-fast or cancelled
//! primary never had the chance to fail or succeed, and one granted more
//! time or resources, or held for a rate limit, might have failed without
//! them. Attempts in the exploration share are never adjusted, so their
//! labels are always honest.
//!
//! ## File format
//!
//! CSV (RFC 4180) after one comment line naming the format and the feature
//! schema, then a header row:
//!
//! ```text
//! # txmirror-dataset format=1 feature_schema_version=1
//! transaction_id,attempt_number,path,contended_keys,…,mirror_failed,rules_probability,model_probability,failure_probability,action,explored,outcome,failed
//! ```
//!
//! Columns may come in any order; a missing or unknown column is refused.
//! `model_probability` and `failed` may be empty.

use crate::predict::{FEATURE_NAMES, Features, SCHEMA_VERSION};
use crate::store::AttemptOutcome;
use crate::trace::HostCall;
use crate::transaction::{AttemptReport, RecordedTransaction};
use crate::vocab::GateVerdict;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{BufRead, Write};

/// The version of the file format.
pub const FORMAT_VERSION: u32 = 1;
/// The columns before the features.
pub const LEADING_COLUMNS: [&str; 3] = ["transaction_id", "attempt_number", "path"];
/// The columns after the features.
pub const TRAILING_COLUMNS: [&str; 8] = [
    "scored_at",
    "rules_probability",
    "model_probability",
    "failure_probability",
    "action",
    "explored",
    "outcome",
    "failed",
];

/// One labelled attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// The transaction.
    pub transaction_id: String,
    /// The attempt number, from 1.
    pub attempt: u32,
    /// The path it ran.
    pub path: String,
    /// Where the prediction was made: `unsafe call` or `end`.
    pub scored_at: String,
    /// What the predictor knew there.
    pub features: Features,
    /// The rules' probability.
    pub rules_probability: f32,
    /// The model's probability, if a model scored.
    pub model_probability: Option<f32>,
    /// The combined probability.
    pub failure_probability: f32,
    /// What the gate did: `pass`, `divert`, `fail_fast`, `hedge`,
    /// `adjust_timeouts`, `cancelled`, `grant`, or `explored:ACTION`.
    pub action: String,
    /// Whether the attempt was in the exploration share.
    pub explored: bool,
    /// `committed`, or the failure kind.
    pub outcome: String,
    /// Whether the primary failed; `None` when an adjustment decided it.
    pub failed: Option<bool>,
}

/// Why a dataset file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatasetError {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The file does not start with the format line.
    #[error(
        "not a txmirror dataset: the first line is `{0}`, not `# txmirror-dataset format=1 feature_schema_version=N`"
    )]
    NotADataset(String),
    /// The file's feature schema is another version.
    #[error("the dataset has feature schema version {found}; this runtime computes version {SCHEMA_VERSION}")]
    SchemaVersion {
        /// The file's version.
        found: String,
    },
    /// A column is missing.
    #[error("the dataset has no `{0}` column")]
    MissingColumn(String),
    /// A column is neither a feature nor one of the dataset's columns.
    #[error(
        "the dataset has a column `{0}` that is neither a feature of schema version {SCHEMA_VERSION} nor a dataset column"
    )]
    ExtraColumn(String),
    /// A row could not be read.
    #[error("row {row}: {reason}")]
    Row {
        /// The row, from 1 for the first after the header.
        row: usize,
        /// What is wrong.
        reason: String,
    },
}

/// The gate decisions and grants of an attempt's primary, as one action.
fn action_of(report: &AttemptReport) -> String {
    let mut decisions = Vec::new();
    let mut granted = false;
    for event in &report.primary.events {
        match &event.call {
            HostCall::Gate { decision, .. } => decisions.push(*decision),
            HostCall::Grant { resource, .. } if resource == "fuel" || resource == "memory" => granted = true,
            _ => {}
        }
    }
    let first = |wanted: &[GateVerdict]| decisions.iter().find(|d| wanted.contains(d)).map(ToString::to_string);
    first(&[GateVerdict::Divert, GateVerdict::FailFast, GateVerdict::Cancelled])
        .or_else(|| first(&[GateVerdict::Hedge, GateVerdict::AdjustTimeouts, GateVerdict::Delay]))
        .or_else(|| granted.then(|| "grant".to_string()))
        .or_else(|| {
            decisions
                .iter()
                .find(|d| matches!(d, GateVerdict::Explored(_) | GateVerdict::Trial(_) | GateVerdict::Probe(_)))
                .map(ToString::to_string)
        })
        .unwrap_or_else(|| GateVerdict::Pass.to_string())
}

/// An attempt the predictor scored, as a training example sees it.
pub(crate) struct Scored<'a> {
    /// `unsafe call` (the gate's prediction) or `end` (the final one).
    pub(crate) scored_at: &'static str,
    /// The prediction the gate acted on, else the final one.
    pub(crate) prediction: &'a crate::predict::Prediction,
    /// The attempt's outcome: `committed` or its failure kind.
    pub(crate) outcome: String,
    /// The gate decisions and grants of its primary, as one action.
    pub(crate) action: String,
    /// Whether the primary failed; `None` when an adjustment decided it.
    pub(crate) failed: Option<bool>,
}

/// How an attempt was scored and whether its outcome is an honest label:
/// not when the gate stopped the primary (diverted, failed fast, cancelled)
/// nor when an adjustment (raised timeouts, a grant, a delay) may have
/// saved it. `None` if the predictor did not score it.
pub(crate) fn scored(report: &AttemptReport) -> Option<Scored<'_>> {
    let (scored_at, prediction) = match (&report.gate_prediction, &report.prediction) {
        (Some(at_gate), _) => ("unsafe call", at_gate),
        (None, Some(at_end)) => ("end", at_end),
        (None, None) => return None,
    };
    let (outcome, stopped) = match &report.attempt.outcome {
        AttemptOutcome::Committed => ("committed".to_string(), false),
        AttemptOutcome::Failed { kind, .. } => (kind.to_string(), kind.says_nothing_of_the_path()),
    };
    let action = action_of(report);
    let adjusted = matches!(action.as_str(), "adjust_timeouts" | "grant" | "delay");
    let failed = (!stopped && !adjusted).then(|| outcome != "committed");
    Some(Scored { scored_at, prediction, outcome, action, failed })
}

/// The examples of one transaction: one per attempt the predictor scored.
pub fn examples(record: &RecordedTransaction) -> Vec<Example> {
    record
        .history
        .iter()
        .filter_map(|report| {
            let Scored { scored_at, prediction, outcome, action, failed } = scored(report)?;
            Some(Example {
                transaction_id: record.id.clone(),
                attempt: report.attempt.number,
                path: report.attempt.path.clone(),
                scored_at: scored_at.into(),
                features: prediction.features,
                rules_probability: prediction.rules_probability,
                model_probability: prediction.model_probability,
                failure_probability: prediction.failure_probability,
                action,
                explored: report.explored,
                outcome,
                failed,
            })
        })
        .collect()
}

/// The columns, in the order they are written.
pub fn columns() -> Vec<&'static str> {
    LEADING_COLUMNS.iter().chain(FEATURE_NAMES).chain(TRAILING_COLUMNS.iter()).copied().collect()
}

/// Writes examples as a dataset file; returns how many.
pub fn write_csv(mut out: impl Write, examples: impl IntoIterator<Item = Example>) -> Result<usize, DatasetError> {
    writeln!(out, "# txmirror-dataset format={FORMAT_VERSION} feature_schema_version={SCHEMA_VERSION}")?;
    let mut writer = csv::Writer::from_writer(out);
    let io = |e: csv::Error| DatasetError::Io(std::io::Error::other(e));
    writer.write_record(columns()).map_err(io)?;
    let mut count = 0;
    for example in examples {
        let mut row = vec![example.transaction_id, example.attempt.to_string(), example.path];
        row.extend(example.features.to_array().iter().map(f32::to_string));
        row.push(example.scored_at);
        row.push(example.rules_probability.to_string());
        row.push(example.model_probability.map(|p| p.to_string()).unwrap_or_default());
        row.push(example.failure_probability.to_string());
        row.push(example.action);
        row.push(u8::from(example.explored).to_string());
        row.push(example.outcome);
        row.push(example.failed.map(|f| u8::from(f).to_string()).unwrap_or_default());
        writer.write_record(&row).map_err(io)?;
        count += 1;
    }
    writer.flush()?;
    Ok(count)
}

/// Reads a dataset file, checking its format line and its columns.
pub fn read_csv(mut input: impl BufRead) -> Result<Vec<Example>, DatasetError> {
    let mut first = String::new();
    input.read_line(&mut first)?;
    let first = first.trim_end();
    let mut fields = first.strip_prefix("# txmirror-dataset ").map(str::split_whitespace).into_iter().flatten();
    let format = fields.next();
    let schema = fields.next().and_then(|f| f.strip_prefix("feature_schema_version="));
    let (Some(format), Some(schema)) = (format, schema) else {
        return Err(DatasetError::NotADataset(first.chars().take(80).collect()));
    };
    if format != format!("format={FORMAT_VERSION}") {
        return Err(DatasetError::NotADataset(first.to_string()));
    }
    if schema.parse::<u32>().ok() != Some(SCHEMA_VERSION) {
        return Err(DatasetError::SchemaVersion { found: schema.to_string() });
    }
    let mut reader = csv::Reader::from_reader(input);
    let headers = reader.headers().map_err(|e| DatasetError::Row { row: 0, reason: e.to_string() })?.clone();
    let expected = columns();
    if let Some(extra) = headers.iter().find(|h| !expected.contains(h)) {
        return Err(DatasetError::ExtraColumn(extra.to_string()));
    }
    let index: HashMap<&str, usize> = headers.iter().enumerate().map(|(i, h)| (h, i)).collect();
    if let Some(missing) = expected.iter().find(|c| !index.contains_key(*c)) {
        return Err(DatasetError::MissingColumn((*missing).to_string()));
    }
    let mut examples = Vec::new();
    for (n, record) in reader.records().enumerate() {
        let row = n + 1;
        let record = record.map_err(|e| DatasetError::Row { row, reason: e.to_string() })?;
        let bad = |reason: String| DatasetError::Row { row, reason };
        let text = |column: &str| record.get(index[column]).unwrap_or_default();
        let number = |column: &str| -> Result<f32, DatasetError> {
            text(column).parse::<f32>().map_err(|_| bad(format!("`{column}` is `{}`, not a number", text(column))))
        };
        let flag = |column: &str| -> Result<Option<bool>, DatasetError> {
            match text(column) {
                "" => Ok(None),
                "0" => Ok(Some(false)),
                "1" => Ok(Some(true)),
                other => Err(bad(format!("`{column}` is `{other}`, not 0, 1 or empty"))),
            }
        };
        let values = FEATURE_NAMES.iter().map(|name| number(name)).collect::<Result<Vec<_>, _>>()?;
        let features = Features::from_slice(&values).ok_or_else(|| bad("wrong number of features".into()))?;
        examples.push(Example {
            transaction_id: text("transaction_id").to_string(),
            attempt: text("attempt_number").parse().map_err(|_| bad("`attempt_number` is not a number".into()))?,
            path: text("path").to_string(),
            scored_at: text("scored_at").to_string(),
            features,
            rules_probability: number("rules_probability")?,
            model_probability: match text("model_probability") {
                "" => None,
                _ => Some(number("model_probability")?),
            },
            failure_probability: number("failure_probability")?,
            action: text("action").to_string(),
            explored: flag("explored")?.unwrap_or(false),
            outcome: text("outcome").to_string(),
            failed: flag("failed")?,
        });
    }
    Ok(examples)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(failed: Option<bool>) -> Example {
        Example {
            transaction_id: "tx, with a comma".into(),
            attempt: 2,
            path: "charge".into(),
            scored_at: "unsafe call".into(),
            features: Features {
                contended_keys: 1.0,
                attempt: 2.0,
                outbound_latency_ratio: 0.25,
                ..Default::default()
            },
            rules_probability: 0.2,
            model_probability: Some(0.125),
            failure_probability: 0.3,
            action: "explored:divert".into(),
            explored: true,
            outcome: "unavailable".into(),
            failed,
        }
    }

    #[test]
    fn examples_survive_the_file_format() {
        let written = vec![example(Some(true)), example(None)];
        let mut file = Vec::new();
        assert_eq!(write_csv(&mut file, written.clone()).expect("writes"), 2);
        let text = String::from_utf8(file.clone()).expect("UTF-8");
        let names = columns();
        assert!(names.iter().all(|c| names.iter().filter(|d| *d == c).count() == 1), "column names are unique");
        let header = format!(
            "# txmirror-dataset format=1 feature_schema_version={SCHEMA_VERSION}\ntransaction_id,attempt_number,path,"
        );
        assert!(text.starts_with(&header), "{text}");
        assert_eq!(read_csv(file.as_slice()).expect("reads"), written);
    }

    #[test]
    fn a_missing_or_extra_column_is_refused() {
        let mut file = Vec::new();
        write_csv(&mut file, [example(Some(false))]).expect("writes");
        let text = String::from_utf8(file).expect("UTF-8");
        let missing = text.replacen(",mirror_failed,", ",", 1);
        let error = read_csv(missing.as_bytes()).expect_err("a feature column is missing");
        assert!(matches!(error, DatasetError::MissingColumn(ref c) if c == "mirror_failed"), "{error}");
        let extra = text.replacen(",mirror_failed,", ",mirror_failed,latency_p99,", 1);
        let error = read_csv(extra.as_bytes()).expect_err("an extra column");
        let words = format!("`latency_p99` that is neither a feature of schema version {SCHEMA_VERSION}");
        assert!(error.to_string().contains(&words), "{error}");
        let old = text.replacen(
            &format!("feature_schema_version={SCHEMA_VERSION}"),
            &format!("feature_schema_version={}", SCHEMA_VERSION - 1),
            1,
        );
        assert!(matches!(read_csv(old.as_bytes()), Err(DatasetError::SchemaVersion { .. })));
        assert!(matches!(read_csv("a,b\n1,2\n".as_bytes()), Err(DatasetError::NotADataset(_))));
    }
}
