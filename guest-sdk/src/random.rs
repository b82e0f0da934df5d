//! Random numbers.
//!
//! The runtime seeds every transaction's generator once and gives the same
//! seed to the primary and its mirror, so both draw the same values.
//!
//! ```no_run
//! let nonce = txmirror_guest::random::u64();
//! ```

use crate::wit::wasi::random::random as host;

/// A random `u64`.
pub fn u64() -> u64 {
    host::get_random_u64()
}

/// `len` random bytes.
pub fn bytes(len: u64) -> Vec<u8> {
    host::get_random_bytes(len)
}
