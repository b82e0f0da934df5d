//! The learnt half of the predictor: an ONNX model run by the real ONNX
//! Runtime, loaded at run time from its shared library.
//!
//! A model reads one `float32` tensor of shape `[batch, features]` in the
//! order of [`FEATURE_NAMES`] and writes a `probabilities` tensor of shape
//! `[batch, 2]`, whose second column is the probability that the primary
//! fails. The file carries its contract in its ONNX metadata (written by
//! `models/train.py`), and a model whose contract differs from this
//! runtime's feature schema is refused when it is loaded:
//!
//! | key | value |
//! |---|---|
//! | `txmirror.feature_schema_version` | [`SCHEMA_VERSION`] |
//! | `txmirror.feature_names` | [`FEATURE_NAMES`], comma-separated |
//! | `txmirror.model_name`, `txmirror.model_version` | shown in predictions |
//! | `txmirror.trained_on` | what it learnt from (optional) |
//!
//! `Session::run` needs exclusive access, so a model keeps a small pool of
//! sessions: one per concurrent scorer, created on demand.

use super::features::{FEATURE_NAMES, Features, SCHEMA_VERSION};
use ort::environment::Environment;
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The metadata key of the feature schema version.
pub const METADATA_SCHEMA_VERSION: &str = "txmirror.feature_schema_version";
/// The metadata key of the feature names.
pub const METADATA_FEATURE_NAMES: &str = "txmirror.feature_names";
/// The metadata key of the model's name.
pub const METADATA_MODEL_NAME: &str = "txmirror.model_name";
/// The metadata key of the model's version.
pub const METADATA_MODEL_VERSION: &str = "txmirror.model_version";
/// The metadata key of what the model learnt from.
pub const METADATA_TRAINED_ON: &str = "txmirror.trained_on";
/// The metadata key of the threshold chosen in training (see the model card).
pub const METADATA_THRESHOLD: &str = "txmirror.threshold";
/// The output read: the probability of each class, failure second.
pub const PROBABILITIES_OUTPUT: &str = "probabilities";

/// The environment variable naming the ONNX Runtime library.
pub const LIBRARY_VARIABLE: &str = "ORT_DYLIB_PATH";

/// Why a model could not be loaded or could not score.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// No ONNX Runtime library was named.
    #[error(
        "no ONNX Runtime library: set {LIBRARY_VARIABLE} to the path of libonnxruntime.so \
         (`cargo xtask setup` installs it in target/onnxruntime/)"
    )]
    NoLibrary,
    /// The ONNX Runtime library could not be loaded.
    #[error("cannot load the ONNX Runtime library: {0}")]
    Library(String),
    /// The model file could not be read.
    #[error("cannot read the model {path}: {source}")]
    Read {
        /// The model file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// ONNX Runtime refused the file.
    #[error("{path} is not a model ONNX Runtime can run: {reason}")]
    Invalid {
        /// The model file.
        path: PathBuf,
        /// What ONNX Runtime said.
        reason: String,
    },
    /// The file does not say which features it reads.
    #[error(
        "the model {path} has no `{key}` metadata, so its features are unknown; \
         train and export it with models/train.py, which records them"
    )]
    MissingMetadata {
        /// The model file.
        path: PathBuf,
        /// The missing key.
        key: &'static str,
    },
    /// The model was trained on another version of the feature schema.
    #[error(
        "the model {path} reads feature schema version {found}, but this runtime computes version {expected}; \
         retrain it with models/train.py"
    )]
    SchemaVersion {
        /// The model file.
        path: PathBuf,
        /// This runtime's version.
        expected: u32,
        /// The model's.
        found: String,
    },
    /// The model reads other features, or in another order.
    #[error("the model {path} reads the features [{found}], but schema version {SCHEMA_VERSION} has [{expected}]")]
    FeatureNames {
        /// The model file.
        path: PathBuf,
        /// This runtime's names.
        expected: String,
        /// The model's.
        found: String,
    },
    /// The model's inputs or outputs are not of the expected shape.
    #[error("the model {path} {reason}")]
    Signature {
        /// The model file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Inference failed.
    #[error("the model {model} could not score: {reason}")]
    Inference {
        /// The model's name and version.
        model: String,
        /// Why.
        reason: String,
    },
}

