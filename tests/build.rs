//! Builds every guest (the examples, the test guests and the peers of the
//! benchmarks; see `GUEST_BUILDS`) and generates constants with their
//! paths, plus `foreach_guest!`, which the test suite uses to refuse to
//! compile while a guest has no test.
//!
//! The guests get their own target directory, `guests/` beside the outer
//! build's profiles (sharing the outer build's own would deadlock on its
//! lock). It is the same for every profile and for `cargo check`, so that
//! clippy's check build reuses the guests and models of the test build
//! instead of building and training them again.
//!
//! It also trains the test models with `models/train.py` (the training
//! packages come from `cargo xtask setup`, found through
//! `TXMIRROR_PYTHONPATH`) and generates constants with their paths.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A workspace of guests, the target they are built for, and which of its
/// packages (all if empty).
struct GuestBuild {
    manifest: &'static str,
    target: &'static str,
    packages: &'static [&'static str],
}

/// Whether the guest build is needed in this build: the Extism plugin only
/// with the `extism` feature.
fn wanted(build: &GuestBuild) -> bool {
    build.target != "wasm32-unknown-unknown" || env::var_os("CARGO_FEATURE_EXTISM").is_some()
}

const GUEST_BUILDS: &[GuestBuild] = &[
    GuestBuild { manifest: "../examples/Cargo.toml", target: "wasm32-wasip2", packages: &[] },
    GuestBuild { manifest: "guests/Cargo.toml", target: "wasm32-wasip2", packages: &[] },
    // The peer comparison of `docs/benchmarks.md`.
    GuestBuild {
        manifest: "../benches/guests/Cargo.toml",
        target: "wasm32-wasip2",
        packages: &["peer-txmirror", "peer-component"],
    },
    GuestBuild {
        manifest: "../benches/guests/Cargo.toml",
        target: "wasm32-unknown-unknown",
        packages: &["peer-extism"],
    },
];

/// The Python guests: `(constant stem, app directory)`. Each is a module
/// `app.py` in its directory, built with the Python SDK by componentize-py
/// (installed by `cargo xtask setup`, found through
/// `TXMIRROR_GUEST_PYTHONPATH`).
const PYTHON_GUESTS: &[(&str, &str)] =
    &[("bank_transfer_python", "../examples/bank-transfer-python"), ("python_tour", "guests/python-tour")];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_dir = shared_dir(&out_dir);
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());

    println!("cargo:rerun-if-changed=../guest-sdk");
    println!("cargo:rerun-if-changed=../wit");
    let mut guests: Vec<(String, PathBuf)> = Vec::new();
    for build in GUEST_BUILDS.iter().filter(|build| wanted(build)) {
        let manifest = manifest_dir.join(build.manifest);
        println!("cargo:rerun-if-changed={}", manifest.display());
        let mut command = guest_cargo(&cargo, &target_dir);
        command.args(["build", "--release", "--target", build.target, "--manifest-path"]).arg(&manifest);
        for package in build.packages {
            command.args(["--package", package]);
        }
        let status = command.status().expect("cargo runs");
        assert!(
            status.success(),
            "building the guests of {} failed; is the {} target installed? (`cargo xtask test` installs it)",
            manifest.display(),
            build.target
        );
        let artifacts = target_dir.join(build.target).join("release");
        guests.extend(
            workspace_guests(&cargo, &manifest)
                .into_iter()
                .filter(|package| build.packages.is_empty() || build.packages.contains(&package.as_str()))
                .map(|package| (package, artifacts.clone())),
        );
    }

    let mut code = String::new();
    let mut names = Vec::new();
    for (package, artifacts) in &guests {
        let file_stem = package.replace('-', "_");
        let wasm = match artifacts.join(format!("{file_stem}.wasm")) {
            path if path.exists() => path,
            _ => artifacts.join(format!("{package}.wasm")),
        };
        assert!(wasm.exists(), "guest {package} built no {}", wasm.display());
        emit_dependencies(artifacts, &file_stem, package);
        let constant = file_stem.to_uppercase();
        writeln!(code, "/// The component built from the `{package}` guest crate.").expect("write to String");
        writeln!(code, "pub const {constant}: &str = {:?};", wasm.display().to_string()).expect("write to String");
        names.push(file_stem);
    }
    for (stem, wasm) in build_python_guests(&manifest_dir, &target_dir.join("python")) {
        let constant = stem.to_uppercase();
        writeln!(code, "/// The component built from the `{stem}` Python guest.").expect("write to String");
        writeln!(code, "pub const {constant}: &str = {:?};", wasm.display().to_string()).expect("write to String");
        names.push(stem);
    }
    writeln!(code, "/// Calls `$mac!(name)` once per guest.").expect("write to String");
    writeln!(code, "#[macro_export]\nmacro_rules! foreach_guest {{\n    ($mac:ident) => {{").expect("write to String");
    for name in &names {
        writeln!(code, "        $mac!({name});").expect("write to String");
    }
    writeln!(code, "    }};\n}}").expect("write to String");
    std::fs::write(out_dir.join("guests.rs"), code).expect("write guests.rs");

    let models = build_models(&manifest_dir, &target_dir.join("models"));
    std::fs::write(out_dir.join("models.rs"), models).expect("write models.rs");
}

