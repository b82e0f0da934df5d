//! The runtime's current model, replaceable while transactions run.
//!
//! A slot holds the model loaded from a file. [`ModelSlot::reload`] loads the
//! file again when its contents changed and swaps the new model in; a
//! transaction already scoring keeps the model it started with. A file that
//! fails to load leaves the current model in place, and the failure is kept
//! for operators ([`ModelSlot::last_error`]). A watcher thread calls
//! `reload` whenever the file's size or modification time changes.

use super::model::{Model, ModelError, ModelInfo};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime};

/// What a reload did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Reloaded {
    /// The file holds the model already loaded.
    Unchanged(ModelInfo),
    /// A new model replaced the old one.
    Replaced {
        /// The model before.
        old: ModelInfo,
        /// The model now.
        new: ModelInfo,
    },
}

/// The runtime's model and where it comes from.
#[derive(Debug)]
pub(crate) struct ModelSlot {
    path: PathBuf,
    library: Option<PathBuf>,
    current: RwLock<Arc<Model>>,
    /// The size and modification time of the file when last looked at.
    seen: Mutex<Option<(u64, SystemTime)>>,
    last_error: Mutex<Option<String>>,
}

fn stamp(path: &Path) -> Option<(u64, SystemTime)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.len(), metadata.modified().ok()?))
}

impl ModelSlot {
    /// Loads the model in `path`; a model that does not load stops the runtime from starting.
    pub(crate) fn open(path: &Path, library: Option<&Path>) -> Result<Arc<Self>, ModelError> {
        let seen = stamp(path);
        let model = Model::load(path, library)?;
        Ok(Arc::new(Self {
            path: path.to_path_buf(),
            library: library.map(Path::to_path_buf),
            current: RwLock::new(Arc::new(model)),
            seen: Mutex::new(seen),
            last_error: Mutex::new(None),
        }))
    }

    /// The model to score with now.
    pub(crate) fn current(&self) -> Arc<Model> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Why the last reload failed, if it did and nothing has loaded since.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Reads the file again and swaps in its model if the contents changed.
    pub(crate) fn reload(&self) -> Result<Reloaded, ModelError> {
        *self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = stamp(&self.path);
        let result = self.load_if_changed();
        *self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            result.as_ref().err().map(ToString::to_string);
        result
    }

    fn load_if_changed(&self) -> Result<Reloaded, ModelError> {
        let bytes = std::fs::read(&self.path).map_err(|source| ModelError::Read { path: self.path.clone(), source })?;
        let old = self.current().info().clone();
        if blake3::hash(&bytes).to_hex().as_str() == old.digest {
            return Ok(Reloaded::Unchanged(old));
        }
        let model = Arc::new(Model::from_bytes(&self.path, bytes, self.library.as_deref())?);
        let new = model.info().clone();
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = model;
        Ok(Reloaded::Replaced { old, new })
    }

    /// Starts a thread that reloads the model whenever its file changes,
    /// checking every `interval`; it ends when the slot is dropped.
    pub(crate) fn watch(self: &Arc<Self>, interval: Duration) -> std::io::Result<()> {
        let slot: Weak<Self> = Arc::downgrade(self);
        std::thread::Builder::new().name("txmirror-model-watch".into()).spawn(move || {
            loop {
                std::thread::sleep(interval);
                let Some(slot) = slot.upgrade() else { return };
                let changed = {
                    let seen = slot.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    *seen != stamp(&slot.path)
                };
                if !changed {
                    continue;
                }
                match slot.reload() {
                    Ok(Reloaded::Replaced { old, new }) => {
                        tracing::info!(old = %old.label(), new = %new.label(), path = %slot.path.display(), "model replaced");
                    }
                    Ok(Reloaded::Unchanged(_)) => {}
                    Err(error) => {
                        tracing::warn!(%error, path = %slot.path.display(), "model not replaced; the old one stays");
                    }
                }
            }
        })?;
        Ok(())
    }
}
