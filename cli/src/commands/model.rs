//! `txmirror model`: the learning loop's datasets, and the model.

mod evaluate;
mod export_dataset;
mod reload;
mod status;

use super::Target;
use crate::exit::Failed;

/// The learning loop: datasets of labelled attempts, and the model.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum ModelCommand {
    /// Writes every scored attempt in the store as a labelled example
    /// (CSV with a format line; see docs/learning.md).
    ExportDataset(export_dataset::ExportDatasetCommand),
    /// What was learnt of the deployment (the online model, endpoints and
    /// paths); with --server, also the service's model and its reload error.
    Status(status::StatusCommand),
    /// Makes the service load its model file again now (--server).
    Reload(reload::ReloadCommand),
    /// Scores a dataset's labelled examples with the model (`--model`) and
    /// prints the numbers of its model card, beside the rules alone.
    Evaluate(evaluate::EvaluateCommand),
}

impl ModelCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        match self {
            Self::ExportDataset(command) => command.execute(target).await,
            Self::Status(command) => command.execute(target).await,
            Self::Reload(command) => command.execute(target).await,
            Self::Evaluate(command) => command.execute(target).await,
        }
    }
}
