//! `txmirror --server … webhooks`: the webhook relay of a running service
//! (operator token): each webhook's progress and breaker, the events it
//! could not deliver, and their replay.

mod dead_letters;
mod list;
mod replay;

use super::Target;
use crate::exit::Failed;

/// The webhook relay (--server; operator token).
#[derive(clap::Subcommand, Debug)]
pub(crate) enum WebhooksCommand {
    /// Lists the webhooks: where they deliver, how far each stream has
    /// come, the breaker, the relaying node and the dead letters.
    List(list::ListCommand),
    /// Lists the events a webhook could not deliver.
    DeadLetters(dead_letters::DeadLettersCommand),
    /// Sends a webhook's dead letters once more; those delivered go.
    Replay(replay::ReplayCommand),
}

impl WebhooksCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        match self {
            Self::List(command) => command.execute(target).await,
            Self::DeadLetters(command) => command.execute(target).await,
            Self::Replay(command) => command.execute(target).await,
        }
    }
}

/// A dead letter as the commands print it.
fn letter_line(letter: &serde_json::Value) -> String {
    format!(
        "{} #{} {}  {} attempts, last: {}",
        letter["stream"].as_str().unwrap_or("?"),
        letter["offset"].as_u64().unwrap_or(0),
        letter["id"].as_str().unwrap_or("?"),
        letter["attempts"].as_u64().unwrap_or(0),
        letter["last_error"].as_str().unwrap_or("?"),
    )
}
