//! `txmirror tls`: certificates for the service's HTTPS.

mod self_signed;

use super::Target;
use crate::exit::Failed;

/// Certificates for the service's HTTPS (`[server.tls]`).
#[derive(clap::Subcommand, Debug)]
pub(crate) enum TlsCommand {
    /// Makes a self-signed certificate and its key (PEM) for the names
    /// given, for a demo, a test or a first deployment; clients trust it
    /// with `--ca-file CERT`.
    SelfSigned(self_signed::SelfSignedCommand),
}

impl TlsCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        match self {
            Self::SelfSigned(command) => command.execute(target).await,
        }
    }
}
