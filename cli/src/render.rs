//! Text rendering of reports for a person at a terminal.

use std::fmt::Write as _;
use txmirror_runtime::predict::Evaluation;
use txmirror_runtime::predict::MODEL_REASON;
use txmirror_runtime::store::{AttemptOutcome, TransactionOutcome};
use txmirror_runtime::{DryRun, HedgeTrigger, TxReport};

pub(crate) fn report(report: &TxReport) -> String {
    let mut out = String::new();
    let attempts = report.attempts.len();
    let context = format!("path {}, {attempts} attempt{}", report.path, if attempts == 1 { "" } else { "s" });
    if report.deduplicated {
        let _ = writeln!(out, "(a repeat of an earlier request with the same idempotency key: nothing ran)");
    }
    match &report.outcome {
        TransactionOutcome::Committed { version, output } => {
            let _ = writeln!(out, "transaction {} COMMITTED at version {version} ({context})", report.transaction_id);
            let _ = writeln!(out, "output: {}", String::from_utf8_lossy(output));
        }
        TransactionOutcome::Failed { kind, message } => {
            let _ = writeln!(out, "transaction {} FAILED ({context}): {kind}: {message}", report.transaction_id);
        }
        _ => {
            let _ = writeln!(out, "transaction {}: {:?}", report.transaction_id, report.outcome);
        }
    }
    for attempt in &report.attempts {
        let a = &attempt.attempt;
        let outcome = match &a.outcome {
            AttemptOutcome::Committed => "committed".to_string(),
            AttemptOutcome::Failed { kind, message } => format!("failed: {kind}: {message}"),
        };
        let _ = writeln!(
            out,
            "\nattempt {} on `{}` from store version {}: {outcome} ({} µs)",
            a.number, a.path, a.snapshot_version, a.duration_micros
        );
        if let Some(arm) = &attempt.split_arm {
            let _ = writeln!(out, "on the split's arm `{arm}`");
        }
        if !attempt.path_order.is_empty() {
            let _ = writeln!(out, "paths in the order of profile `{}`:", attempt.path_order[0].profile);
            for choice in &attempt.path_order {
                let latency = choice.expected_latency_ms.map_or("?".into(), |ms| format!("{ms} ms"));
                let cost = choice.cost.map_or("?".into(), |cost| format!("{cost}"));
                let _ = writeln!(
                    out,
                    "  {:<16} score {:.3}: success {:.3} (prior {:.3}, recent failures {:.3}), latency {latency}, cost {cost}",
                    choice.path, choice.score, choice.success, choice.reliability, choice.failure_rate
                );
            }
        }
        if let Some(hedge) = &attempt.hedge {
            let why = match hedge.by {
                HedgeTrigger::Delay => "it ran past the policy's hedge delay",
                HedgeTrigger::Predictor => "the predictor doubted it",
                _ => "asked for",
            };
            let _ = writeln!(
                out,
                "a hedge of attempt {}, started {} µs into it: {why}",
                hedge.of_attempt, hedge.after_micros
            );
        }
        let _ = write!(out, "{}", attempt.primary.summary());
        match &attempt.mirror {
            Some(mirror) => {
                let _ = write!(out, "{}", mirror.summary());
            }
            None => {
                let _ = writeln!(out, "mirror: not run (failure_prediction_enabled = false)");
            }
        }
        if let Some(prediction) = &attempt.prediction {
            let parts = match (prediction.model_probability, prediction.learnt_probability) {
                (Some(model), Some(learnt)) => {
                    format!(" (rules {:.2}, model {model:.2}, learnt {learnt:.2})", prediction.rules_probability)
                }
                (Some(model), None) => format!(" (rules {:.2}, model {model:.2})", prediction.rules_probability),
                (None, _) => String::new(),
            };
            let quiet = if prediction.reasons.iter().all(|r| r.rule == MODEL_REASON) { ", no rule held" } else { "" };
            let _ = writeln!(
                out,
                "prediction by {}: failure probability {:.2}{parts}{quiet}",
                prediction.source, prediction.failure_probability,
            );
            for reason in &prediction.reasons {
                let _ = writeln!(out, "  {:+.2} {} ({}): {}", reason.weight, reason.rule, reason.action, reason.reason);
            }
        }
    }
    out
}

pub(crate) fn dry_run(dry: &DryRun) -> String {
    let mut out = String::new();
    match &dry.result {
        Ok(output) => {
            let _ = writeln!(out, "dry run of `{}` returned: {output}", dry.path);
        }
        Err(failure) => {
            let _ = writeln!(out, "dry run of `{}` failed: {}: {}", dry.path, failure.kind, failure.message);
        }
    }
    let _ = writeln!(out, "nothing was committed, written or sent\n");
    let _ = write!(out, "{}", dry.trace.summary());
    out
}

pub(crate) fn evaluation(model: &str, threshold: f64, model_numbers: &Evaluation, rules: &Evaluation) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} labelled examples, {:.1}% failed; model {model} at threshold {threshold:.4}, rules alone at 0.3",
        model_numbers.rows,
        model_numbers.failure_rate * 100.0
    );
    let _ = writeln!(out, "{:<40} {:>8} {:>12}", "", "model", "rules alone");
    for (name, m, r) in [
        ("AUC", model_numbers.auc, rules.auc),
        ("precision", model_numbers.precision, rules.precision),
        ("recall", model_numbers.recall, rules.recall),
        ("false-positive rate (false diversions)", model_numbers.false_positive_rate, rules.false_positive_rate),
        ("expected calibration error", model_numbers.calibration_error, rules.calibration_error),
    ] {
        let _ = writeln!(out, "{name:<40} {m:>8.3} {r:>12.3}");
    }
    out
}