/// The test models: `(constant, what it is, dataset seed, failure shift, train.py train arguments)`.
const MODELS: &[(&str, &str, u64, &str, &[&str])] = &[
    ("PLACEHOLDER", "The placeholder model, as `cargo xtask setup` trains it.", 2026, "0", &[]),
    (
        "PESSIMIST",
        "A model that expects failure far more often (trained where failure is likelier).",
        2026,
        "3",
        &["--name", "pessimist", "--version", "2"],
    ),
    (
        "SCHEMA_PREVIOUS",
        "A model that claims feature schema version 2, the one before this runtime's.",
        2026,
        "0",
        &["--schema-version", "2", "--name", "old"],
    ),
    (
        "RENAMED_FEATURE",
        "A model whose third feature has another name.",
        2026,
        "0",
        &["--rename-feature", "outbound_latency_ratio", "latency", "--name", "renamed"],
    ),
    ("NO_METADATA", "A model without txmirror metadata.", 2026, "0", &["--no-metadata", "--name", "bare"]),
    (
        "PIPELINE",
        "A model trained on a small generated dataset and evaluated on another seed's; see `PIPELINE_*`.",
        11,
        "0",
        &["--name", "pipeline"],
    ),
];

/// `guests/` in the cargo target directory: `OUT_DIR` is
/// `TARGET/PROFILE/build/PACKAGE-HASH/out`. Under another layout, `OUT_DIR`
/// itself.
fn shared_dir(out_dir: &Path) -> PathBuf {
    match out_dir.ancestors().nth(4) {
        Some(target) if out_dir.ancestors().nth(2).is_some_and(|build| build.ends_with("build")) => {
            target.join("guests")
        }
        _ => out_dir.join("guests-target"),
    }
}

