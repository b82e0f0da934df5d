//! How the runtime adjusts a primary before it fails: the effect gate
//! (before each unsafe call and before the commit), the hedge race, fuel
//! and memory grants, raised timeouts, and the circuit breakers that stop
//! calls to a failing host. Each acts on a prediction of the mirror's trace
//! or on what the host did; none of them sends or commits anything itself.

pub(crate) mod breaker;
pub(crate) mod breakers;
pub(crate) mod gate;
pub(crate) mod grants;
pub(crate) mod hedge;
pub(crate) mod timeouts;
