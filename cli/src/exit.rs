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
        let execute = match error.downcast_ref::<ReplayError>() {
            Some(ReplayError::Execute(execute)) => Some(execute),
            _ => error.downcast_ref::<ExecuteError>(),
        };
        let code = match execute {
            _ if error.is::<ModuleError>() => 3,
            _ if error.is::<PolicyError>() => 4,
            _ if matches!(
                error.downcast_ref::<ReplayError>(),
                Some(ReplayError::NoSuchDeadLetter(_) | ReplayError::ModuleMismatch { .. })
            ) =>
            {
                4
            }
            Some(
                ExecuteError::Policy(_)
                | ExecuteError::UnknownPath { .. }
                | ExecuteError::DuplicateId(_)
                | ExecuteError::InvalidIdempotencyKey(_)
                | ExecuteError::IdempotencyKeyReused { .. },
            ) => 4,
            _ => 5,
        };
        Self { code, error }
    }
}