fn train_py(python_path: &std::ffi::OsStr, train: &Path, args: &[&std::ffi::OsStr]) {
    let output = Command::new(env::var_os("PYTHON").unwrap_or_else(|| "python3".into()))
        .env("PYTHONPATH", python_path)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg(train)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "models/train.py {args:?} failed (are the training packages installed? `cargo xtask setup` installs them):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn build_models(manifest_dir: &Path, models_dir: &Path) -> String {
    let train = manifest_dir.join("../models/train.py");
    println!("cargo:rerun-if-changed={}", train.display());
    println!("cargo:rerun-if-changed={}", manifest_dir.join("../models/feature_schema.json").display());
    println!("cargo:rerun-if-env-changed=TXMIRROR_PYTHONPATH");
    let python_path = env::var_os("TXMIRROR_PYTHONPATH").unwrap_or_default();
    // The models are trained again only when what makes them changed: the
    // training script, the feature schema or the list above. Otherwise the
    // models of an earlier run (another profile's, or `cargo check`'s) are
    // reused; within one run, datasets are shared between models.
    let mut inputs = std::fs::read(&train).expect("read models/train.py");
    inputs.extend(std::fs::read(manifest_dir.join("../models/feature_schema.json")).expect("read the feature schema"));
    inputs.extend(format!("{MODELS:?}").into_bytes());
    let stamp = models_dir.join("inputs.stamp");
    let trained = std::fs::read(&stamp).is_ok_and(|previous| previous == inputs)
        && MODELS.iter().all(|(constant, ..)| models_dir.join(format!("{}.onnx", constant.to_lowercase())).exists());
    if !trained {
        let _ = std::fs::remove_dir_all(models_dir);
    }
    std::fs::create_dir_all(models_dir).expect("create the models directory");
    let mut code = String::new();
    let dataset = |seed: u64, shift: &str, rows: &str| {
        let file = models_dir.join(format!("dataset-{seed}-{shift}-{rows}.csv"));
        if !file.exists() {
            let seed = seed.to_string();
            let words = ["generate", "--rows", rows, "--seed", &seed, "--failure-shift", shift, "--out"];
            let args: Vec<&std::ffi::OsStr> =
                words.iter().map(std::ffi::OsStr::new).chain([file.as_os_str()]).collect();
            train_py(&python_path, &train, &args);
        }
        file
    };
    for (constant, doc, seed, shift, extra) in MODELS {
        let pipeline = *constant == "PIPELINE";
        let rows = if pipeline { "600" } else { "4000" };
        let training = dataset(*seed, shift, rows);
        let file = models_dir.join(format!("{}.onnx", constant.to_lowercase()));
        let mut args: Vec<&std::ffi::OsStr> =
            vec!["train".as_ref(), "--dataset".as_ref(), training.as_os_str(), "--out".as_ref(), file.as_os_str()];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        let (holdout, predictions, card) =
            (dataset(12, "0", "300"), models_dir.join("pipeline-predictions.csv"), models_dir.join("pipeline-card"));
        if pipeline {
            args.extend([
                "--holdout".as_ref(),
                holdout.as_os_str(),
                "--predictions-out".as_ref(),
                predictions.as_os_str(),
                "--card".as_ref(),
                card.as_os_str(),
            ]);
        }
        if !trained {
            train_py(&python_path, &train, &args);
        }
        writeln!(code, "/// {doc}").expect("write to String");
        writeln!(code, "pub const {constant}: &str = {:?};", file.display().to_string()).expect("write to String");
        if pipeline {
            for (name, path, what) in [
                ("PIPELINE_DATASET", &training, "The generated training dataset of `PIPELINE` (seed 11)."),
                ("PIPELINE_HOLDOUT", &holdout, "The held-out dataset of `PIPELINE` (seed 12)."),
                ("PIPELINE_PREDICTIONS", &predictions, "scikit-learn's probabilities for the held-out rows."),
                ("PIPELINE_CARD", &card, "The model card of `PIPELINE`, without its `.json` / `.md` suffix."),
            ] {
                writeln!(code, "/// {what}").expect("write to String");
                writeln!(code, "pub const {name}: &str = {:?};", path.display().to_string()).expect("write to String");
            }
        }
    }
    if !trained {
        std::fs::write(&stamp, inputs).expect("write the models' stamp");
    }
    code
}

/// The `.py` files directly in `dir`, sorted.
fn python_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("read a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "py"))
        .collect();
    files.sort();
    files
}

/// Every file under `dir`, sorted, for the stamp of what a build read.
fn all_files(dir: &Path, into: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("read a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() { all_files(&path, into) } else { into.push(path) }
    }
}

