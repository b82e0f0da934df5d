//! `txmirror paths report`: the arms of a module's split, compared.

use crate::commands::{Target, blocking, json, print};
use crate::exit::Failed;
use anyhow::Context as _;
use std::path::PathBuf;
use txmirror_runtime::{Estimate, Policy, SplitReport};

/// Compares the arms of a module's A/B split.
#[derive(clap::Args, Debug)]
pub(crate) struct PathsReportCommand {
    /// The module (its content hash).
    module: String,
    /// The policy whose paths price the attempts (`[paths.NAME] cost`);
    /// locally only: a service uses the module's own.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// At most this many transaction records to look through.
    #[arg(long, default_value_t = 10_000)]
    scan: usize,
    /// Prints the report as JSON.
    #[arg(long)]
    json: bool,
}

impl PathsReportCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        let Self { module, policy, scan, json: as_json } = self;
        let report: SplitReport = match target {
            Target::Remote(remote) => {
                if policy.is_some() {
                    return Err(Failed::usage("--policy is for a local store: a service prices with the module's own"));
                }
                let path = format!("/v1/modules/{module}/paths/report?scan={scan}");
                let value = blocking(remote, move |remote| remote.call("GET", &path, None, &[])).await?;
                serde_json::from_value(value).context("the service's report")?
            }
            Target::Local(local) => {
                let policy = match &policy {
                    Some(path) => Policy::from_file(path)?,
                    None => Policy::default(),
                };
                local.open()?.split_report(&module, &policy, scan)?
            }
        };
        if as_json {
            print(&json(&report)?);
        } else {
            print(&render(&report));
        }
        Ok(0)
    }
}

fn estimate(estimate: &Estimate, digits: usize) -> String {
    format!("{:.digits$} [{:.digits$}, {:.digits$}]", estimate.value, estimate.low, estimate.high)
}

/// One line per arm.
fn render(report: &SplitReport) -> String {
    if report.arms.is_empty() {
        return format!(
            "no transaction of module {} ran on a split's arm among the {} records looked at",
            report.module, report.scanned
        );
    }
    let mut text = format!("module {} ({} records looked at; 95% intervals)\n", report.module, report.scanned);
    for arm in &report.arms {
        text.push_str(&format!(
            "{:<16} {:>6} tx  success {}  latency ms {} (p50 {:.1}, p95 {:.1})  cost {}  {:.2} attempts/tx\n",
            arm.arm,
            arm.transactions,
            estimate(&arm.success_rate, 3),
            estimate(&arm.latency_ms, 1),
            arm.latency_p50_ms,
            arm.latency_p95_ms,
            arm.cost.as_ref().map_or_else(|| "-".to_string(), |cost| estimate(cost, 3)),
            arm.attempts_per_transaction,
        ));
    }
    text.trim_end().to_string()
}
