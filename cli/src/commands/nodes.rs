//! `txmirror --server … nodes`: the nodes serving one database, and the
//! leases of the tenant's transactions in flight.

use super::{Target, print};
use crate::exit::Failed;
use serde_json::Value;

/// Shows the nodes, their heartbeats, and the tenant's transactions in
/// flight with the node holding each (--server; operator token).
#[derive(clap::Args, Debug)]
pub(crate) struct NodesCommand {
    /// Prints the service's JSON instead of text.
    #[arg(long)]
    json: bool,
}

impl NodesCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        let view = target.remote(|remote| remote.call("GET", "/v1/nodes", None, &[])).await?;
        if self.json {
            print(&serde_json::to_string_pretty(&view).unwrap_or_default());
            return Ok(0);
        }
        print(&render(&view));
        Ok(0)
    }
}

/// The view as text: one line per node, then one per lease.
fn render(view: &Value) -> String {
    let text = |value: &Value| value.as_str().unwrap_or("?").to_string();
    let number = |value: &Value| value.as_u64().unwrap_or(0);
    let this = text(&view["this_node"]);
    let mut out = format!("nodes (lease {} ms):\n", number(&view["lease_ms"]));
    for node in view["nodes"].as_array().into_iter().flatten() {
        let id = text(&node["id"]);
        let marker = if id == this { " (answered)" } else { "" };
        out.push_str(&format!(
            "  {id:<28} {:<10} {:<22} heartbeat {} ms ago{marker}\n",
            text(&node["state"]),
            text(&node["address"]),
            number(&node["heartbeat_age_ms"]),
        ));
    }
    let leases = view["leases"].as_array().map_or(0, Vec::len);
    out.push_str(&format!("transactions in flight: {leases}\n"));
    for lease in view["leases"].as_array().into_iter().flatten().take(SHOWN) {
        out.push_str(&format!(
            "  {:<36} held by {} at epoch {}\n",
            text(&lease["transaction_id"]),
            text(&lease["holder"]),
            number(&lease["epoch"]),
        ));
    }
    if leases > SHOWN {
        out.push_str(&format!("  … and {} more (--json lists them all)\n", leases - SHOWN));
    }
    out.trim_end().to_string()
}

/// How many transactions in flight the text lists.
const SHOWN: usize = 10;
