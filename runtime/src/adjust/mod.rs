//! How the runtime adjusts a primary before it fails: the effect gate
//! (before each unsafe call and before the commit), the hedge race, fuel
//! and memory grants, and raised timeouts. Each acts on a prediction of the
//! mirror's trace; none of them sends or commits anything itself.

pub(crate) mod gate;
pub(crate) mod grants;
pub(crate) mod hedge;
pub(crate) mod timeouts;
