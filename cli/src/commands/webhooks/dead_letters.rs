//! `txmirror webhooks dead-letters`.

use crate::commands::{Target, print};
use crate::exit::Failed;

/// Lists the events a webhook could not deliver, by stream and offset.
#[derive(clap::Args, Debug)]
pub(crate) struct DeadLettersCommand {
    /// The webhook.
    name: String,
    /// At most this many (1 to 1,000).
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

impl DeadLettersCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        let path = format!("/v1/webhooks/{}/dead-letters?limit={}", self.name, self.limit);
        let letters = target.remote(move |remote| remote.call("GET", &path, None, &[])).await?;
        let letters = letters.as_array().cloned().unwrap_or_default();
        if letters.is_empty() {
            print(&format!("webhook {} has no dead letters", self.name));
        }
        for letter in &letters {
            print(&super::letter_line(letter));
        }
        Ok(0)
    }
}
