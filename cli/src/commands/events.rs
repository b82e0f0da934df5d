//! `txmirror events`: a stream's committed events, and its consumer groups.

mod groups;
mod tail;

use super::Target;
use crate::exit::Failed;

/// A stream's committed events, and its consumer groups.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum EventsCommand {
    /// Prints a stream's events from an offset (or a consumer group's
    /// acknowledged one), and with --follow those that commit after.
    Tail(tail::TailCommand),
    /// Lists a stream's consumer groups and their acknowledged offsets.
    Groups(groups::GroupsCommand),
}

impl EventsCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        match self {
            Self::Tail(command) => command.execute(target).await,
            Self::Groups(command) => command.execute(target).await,
        }
    }
}

/// An event as the commands print it: offset, commit version, transaction, payload.
fn line(offset: u64, version: u64, transaction_id: &str, payload: &str) -> String {
    format!("#{offset} v{version} {transaction_id} {payload}")
}
