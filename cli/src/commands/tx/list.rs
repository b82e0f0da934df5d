//! `txmirror --server … tx list`: the service's recent transactions.

use crate::commands::{Target, print};
use crate::exit::Failed;
use serde_json::Value;

/// Lists recent transactions, newest first (--server).
#[derive(clap::Args, Debug)]
pub(crate) struct TxListCommand {
    /// Only `pending`, `committed` or `failed` ones.
    #[arg(long)]
    status: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

impl TxListCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        let mut query = format!("/v1/transactions?limit={}", self.limit);
        if let Some(status) = &self.status {
            query.push_str(&format!("&status={status}"));
        }
        let list = target.remote(move |remote| remote.call("GET", &query, None, &[])).await?;
        for line in list["transactions"].as_array().into_iter().flatten() {
            let decisions: Vec<&str> =
                line["decisions"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            print(&format!(
                "{}  {}  path {}  {} attempts{}{}",
                line["transaction_id"].as_str().unwrap_or_default(),
                line["status"].as_str().unwrap_or_default(),
                line["path"].as_str().unwrap_or("-"),
                line["attempts"],
                line["failure"].as_str().map(|f| format!("  {f}")).unwrap_or_default(),
                if decisions.is_empty() { String::new() } else { format!("  gate: {}", decisions.join(", ")) },
            ));
        }
        Ok(0)
    }
}
