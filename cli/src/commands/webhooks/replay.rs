//! `txmirror webhooks replay`.

use crate::commands::{Target, print};
use crate::exit::Failed;

/// Sends each of a webhook's dead letters once more (up to 1,000);
/// those delivered are removed, the others stay. Exits 1 if any failed.
#[derive(clap::Args, Debug)]
pub(crate) struct ReplayCommand {
    /// The webhook.
    name: String,
}

impl ReplayCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        let path = format!("/v1/webhooks/{}/dead-letters/replay", self.name);
        let report = target.remote(move |remote| remote.call("POST", &path, None, &[])).await?;
        let failed = report["failed"].as_array().cloned().unwrap_or_default();
        print(&format!("{} delivered, {} failed again", report["delivered"].as_u64().unwrap_or(0), failed.len()));
        for letter in &failed {
            print(&format!("  {}", super::letter_line(letter)));
        }
        Ok(u8::from(!failed.is_empty()))
    }
}
