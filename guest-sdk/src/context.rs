//! What a path may know of the transaction it runs in.
//!
//! ```no_run
//! use txmirror_guest::context;
//! // The key the runtime puts on this path's first unsafe call, for a
//! // gateway that wants it in the body.
//! let key = context::effect_key(1);
//! let order = format!("{}-{key}", context::transaction_id());
//! ```

use crate::wit::txmirror::transaction::context as host;

/// The transaction's id: the same in every attempt and rerun, on any node,
/// for both twins. Empty in a dry run.
pub fn transaction_id() -> String {
    host::transaction_id()
}

/// The idempotency key of the path's `ordinal`-th unsafe outbound call
/// (from 1): the runtime sends it in the header the policy names
/// (`Idempotency-Key` by default) unless the guest set that header itself.
/// Empty in a dry run.
pub fn effect_key(ordinal: u32) -> String {
    host::effect_key(ordinal)
}

/// An unsafe outbound call the transaction sent, from its effect journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentEffect {
    /// The path that made it.
    pub path: String,
    /// Its place among that path's unsafe calls, from 1.
    pub ordinal: u32,
    /// The request's method and URL.
    pub method: String,
    pub url: String,
    /// The idempotency key it carried.
    pub key: String,
    /// How many times it was sent (more than once only under one key).
    pub sends: u32,
    /// The status it was answered with; `None` while in doubt: sent, and
    /// the answer never came, so the other side may have acted on it.
    pub status: Option<u16>,
    /// The answer's body (empty while in doubt).
    pub body: Vec<u8>,
}

impl SentEffect {
    /// Whether it was answered with a 2xx status.
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|status| (200..300).contains(&status))
    }

    /// Whether it may have acted: answered 2xx, or never answered.
    pub fn may_have_acted(&self) -> bool {
        self.status.is_none() || self.succeeded()
    }

    /// The answer's body as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, crate::Error> {
        serde_json::from_slice(&self.body)
            .map_err(|e| crate::Error::unavailable(format!("the answer to {} {} is not JSON: {e}", self.method, self.url)))
    }
}

/// The unsafe calls the transaction has sent so far, by path and ordinal.
/// In a compensation, those of the transaction it compensates: undo
/// exactly what was sent, including what a failed attempt sent. Empty in a
/// dry run.
pub fn sent_effects() -> Vec<SentEffect> {
    host::sent_effects()
        .into_iter()
        .map(|effect| SentEffect {
            path: effect.path,
            ordinal: effect.ordinal,
            method: effect.method,
            url: effect.url,
            key: effect.key,
            sends: effect.sends,
            status: effect.status,
            body: effect.body,
        })
        .collect()
}
