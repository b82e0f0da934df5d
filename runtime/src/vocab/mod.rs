//! The runtime's leaf vocabulary: the words every other part speaks —
//! failure kinds, twins, actions, gate verdicts, names, hosts — as typed values,
//! in memory and on disk.
//!
//! **Architecture invariant:** nothing here imports anything of the crate
//! (`tests/layering.rs` fails otherwise), so that storage and every stage
//! of the pipeline can use these words without depending on each other.

mod action;
mod cancel;
mod failure;
mod hosts;
mod name;
mod role;
mod verdict;

pub use action::Action;
pub use cancel::CancelToken;
pub use failure::{Failure, FailureKind};
pub(crate) use hosts::{HostGrant, HostPort, endpoint_name};
pub use name::{MAX_NAME_LEN, RESERVED_STREAM_PREFIX, STATUS_STREAM, validate_name};
pub use role::Role;
pub use verdict::{GateStage, GateVerdict};
