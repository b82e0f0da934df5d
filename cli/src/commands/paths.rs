//! `txmirror paths`: how a module's paths fare.

mod report;

use super::Target;
use crate::exit::Failed;

/// How a module's paths fare.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum PathsCommand {
    /// Compares the arms of the module's A/B split (`[split]` in its
    /// policy): success rate, latency and cost, with 95% confidence
    /// intervals.
    Report(report::PathsReportCommand),
}

impl PathsCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        match self {
            Self::Report(command) => command.execute(target).await,
        }
    }
}
