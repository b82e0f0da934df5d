//! `txmirror inspect`: what a module is.

use super::{Target, load, print};
use crate::exit::Failed;
use std::path::PathBuf;

/// Loads a module and prints its hash and paths.
#[derive(clap::Args, Debug)]
pub(crate) struct InspectCommand {
    /// The module.
    module: PathBuf,
}

impl InspectCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        let runtime = target.local()?.open()?;
        let module = load(&runtime, &self.module).await?;
        print(&format!(
            "module {}\npaths: {}\npre-initialised: {}",
            module.hash(),
            module.paths().join(", "),
            if module.is_preinitialized() { "yes" } else { "no" }
        ));
        Ok(0)
    }
}
