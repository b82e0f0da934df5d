//! The transaction's clock.
//!
//! The wall clock is frozen at the moment the transaction started, and the
//! primary and its mirror read the same value, so time-dependent logic takes
//! the same branches in both.
//!
//! ```no_run
//! let started_ms = txmirror_guest::clock::now_unix_millis();
//! ```

use crate::wit::wasi::clocks::wall_clock;

/// Milliseconds since the Unix epoch at the start of the transaction.
pub fn now_unix_millis() -> u64 {
    let now = wall_clock::now();
    now.seconds.saturating_mul(1000).saturating_add(u64::from(now.nanoseconds / 1_000_000))
}
