//! Settings that the operator writes in the module's policy (`[config]`).
//!
//! ```no_run
//! let gateway = txmirror_guest::config::require("primary_gateway")?;
//! # Ok::<(), txmirror_guest::Error>(())
//! ```

use crate::Error;
use crate::wit::txmirror::transaction::config as host;

/// The value of `key`, if the policy sets it.
pub fn get(key: &str) -> Option<String> {
    host::get(key)
}

/// The value of `key`, or an [`Error::Unavailable`] naming the missing key.
pub fn require(key: &str) -> Result<String, Error> {
    get(key).ok_or_else(|| Error::unavailable(format!("the policy sets no config value `{key}`")))
}