/// What a loaded model is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The file it was loaded from.
    pub path: PathBuf,
    /// Its name (`txmirror.model_name`).
    pub name: String,
    /// Its version (`txmirror.model_version`).
    pub version: String,
    /// What it learnt from (`txmirror.trained_on`), if it says.
    pub trained_on: Option<String>,
    /// The threshold chosen in training (`txmirror.threshold`), if it says.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// The BLAKE3 hash of the file, hex.
    pub digest: String,
}

impl ModelInfo {
    /// `name version`, as predictions show it.
    pub fn label(&self) -> String {
        format!("{} {}", self.name, self.version)
    }
}

/// The process's ONNX Runtime environment, once the library is loaded.
static ENVIRONMENT: Mutex<Option<Environment>> = Mutex::new(None);

/// Loads the ONNX Runtime library (`library`, else `$ORT_DYLIB_PATH`, else
/// the one `cargo xtask setup` installs beside the build's binaries, in
/// `target/onnxruntime/`) and creates the environment, once per process:
/// the library cannot be swapped once loaded, so later calls reuse the first.
pub fn onnx_runtime(library: Option<&Path>) -> Result<Environment, ModelError> {
    let mut environment = ENVIRONMENT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(environment) = environment.as_ref() {
        return Ok(environment.clone());
    }
    let path = match library {
        Some(path) => path.to_path_buf(),
        None => match std::env::var_os(LIBRARY_VARIABLE) {
            Some(path) if !path.is_empty() => PathBuf::from(path),
            _ => beside_the_binaries().ok_or(ModelError::NoLibrary)?,
        },
    };
    // Never `ort::init()`: it panics when the library is missing.
    let path = std::path::absolute(&path).unwrap_or(path);
    if !path.is_file() {
        return Err(ModelError::Library(format!(
            "{} does not exist (`cargo xtask setup` installs it in target/onnxruntime/)",
            path.display()
        )));
    }
    let built = ort::init_from(&path)
        .map_err(|e| ModelError::Library(e.to_string()))?
        .with_name("txmirror")
        .build()
        .map_err(|e| ModelError::Library(e.to_string()))?;
    *environment = Some(built.clone());
    Ok(built)
}

/// `target/onnxruntime/libonnxruntime.so.*` for a binary in `target/debug/`
/// or `target/release/` (or their `deps/`), if there is one.
fn beside_the_binaries() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors().skip(1).take(3).find_map(|dir| {
        let entries = std::fs::read_dir(dir.join("onnxruntime")).ok()?;
        let mut libraries: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| {
                path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libonnxruntime.so"))
            })
            .collect();
        libraries.sort();
        libraries.pop()
    })
}

/// A model checked against the feature schema, ready to score.
pub struct Model {
    info: ModelInfo,
    bytes: Vec<u8>,
    environment: Environment,
    sessions: Mutex<Vec<Session>>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("info", &self.info).finish_non_exhaustive()
    }
}

fn new_session(environment: &Environment, bytes: &[u8]) -> ort::Result<Session> {
    // One thread per run: a prediction is a handful of multiply-adds, and
    // the runtime's own threads are the parallelism.
    Session::builder(environment)?.with_intra_threads(1)?.with_inter_threads(1)?.commit_from_memory(bytes)
}

impl Model {
    /// Loads and checks the model in `path`, with the ONNX Runtime library
    /// `library` (else `$ORT_DYLIB_PATH`).
    pub fn load(path: &Path, library: Option<&Path>) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Read { path: path.to_path_buf(), source })?;
        Self::from_bytes(path, bytes, library)
    }

    /// Checks and loads a model read from `path`.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>, library: Option<&Path>) -> Result<Self, ModelError> {
        let environment = onnx_runtime(library)?;
        let invalid = |e: ort::Error| ModelError::Invalid { path: path.to_path_buf(), reason: e.to_string() };
        let session = new_session(&environment, &bytes).map_err(invalid)?;
        let (name, version, trained_on, threshold) = check_metadata(path, &session)?;
        check_signature(path, &session)?;
        let model = Self {
            info: ModelInfo {
                path: path.to_path_buf(),
                name,
                version,
                trained_on,
                threshold,
                digest: blake3::hash(&bytes).to_hex().to_string(),
            },
            bytes,
            environment,
            sessions: Mutex::new(vec![session]),
        };
        // A model that cannot score is refused now, not at its first transaction.
        model.score(&Features::default()).map_err(|e| ModelError::Invalid {
            path: path.to_path_buf(),
            reason: format!("a trial prediction failed: {e}"),
        })?;
        Ok(model)
    }

    /// What the model is.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The probability, in `[0, 1]`, that the primary fails.
    pub fn score(&self, features: &Features) -> Result<f32, ModelError> {
        let inference = |reason: String| ModelError::Inference { model: self.info.label(), reason };
        let pooled = self.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
        let mut session = match pooled {
            Some(session) => session,
            None => new_session(&self.environment, &self.bytes).map_err(|e| inference(e.to_string()))?,
        };
        let result = run(&mut session, features).map_err(inference);
        self.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(session);
        result
    }
}

