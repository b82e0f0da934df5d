//! The attempts' story as the store keeps it: a [`History`] the runtime
//! encodes and decodes, opaque to the store.
//!
//! A history starts with a codec byte, then the reports: JSON for now,
//! because traces are tagged enums whose JSON is also the API's (`tx show`,
//! `GET /v1/transactions/{id}`), and a binary codec cannot read tagged
//! enums. An empty history is a transaction that never ran.

use super::AttemptReport;
use crate::store::{History, StoreError};

/// The codec byte of a JSON history.
const JSON: u8 = 1;

/// The reports, encoded for the store.
pub(crate) fn encode(reports: &[AttemptReport]) -> History {
    let mut bytes = vec![JSON];
    // Reports hold plain data (strings, numbers, maps with string keys):
    // serialising them to memory cannot fail.
    if serde_json::to_writer(&mut bytes, reports).is_err() {
        bytes.truncate(1);
        bytes.extend_from_slice(b"[]");
    }
    History::from_bytes(bytes)
}

/// The reports of a stored history; `what` names its owner in an error.
pub(crate) fn decode(what: &str, history: &History) -> Result<Vec<AttemptReport>, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { what: format!("the history of {what}"), reason };
    match history.as_bytes().split_first() {
        None => Ok(Vec::new()),
        Some((&JSON, rest)) => serde_json::from_slice(rest).map_err(|e| corrupt(e.to_string())),
        Some((other, _)) => Err(corrupt(format!("unknown codec byte {other:#04x}"))),
    }
}
