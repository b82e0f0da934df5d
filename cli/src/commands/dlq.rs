//! `txmirror dlq`: the dead-letter queue.

mod drop_letter;
mod drop_matching;
mod filter;
mod list;
mod replay;
mod replay_matching;
mod show;

use super::Target;
use crate::exit::Failed;
use std::path::Path;

/// The dead-letter queue: transactions that failed on every path.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum DlqCommand {
    /// Lists dead letters, oldest first.
    List(list::DlqListCommand),
    /// Prints a dead letter with its whole history.
    Show(show::DlqShowCommand),
    /// Runs a dead letter again (once); removes it if it commits.
    Replay(replay::DlqReplayCommand),
    /// Removes a dead letter without running it.
    Drop(drop_letter::DlqDropCommand),
    /// Runs again every dead letter the filters select, oldest first.
    ReplayAll(replay_matching::DlqReplayAllCommand),
    /// Removes every dead letter the filters select, without running them.
    DropAll(drop_matching::DlqDropAllCommand),
}

impl DlqCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        match self {
            Self::List(command) => command.execute(target).await,
            Self::Show(command) => command.execute(target).await,
            Self::Replay(command) => command.execute(target).await,
            Self::Drop(command) => command.execute(target).await,
            Self::ReplayAll(command) => command.execute(target).await,
            Self::DropAll(command) => command.execute(target).await,
        }
    }
}

/// The error for a letter that is not in the local store.
fn missing(id: &str, data_dir: &Path) -> Failed {
    Failed { code: 4, error: anyhow::anyhow!("no dead letter `{id}` in {}", data_dir.display()) }
}