fn run(session: &mut Session, features: &Features) -> Result<f32, String> {
    let values = features.to_array();
    let input = TensorRef::from_array_view(([1_usize, values.len()], values.as_slice())).map_err(|e| e.to_string())?;
    let outputs = session.run(ort::inputs![input]).map_err(|e| e.to_string())?;
    let output = outputs.get(PROBABILITIES_OUTPUT).ok_or_else(|| format!("no `{PROBABILITIES_OUTPUT}` output"))?;
    let (_, probabilities) = output.try_extract_tensor::<f32>().map_err(|e| e.to_string())?;
    match probabilities {
        [_, failure] if (0.0..=1.0).contains(failure) => Ok(*failure),
        [_, failure] => Err(format!("the failure probability {failure} is not between 0 and 1")),
        other => Err(format!("`{PROBABILITIES_OUTPUT}` has {} values, not 2", other.len())),
    }
}

type Described = (String, String, Option<String>, Option<f64>);

fn check_metadata(path: &Path, session: &Session) -> Result<Described, ModelError> {
    let metadata = session
        .metadata()
        .map_err(|e| ModelError::Invalid { path: path.to_path_buf(), reason: format!("unreadable metadata: {e}") })?;
    let required = |key: &'static str| {
        metadata.custom(key).ok_or_else(|| ModelError::MissingMetadata { path: path.to_path_buf(), key })
    };
    let version = required(METADATA_SCHEMA_VERSION)?;
    if version.trim().parse::<u32>().ok() != Some(SCHEMA_VERSION) {
        return Err(ModelError::SchemaVersion { path: path.to_path_buf(), expected: SCHEMA_VERSION, found: version });
    }
    let names = required(METADATA_FEATURE_NAMES)?;
    let found: Vec<&str> = names.split(',').map(str::trim).collect();
    if found != FEATURE_NAMES {
        return Err(ModelError::FeatureNames {
            path: path.to_path_buf(),
            expected: FEATURE_NAMES.join(", "),
            found: found.join(", "),
        });
    }
    let threshold = metadata.custom(METADATA_THRESHOLD).and_then(|t| t.trim().parse::<f64>().ok());
    Ok((
        required(METADATA_MODEL_NAME)?,
        required(METADATA_MODEL_VERSION)?,
        metadata.custom(METADATA_TRAINED_ON),
        threshold,
    ))
}

fn check_signature(path: &Path, session: &Session) -> Result<(), ModelError> {
    let wrong = |reason: String| ModelError::Signature { path: path.to_path_buf(), reason };
    let [input] = session.inputs() else {
        return Err(wrong(format!("has {} inputs; it must read one tensor of features", session.inputs().len())));
    };
    match input.dtype() {
        ValueType::Tensor { ty: TensorElementType::Float32, shape, .. }
            if shape.len() == 2 && usize::try_from(shape[1]).ok() == Some(FEATURE_NAMES.len()) => {}
        other => {
            return Err(wrong(format!(
                "input `{}` is {other}; it must be a float32 tensor of shape [batch, {}]",
                input.name(),
                FEATURE_NAMES.len()
            )));
        }
    }
    let output = session.outputs().iter().find(|o| o.name() == PROBABILITIES_OUTPUT).ok_or_else(|| {
        wrong(format!(
            "has no `{PROBABILITIES_OUTPUT}` output (export classifiers with skl2onnx's `zipmap` option off)"
        ))
    })?;
    match output.dtype() {
        ValueType::Tensor { ty: TensorElementType::Float32, shape, .. } if shape.len() == 2 => Ok(()),
        other => Err(wrong(format!("output `{PROBABILITIES_OUTPUT}` is {other}; it must be float32 [batch, 2]"))),
    }
}