/// Builds each Python guest again when its app, the SDK or the WIT changed;
/// returns `(stem, component)`. componentize-py writes `__pycache__`
/// beside the sources it reads, so it reads copies in the output directory.
fn build_python_guests(manifest_dir: &Path, out: &Path) -> Vec<(String, PathBuf)> {
    let sdk = manifest_dir.join("../guest-sdk-python/txmirror");
    let wit = manifest_dir.join("../wit");
    println!("cargo:rerun-if-changed={}", sdk.display());
    println!("cargo:rerun-if-env-changed=TXMIRROR_GUEST_PYTHONPATH");
    let python_path = env::var_os("TXMIRROR_GUEST_PYTHONPATH").unwrap_or_default();
    let mut shared = Vec::new();
    all_files(&wit, &mut shared);
    shared.extend(python_files(&sdk));
    let mut built = Vec::new();
    for (stem, app) in PYTHON_GUESTS {
        let app = manifest_dir.join(app);
        println!("cargo:rerun-if-changed={}", app.display());
        let sources: Vec<PathBuf> = shared.iter().cloned().chain(python_files(&app)).collect();
        let mut inputs = Vec::new();
        for source in &sources {
            inputs.extend(source.display().to_string().into_bytes());
            inputs.extend(std::fs::read(source).unwrap_or_else(|e| panic!("read {}: {e}", source.display())));
        }
        let wasm = out.join(format!("{stem}.wasm"));
        let stamp = out.join(format!("{stem}.stamp"));
        if std::fs::read(&stamp).is_ok_and(|previous| previous == inputs) && wasm.exists() {
            built.push((stem.to_string(), wasm));
            continue;
        }
        let staging = out.join(format!("{stem}-src"));
        let _ = std::fs::remove_dir_all(&staging);
        for (from, to) in [(&sdk, staging.join("sdk/txmirror")), (&app, staging.join("app"))] {
            std::fs::create_dir_all(&to).expect("create the staging directory");
            for file in python_files(from) {
                std::fs::copy(&file, to.join(file.file_name().expect("a file name"))).expect("copy a source");
            }
        }
        let output = Command::new(env::var_os("PYTHON").unwrap_or_else(|| "python3".into()))
            .env("PYTHONPATH", &python_path)
            .args([
                "-c",
                "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())",
            ])
            .arg("-d")
            .arg(&wit)
            .args(["-w", "transaction", "componentize", "-p"])
            .arg(staging.join("sdk"))
            .arg("-p")
            .arg(staging.join("app"))
            .arg("app")
            .arg("-o")
            .arg(&wasm)
            .output()
            .expect("python3 runs");
        assert!(
            output.status.success(),
            "building the Python guest {} failed (is componentize-py installed? `cargo xtask setup` installs it):\n{}{}",
            app.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::write(&stamp, inputs).expect("write the guest's stamp");
        built.push((stem.to_string(), wasm));
    }
    built
}

/// A cargo command for the guests, without the outer build's settings.
fn guest_cargo(cargo: &std::ffi::OsStr, target_dir: &Path) -> Command {
    let mut command = Command::new(cargo);
    command.env("CARGO_TARGET_DIR", target_dir);
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("CARGO_ENCODED_RUSTFLAGS")
            || key == "RUSTFLAGS"
            || key.starts_with("CARGO_PROFILE_")
            || key.starts_with("CARGO_BUILD_")
            || key == "RUSTC_WORKSPACE_WRAPPER"
        {
            command.env_remove(key);
        }
    }
    command
}

/// The guest packages of a workspace: those with a `cdylib` or `bin` target.
fn workspace_guests(cargo: &std::ffi::OsStr, manifest: &Path) -> Vec<String> {
    let output = Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1", "--manifest-path"])
        .arg(manifest)
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata failed for {}", manifest.display());
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).expect("cargo metadata is JSON");
    let mut guests = Vec::new();
    for package in metadata["packages"].as_array().into_iter().flatten() {
        let is_guest = package["targets"].as_array().into_iter().flatten().any(|target| {
            target["kind"].as_array().into_iter().flatten().any(|kind| kind == "cdylib" || kind == "bin")
        });
        if is_guest {
            guests.push(package["name"].as_str().expect("package name").to_string());
        }
    }
    guests
}

/// Reruns this script when a source file of the guest changes.
fn emit_dependencies(artifacts: &Path, file_stem: &str, package: &str) {
    for name in [format!("{file_stem}.d"), format!("{package}.d")] {
        let Ok(text) = std::fs::read_to_string(artifacts.join(name)) else { continue };
        let Some((_, deps)) = text.split_once(':') else { continue };
        for dep in deps.split_whitespace() {
            println!("cargo:rerun-if-changed={dep}");
        }
    }
}
