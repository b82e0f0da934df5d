//! Each transaction's end as an event on the runtime's own stream
//! ([`STATUS_STREAM`]), written in the same storage transaction as its
//! record: a committed one with its commit, a failed one with its failure's
//! record. Whoever follows the stream (the service's webhooks) learns of
//! every end that was recorded, and of none that was not, whatever crashes
//! between the two.
//!
//! Its payload is JSON: `{"transaction_id", "status", "module", "path",
//! "attempts", "failure", "dead_lettered", "notify"}`, `status` being
//! `committed` or `failed`, `failure` `{"kind", "message"}` or null, and
//! `notify` what the request named to be told (see [`TxRequest::notify`]).
//!
//! [`TxRequest::notify`]: crate::TxRequest::notify

use crate::store::EventEntry;
use crate::vocab::{Failure, STATUS_STREAM};
use serde::Serialize;

/// A transaction's end, as its status event says it.
#[derive(Debug, Serialize)]
pub(crate) struct Ended<'a> {
    pub(crate) transaction_id: &'a str,
    pub(crate) status: &'static str,
    pub(crate) module: &'a str,
    pub(crate) path: &'a str,
    pub(crate) attempts: usize,
    pub(crate) failure: Option<&'a Failure>,
    pub(crate) dead_lettered: bool,
    pub(crate) notify: Option<&'a str>,
}

impl Ended<'_> {
    /// The event on the status stream.
    pub(crate) fn event(&self) -> EventEntry {
        // A struct of strings, numbers and a `Failure` always serialises.
        let payload = serde_json::to_vec(self).unwrap_or_default();
        EventEntry { stream: STATUS_STREAM.to_string(), payload }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use crate::vocab::FailureKind;

    #[test]
    fn an_end_is_one_json_event_on_the_status_stream() {
        let failure = Failure::new(FailureKind::CancelledByCaller, "its caller cancelled the transaction");
        let ended = Ended {
            transaction_id: "t-1",
            status: "failed",
            module: "abc",
            path: "charge",
            attempts: 2,
            failure: Some(&failure),
            dead_lettered: false,
            notify: Some("billing"),
        };
        let event = ended.event();
        assert_eq!(event.stream, "txmirror.status");
        let json: serde_json::Value = serde_json::from_slice(&event.payload).unwrap();
        assert_eq!(json["failure"]["kind"], "cancelled_by_caller");
        assert_eq!((json["status"].as_str(), json["attempts"].as_u64()), (Some("failed"), Some(2)));
        assert_eq!(json["notify"], "billing");
    }
}
