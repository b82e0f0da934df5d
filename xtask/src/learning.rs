//! The learning loop's chores:
//!
//! - `train-model`: two fault workloads in observe mode (a training seed and
//!   a held-out seed), their datasets, and the model trained on the first
//!   and evaluated on the second: `models/txmirror-v3.onnx` and its card.
//! - `effectiveness`: the held-out workload run retry-only, with the rules
//!   alone, with the rules and the model, and with those and adaptive
//!   mirroring; then the unseen `shop` shape, on four seeds, retry-only and
//!   with the rules and the model learning online; `docs/effectiveness.md`
//!   and its plots, written by `models/report.py`.

use anyhow::Result;
use std::path::Path;
use std::process::Command;

/// The training workload.
const TRAIN: (u64, usize) = (101, 2_000);
/// The held-out workload: another seed.
const HOLDOUT: (u64, usize) = (202, 1_000);
/// The unseen shape (`--shape shop`), nothing is trained on it: its seeds
/// (one run of a timed workload says little; four say how much it moves)
/// and its size.
const UNSEEN_SEEDS: [u64; 4] = [303, 304, 305, 306];
const UNSEEN_SIZE: usize = 1_000;
/// The shipped model, relative to the root.
pub(crate) const MODEL: &str = "models/txmirror-v3.onnx";
const CARD: &str = "models/txmirror-v3-card";

fn txmirror(root: &Path) -> Result<Command> {
    let mut command = Command::new(crate::debug_binary(root, "txmirror")?);
    command.current_dir(root);
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        command.env("ORT_DYLIB_PATH", crate::setup::onnxruntime_library(root));
    }
    Ok(command)
}

/// Runs a workload of the `faults` shape on a fresh data directory; returns the directory.
fn workload(root: &Path, name: &str, seed_size: (u64, usize), mode: &str, model: bool) -> Result<String> {
    shaped_workload(root, name, "faults", seed_size, mode, model)
}

/// Runs a workload of a shape on a fresh data directory; returns the directory.
fn shaped_workload(
    root: &Path,
    name: &str,
    shape: &str,
    seed_size: (u64, usize),
    mode: &str,
    model: bool,
) -> Result<String> {
    shaped_workload_with(root, name, shape, seed_size, mode, model, &[])
}

/// [`shaped_workload`], with `extra` arguments for `txmirror workload`.
fn shaped_workload_with(
    root: &Path,
    name: &str,
    shape: &str,
    (seed, size): (u64, usize),
    mode: &str,
    model: bool,
    extra: &[&str],
) -> Result<String> {
    let data = format!("target/learning/{name}");
    let _ = std::fs::remove_dir_all(root.join(&data));
    let mut command = txmirror(root)?;
    command.args(["--data-dir", &data]);
    if model {
        command.args(["--model", MODEL]);
    }
    let (seed, size) = (seed.to_string(), size.to_string());
    let report = format!("target/learning/{name}.json");
    command.args(["workload", "--shape", shape, "--seed", &seed, "--size", &size, "--mode", mode, "--report", &report]);
    command.args(extra);
    crate::run(&mut command)?;
    Ok(data)
}

fn export(root: &Path, data: &str, out: &str) -> Result<()> {
    crate::run(txmirror(root)?.args(["--data-dir", data, "model", "export-dataset", "--out", out]))
}

/// `cargo xtask train-model`.
pub(crate) fn train_model(root: &Path) -> Result<()> {
    crate::demo::build(root)?;
    crate::demo::step("the training workload (observe mode) and its dataset");
    let data = workload(root, "train", TRAIN, "observe", false)?;
    export(root, &data, "target/learning/train.csv")?;
    crate::demo::step("the held-out workload (another seed) and its dataset");
    let data = workload(root, "holdout", HOLDOUT, "observe", false)?;
    export(root, &data, "target/learning/holdout.csv")?;
    crate::demo::step("training and evaluating the model");
    crate::run(crate::setup::training_python(root).current_dir(root).args([
        "models/train.py",
        "train",
        "--dataset",
        "target/learning/train.csv",
        "--holdout",
        "target/learning/holdout.csv",
        "--out",
        MODEL,
        "--card",
        CARD,
        "--name",
        "txmirror",
        "--version",
        "3",
    ]))?;
    evaluate_holdout(root, &[])
}

/// The shipped model's numbers on the held-out dataset, with `extra` arguments.
fn evaluate_holdout(root: &Path, extra: &[&str]) -> Result<()> {
    let evaluate = ["--model", MODEL, "model", "evaluate", "--dataset", "target/learning/holdout.csv"];
    crate::run(txmirror(root)?.args(evaluate).args(extra))
}

/// `cargo xtask effectiveness`.
pub(crate) fn effectiveness(root: &Path) -> Result<()> {
    crate::demo::build(root)?;
    if !root.join("target/learning/holdout.csv").exists() {
        crate::demo::step("the held-out dataset, for the precision-recall curve");
        let data = workload(root, "holdout", HOLDOUT, "observe", false)?;
        export(root, &data, "target/learning/holdout.csv")?;
    }
    for (name, mode, model) in [
        ("effect-retry-only", "retry-only", false),
        ("effect-rules", "act", false),
        ("effect-model", "act", true),
        ("effect-adaptive", "adaptive", true),
    ] {
        crate::demo::step(&format!("the held-out workload: {name}"));
        workload(root, name, HOLDOUT, mode, model)?;
    }
    // Breakers and path choice against a fixed order and retry-only.
    let mut fulfilment = Vec::new();
    for (name, mode, model, extra) in [
        ("fulfil-retry-only", "retry-only", false, &["--breakers", "false"][..]),
        ("fulfil-fixed-order", "act", true, &["--breakers", "false"][..]),
        ("fulfil-breakers-paths", "act", true, &["--breakers", "true", "--path-choice"][..]),
    ] {
        crate::demo::step(&format!("the held-out workload: {name}"));
        shaped_workload_with(root, name, "faults", HOLDOUT, mode, model, extra)?;
        fulfilment.push(format!("target/learning/{name}.json"));
    }
    let mut unseen = Vec::new();
    for seed in UNSEEN_SEEDS {
        for (name, mode, model) in [("retry-only", "retry-only", false), ("model", "act", true)] {
            let name = format!("unseen-{seed}-{name}");
            crate::demo::step(&format!("the unseen shape (shop): {name}"));
            shaped_workload(root, &name, "shop", (seed, UNSEEN_SIZE), mode, model)?;
            unseen.push(format!("target/learning/{name}.json"));
        }
    }
    evaluate_holdout(root, &["--scores-out", "target/learning/holdout-scores.csv"])?;
    crate::demo::step("writing docs/effectiveness.md");
    crate::run(
        crate::setup::training_python(root)
            .current_dir(root)
            .args([
                "models/report.py",
                "--runs",
                "target/learning/effect-retry-only.json",
                "target/learning/effect-rules.json",
                "target/learning/effect-model.json",
                "--scores",
                "target/learning/holdout-scores.csv",
                "--card",
                &format!("{CARD}.json"),
                "--adaptive",
                "target/learning/effect-adaptive.json",
                "--out",
                "docs/effectiveness.md",
                "--fulfilment",
            ])
            .args(&fulfilment)
            .arg("--unseen")
            .args(&unseen),
    )
}
