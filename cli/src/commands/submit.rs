//! `txmirror --server … submit`: a transaction through the service.

use super::{RequestArgs, Target, print};
use crate::exit::Failed;
use crate::remote::print_report;

/// Submits a transaction to the service (--server; client token).
#[derive(clap::Args, Debug)]
pub(crate) struct SubmitCommand {
    /// The module's hash.
    module: String,
    #[command(flatten)]
    request: RequestArgs,
    /// Returns once the transaction is durably accepted, with its id.
    #[arg(long = "async")]
    asynchronous: bool,
    /// Prints the report as JSON.
    #[arg(long)]
    json: bool,
}

impl SubmitCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        let input = self.request.input_bytes()?;
        let input: serde_json::Value =
            serde_json::from_slice(&input).map_err(|e| Failed::usage(format!("--input is not JSON: {e}")))?;
        let RequestArgs { path, transaction_id, idempotency_key, profile, .. } = self.request;
        let body =
            serde_json::json!({ "input": input, "path": path, "transaction_id": transaction_id, "profile": profile });
        let bytes = serde_json::to_vec(&body).map_err(|e| Failed { code: 5, error: e.into() })?;
        let (asynchronous, json, uri) =
            (self.asynchronous, self.json, format!("/v1/modules/{}/transactions", self.module));
        target
            .remote(move |remote| {
                let mut headers = Vec::new();
                if let Some(key) = &idempotency_key {
                    headers.push(("idempotency-key", key.as_str()));
                }
                if asynchronous {
                    headers.push(("prefer", "respond-async"));
                }
                let answer = remote.call("POST", &uri, Some(("application/json", bytes)), &headers)?;
                if asynchronous {
                    print(&format!("accepted {}", answer["transaction_id"].as_str().unwrap_or_default()));
                    return Ok(0);
                }
                print_report(answer, json)
            })
            .await
    }
}
