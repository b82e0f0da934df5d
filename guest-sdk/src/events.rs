//! Events, committed atomically with the transaction's state.
//!
//! An event emitted by a transaction that does not commit is never
//! delivered. Payloads are JSON.
//!
//! ```no_run
//! # fn demo() -> Result<(), txmirror_guest::events::EventError> {
//! txmirror_guest::events::emit("orders.imported", &serde_json::json!({ "order": "A-1" }))?;
//! # Ok(()) }
//! ```

use crate::wit::txmirror::transaction::events as host;
use serde::Serialize;

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventError {
    /// The stream name is empty or too long.
    InvalidStream(String),
    /// The payload is too large.
    TooLarge(String),
    /// The payload could not be encoded as JSON.
    Encode(String),
}

impl std::fmt::Display for EventError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidStream(m) => write!(f, "invalid stream: {m}"),
            Self::TooLarge(m) => write!(f, "too large: {m}"),
            Self::Encode(m) => write!(f, "payload cannot be encoded: {m}"),
        }
    }
}

impl std::error::Error for EventError {}

/// Emits `payload` to `stream`.
pub fn emit<T: Serialize + ?Sized>(stream: &str, payload: &T) -> Result<(), EventError> {
    let bytes = serde_json::to_vec(payload).map_err(|e| EventError::Encode(e.to_string()))?;
    host::emit(stream, &bytes).map_err(|error| match error {
        host::EventError::InvalidStream(m) => EventError::InvalidStream(m),
        host::EventError::TooLarge(m) => EventError::TooLarge(m),
    })
}
