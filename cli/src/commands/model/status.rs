//! `txmirror model status`.

use crate::commands::{Target, json, print};
use crate::exit::Failed;

/// What the runtime has learnt of its deployment: the online model's
/// weights and calibration, and per endpoint and path what it knows. On a
/// local store, as last saved; with `--server`, the service's model, why
/// its file last failed to load, and the tenant's live state.
#[derive(clap::Args, Debug)]
pub(crate) struct StatusCommand {}

impl StatusCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        let status = match target {
            Target::Local(local) => {
                let runtime = local.open()?;
                let learnt = runtime.saved_learnt().map_err(anyhow::Error::new)?;
                serde_json::json!({ "learnt": learnt })
            }
            remote @ Target::Remote(_) => remote.remote(|remote| remote.call("GET", "/v1/model", None, &[])).await?,
        };
        print(&json(&status)?);
        Ok(0)
    }
}
