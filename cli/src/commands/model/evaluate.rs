//! `txmirror model evaluate`: the model card's numbers on a dataset.

use crate::commands::{Target, json, print};
use crate::exit::Failed;
use crate::render;
use anyhow::Context as _;
use std::path::PathBuf;
use txmirror_runtime::dataset;
use txmirror_runtime::predict::Model;
use txmirror_runtime::predict::evaluate;

/// Scores a dataset's labelled examples with the model (`--model`) and
/// prints the numbers of its model card, beside the rules alone.
#[derive(clap::Args, Debug)]
pub(crate) struct EvaluateCommand {
    /// A dataset file (see docs/learning.md).
    #[arg(long)]
    dataset: PathBuf,
    /// The threshold; the one the model was trained with if omitted.
    #[arg(long)]
    threshold: Option<f64>,
    /// Prints JSON.
    #[arg(long)]
    json: bool,
    /// Also writes every labelled example's model score and label (CSV).
    #[arg(long)]
    scores_out: Option<PathBuf>,
}

impl EvaluateCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        let local = target.local()?;
        let Some(model_path) = local.model.as_deref() else {
            return Err(Failed::usage("`model evaluate` needs --model FILE.onnx"));
        };
        let model = Model::load(model_path, None)
            .map_err(|error| anyhow::Error::new(error).context("the prediction model was refused"))?;
        let file =
            std::fs::File::open(&self.dataset).with_context(|| format!("cannot open {}", self.dataset.display()))?;
        let examples = dataset::read_csv(std::io::BufReader::new(file))
            .with_context(|| format!("cannot read the dataset {}", self.dataset.display()))?;
        let threshold = self.threshold.or(model.info().threshold).unwrap_or(0.5);
        let mut by_model = Vec::new();
        let mut by_rules = Vec::new();
        for example in examples.iter() {
            let Some(failed) = example.failed else { continue };
            by_model.push((f64::from(model.score(&example.features)?), failed));
            by_rules.push((f64::from(example.rules_probability), failed));
        }
        let (model_numbers, rules_numbers) = (evaluate(&by_model, threshold), evaluate(&by_rules, 0.3));
        if let Some(path) = self.scores_out {
            let mut text = String::from("model_probability,rules_probability,failed\n");
            for ((model, failed), (rules, _)) in by_model.iter().zip(&by_rules) {
                text.push_str(&format!("{model},{rules},{}\n", u8::from(*failed)));
            }
            std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        }
        if self.json {
            let value = serde_json::json!({
                "model": model.info().label(),
                "threshold": threshold,
                "holdout": model_numbers,
                "rules_alone": rules_numbers,
            });
            print(&json(&value)?);
        } else {
            print(&render::evaluation(&model.info().label(), threshold, &model_numbers, &rules_numbers));
        }
        Ok(0)
    }
}
