//! `txmirror workload`: the seeded fault workload (see `crate::workload`).

use super::{Target, print};
use crate::exit::Failed;
use crate::workload::{self, Mode, Options, Shape};
use anyhow::Context as _;
use std::path::PathBuf;

/// Drives the example modules through the runtime against local gateways
/// with injected faults (see docs/learning.md).
#[derive(clap::Args, Debug)]
pub(crate) struct WorkloadCommand {
    /// `faults`: the workload the shipped model is trained on; `shop`: one
    /// of another shape, for judging the predictor on what it never saw.
    #[arg(long, value_enum, default_value = "faults")]
    shape: Shape,
    /// The seed: one seed, one workload.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How many transactions.
    #[arg(long, default_value_t = 500)]
    size: usize,
    /// `observe`: predictions recorded, no action taken; `act`: the
    /// predictor acts; `adaptive`: it acts, with a mirror only where the
    /// prior is uncertain; `retry-only`: no mirror at all.
    #[arg(long, value_enum, default_value = "observe")]
    mode: Mode,
    /// Where the example modules were built.
    #[arg(long, default_value = "target/wasm32-wasip2/release")]
    modules: PathBuf,
    /// Transactions in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Stops starting transactions after this many seconds.
    #[arg(long, default_value_t = 600)]
    time_limit_secs: u64,
    /// In `act` and `adaptive` modes, the share of attempts left unadjusted for honest labels.
    #[arg(long, default_value_t = 0.05)]
    exploration_share: f32,
    /// Whether the payment policy opens a gateway's circuit breaker after
    /// three failures in a row (`true` or `false`; by default on for
    /// `faults`, off for `shop`).
    #[arg(long)]
    breakers: Option<bool>,
    /// Charges name no path and the policy describes its paths' latency,
    /// cost and reliability: each charge tries them in the order its
    /// profile prefers (without it, the primary gateway first).
    #[arg(long)]
    path_choice: bool,
    /// Also writes the summary and every outcome as JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
}

impl WorkloadCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        let runtime = target.local()?.open_with_model()?;
        let options = Options {
            shape: self.shape,
            seed: self.seed,
            size: self.size,
            mode: self.mode,
            modules: self.modules,
            concurrency: self.concurrency,
            time_limit: std::time::Duration::from_secs(self.time_limit_secs),
            exploration_share: self.exploration_share,
            breakers: self.breakers.unwrap_or(self.shape == Shape::Faults),
            path_choice: self.path_choice,
        };
        let summary = workload::run(&runtime, &options).await?;
        print(&summary.text());
        if let Some(report) = self.report {
            std::fs::write(&report, serde_json::to_string_pretty(&summary)?)
                .with_context(|| format!("cannot write {}", report.display()))?;
        }
        Ok(0)
    }
}
