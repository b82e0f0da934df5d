//! The txmirror transaction runtime.
//!
//! A transaction runs a path of a Wasm component from one snapshot as the
//! *primary*, whose effects are committed, and, unless adaptive mirroring
//! finds it needless (`[mirror] mode = "adaptive"`), as a *mirror*: a
//! read-only twin whose effects are withheld and whose host calls are
//! traced. See `docs/ARCHITECTURE.md` for the parts and their invariants.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use txmirror_runtime::{Policy, Runtime, RuntimeConfig, TxRequest};
//!
//! let runtime = Runtime::open(RuntimeConfig::new("./data"))?;
//! let module = runtime.load_module(&std::fs::read("bank_transfer.wasm")?).await?;
//! let policy = Arc::new(Policy::from_file("bank.toml".as_ref())?);
//! let report = runtime
//!     .execute(&module, &policy, TxRequest { input: br#"{"account":"a","amount":5}"#.to_vec(), path: Some("deposit".into()), ..Default::default() })
//!     .await?;
//! println!("committed at {:?}", report.commit_version());
//! # Ok(()) }
//! ```

// The folders follow a transaction's flow: the words (`vocab`), one
// instance (`instance`), what happens before an attempt (`attempt`), the
// predictor (`predict`), the adjustments it drives (`adjust`), the
// transaction across attempts (`transaction`), and storage (`store`).
mod adjust;
mod attempt;
pub mod clock;
mod contention;
pub mod dataset;
mod instance;
pub mod policy;
pub mod predict;
mod randomness;
mod runtime;
pub mod store;
pub mod trace;
mod transaction;
pub mod vocab;

pub use adjust::breaker::{Breaker, BreakerRule, BreakerState};
pub use adjust::breakers::BreakerView;
pub use instance::engine::{EngineError, EngineSettings, tuned_config};
pub use instance::host::effect_key;
pub use instance::module::{Module, ModuleError};
pub use policy::{Policy, PolicyError};
pub use randomness::Randomness;
pub use runtime::{ExecuteError, ModelConfig, ReplayError, ReplayedLetter, Runtime, RuntimeConfig, StartError};
pub use runtime::{KeyClaim, KeyState, Progress, scoped_key};
pub use trace::Trace;
pub use transaction::split_report::{ArmReport, Estimate, SplitReport};
pub use transaction::{
    AttemptReport, DeadLetterFilter, DeadLetterReport, DryRun, HedgeStart, HedgeTrigger, KEPT_NOTICES, NoticeKind,
    PredictionNotice, PredictionStats, RecordedTransaction, TxReport, TxRequest,
};
pub use vocab::{Action, CancelToken, Failure, FailureKind, GateStage, GateVerdict, Role};
