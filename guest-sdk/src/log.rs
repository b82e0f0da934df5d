//! Log lines, recorded in the transaction's trace.
//!
//! ```no_run
//! txmirror_guest::log::info("charging the card");
//! ```

use crate::wit::txmirror::transaction::log::{Level, log};

/// Logs a debug message.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Logs an informational message.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Logs a warning.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Logs an error.
pub fn error(message: &str) {
    log(Level::Error, message);
}
