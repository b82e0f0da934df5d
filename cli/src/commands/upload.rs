//! `txmirror --server … upload`: a module to the service.

use super::{Target, print};
use crate::exit::Failed;
use serde_json::Value;
use std::path::PathBuf;

/// Uploads a module to the service (--server; developer token).
#[derive(clap::Args, Debug)]
pub(crate) struct UploadCommand {
    /// The module.
    module: PathBuf,
}

impl UploadCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        let bytes = std::fs::read(&self.module)
            .map_err(|e| Failed { code: 3, error: anyhow::anyhow!("cannot read {}: {e}", self.module.display()) })?;
        let info = target
            .remote(move |remote| remote.call("POST", "/v1/modules", Some(("application/wasm", bytes)), &[]))
            .await?;
        let paths: Vec<&str> = info["paths"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        print(&format!("module {}\npaths: {}", info["hash"].as_str().unwrap_or_default(), paths.join(", ")));
        Ok(0)
    }
}
