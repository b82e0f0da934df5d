//! `txmirror tx`: recorded transactions.

mod list;
mod show;

use super::Target;
use crate::exit::Failed;

/// Transactions recorded in the store.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum TxCommand {
    /// Prints the whole story of a transaction: attempts, paths, traces,
    /// predictions, gate decisions and outcome.
    Show(show::TxShowCommand),
    /// Lists recent transactions, newest first (--server).
    List(list::TxListCommand),
}

impl TxCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        match self {
            Self::Show(command) => command.execute(target).await,
            Self::List(command) => command.execute(target).await,
        }
    }
}
