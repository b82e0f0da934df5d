//! How a command fails: an error and the exit code it maps to (see the
//! table in `main.rs`).

use txmirror_runtime::{ExecuteError, ModuleError, PolicyError, ReplayError};

/// An error with the exit code it maps to.
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) code: u8,
    pub(crate) error: anyhow::Error,
}

impl Failed {
    /// The command line is wrong (exit code 2).
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self { code: 2, error: anyhow::anyhow!(message.into()) }
    }
}

/// Typed errors keep their meaning: a refused module is 3, a refused
/// policy or a request that does not fit is 4, anything else 5.
impl<E: Into<anyhow::Error>> From<E> for Failed {
    fn from(error: E) -> Self {
        let error = error.into();
        let code = if error.is::<ModuleError>() {
            3
        } else if error.is::<PolicyError>() {
            4
        } else if let Some(replay) = error.downcast_ref::<ReplayError>() {
            match replay {
                ReplayError::NoSuchDeadLetter(_) | ReplayError::ModuleMismatch { .. } => 4,
                ReplayError::Execute(execute) => execute_code(execute),
                _ => 5,
            }
        } else {
            error.downcast_ref::<ExecuteError>().map_or(5, execute_code)
        };
        Self { code, error }
    }
}

/// The exit code of a transaction that could not run.
fn execute_code(error: &ExecuteError) -> u8 {
    match error {
        ExecuteError::Policy(_)
        | ExecuteError::UnknownPath { .. }
        | ExecuteError::DuplicateId(_)
        | ExecuteError::InvalidIdempotencyKey(_)
        | ExecuteError::IdempotencyKeyReused { .. } => 4,
        _ => 5,
    }
}
