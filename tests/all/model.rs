//! The ONNX model: checked against the feature schema at load, combined
//! with the rules, and replaceable while the runtime runs. The models are
//! trained from source by `models/train.py` (see `tests/build.rs`) and run
//! by the real ONNX Runtime library that `cargo xtask setup` installs.

use serde_json::json;
use std::path::Path;
use std::time::Duration;
use tempfile::tempdir;
use txmirror_runtime::predict::{MODEL_REASON, ModelError, Prediction, RULES_ALONE, Reloaded};
use txmirror_runtime::{ModelConfig, Module, Policy, Runtime, StartError, TxRequest};
use txmirror_tests::{config, guests, load, models, policy};

const POLICY: &str = "[capabilities]\nkv = { accounts = \"read-write\" }\nstreams = [\"transfers\"]\n";

fn with_model(dir: &Path, model: &Path, reload_interval: Option<Duration>) -> Result<Runtime, StartError> {
    let mut config = config(dir);
    config.model = Some(ModelConfig { reload_interval, ..ModelConfig::new(model) });
    Runtime::open(config)
}

/// Deposits into an account and returns the committed attempt's prediction.
async fn deposit(runtime: &Runtime, module: &Module, policy: &std::sync::Arc<Policy>) -> Prediction {
    let input = json!({"account": "alice", "amount": 5}).to_string().into_bytes();
    let request = TxRequest { path: Some("deposit".into()), input, ..Default::default() };
    let report = runtime.execute(module, policy, request).await.unwrap();
    assert!(report.failure.is_none(), "{report:#?}");
    report.attempts.last().and_then(|a| a.prediction.clone()).expect("a mirrored attempt is scored")
}

