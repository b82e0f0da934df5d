//! One instance of a module and everything it may ask of its host: the
//! engine it runs on, the compiled module, the host capabilities (one file
//! each under `host/`), the limits that stop it, and the executor that runs
//! it once and says how it ended.
//!
//! An instance knows nothing of attempts or transactions: the primary and
//! its mirror are two instances with different roles, set up from one
//! snapshot by the runtime.

pub(crate) mod bindings;
pub mod engine;
pub(crate) mod executor;
pub(crate) mod host;
pub(crate) mod limits;
pub mod module;
