//! `txmirror token`: tokens for the service.

mod new;

use super::Target;
use crate::exit::Failed;

/// Tokens for the service.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum TokenCommand {
    /// Makes a token: prints it once on standard error, and on standard
    /// output the `[[tokens]]` entry (with only its SHA-256) to append to
    /// the service's configuration.
    New(new::TokenNewCommand),
}

impl TokenCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        match self {
            Self::New(command) => command.execute(target).await,
        }
    }
}