#[test]
fn a_model_for_another_feature_schema_is_refused_with_the_reason() {
    let dir = tempdir().unwrap();
    let refusal = |model: &str| match with_model(dir.path(), Path::new(model), None) {
        Err(StartError::Model(error)) => error,
        Err(other) => panic!("{model}: refused for another reason: {other}"),
        Ok(_) => panic!("{model} was accepted"),
    };

    // A model trained before version 3 added the breakers' state.
    let error = refusal(models::SCHEMA_PREVIOUS);
    assert!(matches!(error, ModelError::SchemaVersion { expected: 3, ref found, .. } if found == "2"), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("feature schema version 2") && text.contains("computes version 3"), "{text}");
    assert!(text.contains("retrain it with models/train.py"), "{text}");

    let error = refusal(models::RENAMED_FEATURE);
    assert!(matches!(error, ModelError::FeatureNames { .. }), "{error:?}");
    assert!(error.to_string().contains("latency, predicted_timeout"), "names the model's features: {error}");

    let error = refusal(models::NO_METADATA);
    assert!(matches!(error, ModelError::MissingMetadata { key: "txmirror.feature_schema_version", .. }), "{error:?}");

    let garbage = dir.path().join("garbage.onnx");
    std::fs::write(&garbage, b"not a model").unwrap();
    let error = refusal(garbage.to_str().unwrap());
    assert!(matches!(error, ModelError::Invalid { .. }), "{error:?}");

    let error = refusal(dir.path().join("missing.onnx").to_str().unwrap());
    assert!(matches!(error, ModelError::Read { .. }), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_adds_to_the_rules_and_the_prediction_says_so() {
    let dir = tempdir().unwrap();
    let runtime = with_model(&dir.path().join("a"), Path::new(models::PLACEHOLDER), None).unwrap();
    let module = load(&runtime, guests::BANK_TRANSFER).await;
    let info = runtime.model().unwrap();
    assert_eq!((info.name.as_str(), info.version.as_str()), ("placeholder", "1"));
    assert!(info.trained_on.as_deref().is_some_and(|t| t.contains("4000 rows")), "{info:?}");

    // By default the model is refined online: the learnt probability counts in full.
    let prediction = deposit(&runtime, &module, &policy(POLICY)).await;
    assert_eq!(prediction.source, "rules + model placeholder 1 (learning online)");
    let p_model = prediction.model_probability.unwrap();
    assert!(p_model > 0.0 && p_model < 0.3, "a quiet deposit looks safe to the placeholder: {p_model}");
    let p_learnt = prediction.learnt_probability.expect("learning online");
    let expected = 1.0 - (1.0 - prediction.rules_probability) * (1.0 - p_learnt);
    assert!((prediction.failure_probability - expected).abs() < 1e-6, "{prediction:?}");
    assert!(prediction.reasons.iter().any(|r| r.rule == MODEL_REASON), "{prediction:?}");

    // Without online learning, the model's weight, unset, puts its own
    // threshold on the gate's (0.3).
    let offline = policy(&format!("{POLICY}[prediction]\nonline_learning = false\n"));
    let prediction = deposit(&runtime, &module, &offline).await;
    assert_eq!(prediction.source, "rules + model placeholder 1");
    assert_eq!(prediction.learnt_probability, None);
    let p_model = prediction.model_probability.unwrap();
    let weight = (0.3 / runtime.model().unwrap().threshold.expect("train.py records it")).min(1.0) as f32;
    let expected = 1.0 - (1.0 - prediction.rules_probability) * (1.0 - weight * p_model);
    assert!((prediction.failure_probability - expected).abs() < 1e-6, "{prediction:?}");

    // The policy can take the model out of its transactions.
    let weightless = policy(&format!("{POLICY}[prediction]\nmodel_weight = 0\n"));
    let prediction = deposit(&runtime, &module, &weightless).await;
    assert_eq!(prediction.model_probability, None);
    assert_eq!(prediction.source, "rules alone (the policy gives the model no weight)");

    // Without a model, the rules decide alone, and say so.
    let plain = txmirror_tests::runtime(&dir.path().join("b"));
    assert!(plain.model().is_none());
    let module = load(&plain, guests::BANK_TRANSFER).await;
    let prediction = deposit(&plain, &module, &policy(POLICY)).await;
    assert_eq!(prediction.source, RULES_ALONE);
    assert_eq!(prediction.model_probability, None);
    assert!(plain.reload_model().unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_model_file_changes_scores_without_a_restart() {
    let dir = tempdir().unwrap();
    let model = dir.path().join("model.onnx");
    std::fs::copy(models::PLACEHOLDER, &model).unwrap();
    let runtime = with_model(&dir.path().join("data"), &model, Some(Duration::from_millis(20))).unwrap();
    let module = load(&runtime, guests::BANK_TRANSFER).await;
    let policy = policy(POLICY);
    let before = deposit(&runtime, &module, &policy).await;

    // Replace the file the way a deployment would: write aside, rename over.
    let staged = dir.path().join("model.onnx.new");
    std::fs::copy(models::PESSIMIST, &staged).unwrap();
    std::fs::rename(&staged, &model).unwrap();
    let mut waited = 0;
    while runtime.model().unwrap().name != "pessimist" {
        assert!(waited < 250, "the watcher did not pick up the new model in 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
    }
    let after = deposit(&runtime, &module, &policy).await;
    assert_eq!(after.source, "rules + model pessimist 2 (learning online)");
    let (p_before, p_after) = (before.model_probability.unwrap(), after.model_probability.unwrap());
    assert!(
        p_after > 2.0 * p_before && p_after > p_before + 0.05,
        "the pessimist scores the same deposit several times higher: {p_before} -> {p_after}"
    );

    // A broken file does not replace a working model.
    std::fs::write(&model, b"half a model").unwrap();
    let error = runtime.reload_model().unwrap_err();
    assert!(matches!(error, ModelError::Invalid { .. }), "{error:?}");
    assert_eq!(runtime.model().unwrap().name, "pessimist");
    assert!(
        runtime.model_reload_error().is_some_and(|e| e.contains("not a model")),
        "{:?}",
        runtime.model_reload_error()
    );

    // Putting the first model back swaps it in again, on demand too.
    std::fs::copy(models::PLACEHOLDER, &model).unwrap();
    match runtime.reload_model().unwrap() {
        Some(Reloaded::Replaced { new, .. }) => assert_eq!(new.name, "placeholder"),
        Some(Reloaded::Unchanged(info)) => assert_eq!(info.name, "placeholder", "the watcher was first"),
        other => panic!("{other:?}"),
    }
    assert_eq!(runtime.model_reload_error(), None);
}

fn read_dataset(path: &str) -> Vec<txmirror_runtime::dataset::Example> {
    txmirror_runtime::dataset::read_csv(std::io::BufReader::new(std::fs::File::open(path).unwrap())).unwrap()
}

#[test]
fn the_pipeline_trains_on_a_dataset_and_the_runtime_scores_like_scikit_learn() {
    // `tests/build.rs` ran models/train.py: `generate` wrote two datasets in
    // the runtime's format (seeds 11 and 12), `train` fitted on the first,
    // evaluated on the second, exported the ONNX file and its card.
    let training = read_dataset(models::PIPELINE_DATASET);
    assert_eq!(training.len(), 600);
    assert!(training.iter().all(|e| e.failed.is_some() && e.explored));
    assert_eq!(read_dataset(models::PIPELINE_HOLDOUT).len(), 300);

    let model = txmirror_runtime::predict::Model::load(Path::new(models::PIPELINE), None).unwrap();
    assert_eq!(model.info().name, "pipeline");
    let predictions = std::fs::read_to_string(models::PIPELINE_PREDICTIONS).unwrap();
    let mut lines = predictions.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let width = txmirror_runtime::predict::FEATURE_NAMES.len();
    assert_eq!(&header[..width], txmirror_runtime::predict::FEATURE_NAMES);
    let mut compared = 0;
    let mut worst: f64 = 0.0;
    for line in lines {
        let values: Vec<f64> = line.split(',').map(|v| v.parse().unwrap()).collect();
        let features: Vec<f32> = values[..width].iter().map(|v| *v as f32).collect();
        let features = txmirror_runtime::predict::Features::from_slice(&features).unwrap();
        let onnx = f64::from(model.score(&features).unwrap());
        worst = worst.max((onnx - values[width]).abs());
        compared += 1;
    }
    assert_eq!(compared, 300);
    assert!(worst <= 1e-5, "the runtime's ONNX scores differ from scikit-learn's by up to {worst}");

    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{}.json", models::PIPELINE_CARD)).unwrap()).unwrap();
    assert_eq!(card["feature_schema_version"], txmirror_runtime::predict::SCHEMA_VERSION);
    assert_eq!(card["training_rows"], 600);
    assert_eq!(card["holdout"]["rows"], 300);
    for metric in ["auc", "precision", "recall", "false_positive_rate", "calibration_error"] {
        let value = card["holdout"][metric].as_f64().unwrap_or(-1.0);
        assert!((0.0..=1.0).contains(&value), "{metric} = {value}");
        assert!(card["rules_alone"][metric].is_number(), "the card compares with the rules: {metric}");
    }
    assert!(card["holdout"]["auc"].as_f64().unwrap() > 0.7, "it learnt something: {card}");
    let markdown = std::fs::read_to_string(format!("{}.md", models::PIPELINE_CARD)).unwrap();
    assert!(markdown.contains("| AUC |") && markdown.contains("rules alone"), "{markdown}");
}

#[test]
fn training_refuses_a_dataset_with_a_missing_or_extra_feature_column() {
    let dir = tempdir().unwrap();
    let text = std::fs::read_to_string(models::PIPELINE_DATASET).unwrap();
    let train = |name: &str, text: String| {
        let dataset = dir.path().join(name);
        std::fs::write(&dataset, text).unwrap();
        let output = std::process::Command::new("python3")
            .env("PYTHONPATH", std::env::var_os("TXMIRROR_PYTHONPATH").expect("set by .cargo/config.toml"))
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/train.py"))
            .args(["train", "--dataset"])
            .arg(&dataset)
            .arg("--out")
            .arg(dir.path().join("never.onnx"))
            .output()
            .unwrap();
        assert!(!output.status.success(), "{name} was accepted");
        assert!(!dir.path().join("never.onnx").exists());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    // Drop the `mirror_failed` column from the header and every row.
    let without: String = text
        .lines()
        .map(|line| {
            if line.starts_with('#') {
                return format!("{line}\n");
            }
            let mut cells: Vec<&str> = line.split(',').collect();
            cells.remove(14);
            format!("{}\n", cells.join(","))
        })
        .collect();
    assert!(without.lines().nth(1).unwrap().contains("unsafe_calls,input_bytes"), "column 14 is mirror_failed");
    let error = train("missing.csv", without);
    assert!(error.contains("no `mirror_failed` column"), "{error}");
    let extra = text
        .replacen(",mirror_failed,", ",mirror_failed,queue_depth,", 1)
        .replace(",explored:none,", ",0,explored:none,");
    let error = train("extra.csv", extra);
    assert!(error.contains("column `queue_depth` is neither a feature of schema version 3"), "{error}");
    // The runtime's own reader refuses them the same way.
    let extra = text.replacen(",mirror_failed,", ",mirror_failed,queue_depth,", 1);
    let error = txmirror_runtime::dataset::read_csv(extra.as_bytes()).unwrap_err();
    assert!(error.to_string().contains("`queue_depth`"), "{error}");
}

#[test]
fn the_shipped_model_fits_this_runtime_and_its_card() {
    // If the feature schema changes, `cargo xtask train-model` must ship a new model.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let model = txmirror_runtime::predict::Model::load(&root.join("models/txmirror-v3.onnx"), None).unwrap();
    assert_eq!((model.info().name.as_str(), model.info().version.as_str()), ("txmirror", "3"));
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("models/txmirror-v3-card.json")).unwrap()).unwrap();
    assert_eq!(card["feature_schema_version"], txmirror_runtime::predict::SCHEMA_VERSION);
    // serde_json's float parsing may differ from Rust's in the last bit.
    let (file, card_threshold) = (model.info().threshold.unwrap(), card["threshold"].as_f64().unwrap());
    assert!((file - card_threshold).abs() < 1e-12, "the card describes this file: {file} {card_threshold}");
    assert!(card["training_rows"].as_u64().unwrap() > 1_000, "{card}");
}
