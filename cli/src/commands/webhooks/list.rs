//! `txmirror webhooks list`.

use crate::commands::{Target, print};
use crate::exit::Failed;
use serde_json::Value;

/// Lists the tenant's webhooks.
#[derive(clap::Args, Debug)]
pub(crate) struct ListCommand {
    /// Prints the service's JSON instead of text.
    #[arg(long)]
    json: bool,
}

impl ListCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        let view = target.remote(|remote| remote.call("GET", "/v1/webhooks", None, &[])).await?;
        if self.json {
            print(&serde_json::to_string_pretty(&view).unwrap_or_default());
            return Ok(0);
        }
        for webhook in view.as_array().into_iter().flatten() {
            print(&render(webhook));
        }
        Ok(0)
    }
}

fn render(webhook: &Value) -> String {
    let text = |value: &Value| value.as_str().unwrap_or("?").to_string();
    let number = |value: &Value| value.as_u64().unwrap_or(0);
    let mut out = format!(
        "{} → {}\n  breaker {}, relayed by {}, {} delivered and {} failed attempts on this node, {} dead letters\n",
        text(&webhook["name"]),
        text(&webhook["url"]),
        text(&webhook["breaker"]),
        webhook["relayed_by"].as_str().unwrap_or("no node"),
        number(&webhook["delivered"]),
        number(&webhook["failed_attempts"]),
        number(&webhook["dead_letters"]),
    );
    for stream in webhook["streams"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {}: delivered through #{}\n",
            text(&stream["stream"]),
            number(&stream["delivered_through"])
        ));
    }
    if let Some(error) = webhook["last_error"].as_str() {
        out.push_str(&format!("  last error: {error}\n"));
    }
    out.trim_end().to_string()
}
