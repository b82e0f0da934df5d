//! Which attempt each transaction running on this runtime is at, for those
//! who follow it as it runs (the service's status stream): the attempt's
//! number, its path, and when it started.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// A running transaction's current attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The attempt, from 1.
    pub attempt: u32,
    /// Its path.
    pub path: String,
    /// When it started (milliseconds since the Unix epoch).
    pub started_unix_ms: u64,
}

/// The transactions running on this runtime, by id.
#[derive(Debug, Default)]
pub(crate) struct Running(Mutex<HashMap<String, Progress>>);

impl Running {
    /// `id` starts attempt `attempt` on `path`.
    pub(crate) fn attempt(&self, id: &str, attempt: u32, path: &str, started_unix_ms: u64) {
        let progress = Progress { attempt, path: path.to_string(), started_unix_ms };
        self.0.lock().unwrap_or_else(PoisonError::into_inner).insert(id.to_string(), progress);
    }

    /// Where `id` is, if it runs here.
    pub(crate) fn of(&self, id: &str) -> Option<Progress> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).get(id).cloned()
    }

    /// Forgets `id` when the guard drops, however its run ends.
    pub(crate) fn until_done<'a>(&'a self, id: &str) -> Done<'a> {
        Done { running: self, id: id.to_string() }
    }
}

/// Forgets a transaction's progress when its run ends.
pub(crate) struct Done<'a> {
    running: &'a Running,
    id: String,
}

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.running.0.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.id);
    }
}
