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
