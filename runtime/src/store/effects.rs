//! The effect journal: the unsafe outbound calls of a transaction, what
//! each asked and what it got, kept across its attempts and its reruns.
//!
//! An unsafe call is recorded before it is sent (its intent) and again
//! once it has been answered (its response). An attempt that makes the same
//! call at the same point later (a retry, a rerun after a crash, on this
//! node or another) finds the entry: a call that succeeded is answered from
//! it and not sent again; one whose response is missing was perhaps
//! received by the other side, and is sent again with the same idempotency
//! key, or not at all, as the policy says. See `docs/design.md`.

use serde::{Deserialize, Serialize};

/// One unsafe outbound call of a transaction, as the journal keeps it. A
/// call is known by the path that made it and its ordinal among that path's
/// unsafe calls (from 1): the same code on the same input makes the same
/// calls in the same order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effect {
    /// The path that made it.
    pub path: String,
    /// Its place among the path's unsafe calls, from 1.
    pub ordinal: u32,
    /// The request's method and URL.
    pub method: String,
    pub url: String,
    /// BLAKE3 of the method, the URL and the body, in hex: the same call
    /// made again must ask the same.
    pub digest: String,
    /// The idempotency key it carried.
    pub key: String,
    /// How many times it was sent.
    pub sends: u32,
    /// When it was last sent (Unix milliseconds).
    pub sent_unix_ms: u64,
    /// What it got, once it was answered; `None` while in doubt.
    pub response: Option<EffectResponse>,
}

/// What an unsafe call got back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectResponse {
    pub status: u16,
    /// Its headers, in order (values that are not UTF-8 are left out).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When it came (Unix milliseconds).
    pub unix_ms: u64,
}

/// One write of the effect journal: `effect`, into the journal of
/// `transaction_id`, under `fence` if the transaction is leased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectWrite {
    pub transaction_id: String,
    pub effect: Effect,
    pub fence: Option<super::Fence>,
}

impl Effect {
    /// Whether the call succeeded (a 2xx status): it is never sent again.
    pub fn succeeded(&self) -> bool {
        self.response.as_ref().is_some_and(|response| (200..300).contains(&response.status))
    }

    /// Whether it was sent and its answer is not known: the other side may
    /// have acted on it.
    pub fn in_doubt(&self) -> bool {
        self.response.is_none()
    }
}
