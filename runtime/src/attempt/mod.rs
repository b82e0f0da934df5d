//! What happens before an attempt runs: whether its mirror runs at all
//! (adaptive mirroring's prior). The attempt itself — snapshot, twins, gate,
//! success criteria — is run by the runtime (`runtime.rs`).

pub(crate) mod mirroring;
