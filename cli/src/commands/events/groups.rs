//! `txmirror events groups`.

use crate::commands::{Target, blocking, print};
use crate::exit::Failed;

/// Lists a stream's consumer groups.
#[derive(clap::Args, Debug)]
pub(crate) struct GroupsCommand {
    /// The stream.
    stream: String,
}

impl GroupsCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        let groups: Vec<(String, u64)> = match target {
            Target::Local(local) => local.open()?.consumer_groups(&self.stream)?,
            Target::Remote(remote) => {
                let path = format!("/v1/streams/{}/groups", self.stream);
                let listed = blocking(remote, move |remote| remote.call("GET", &path, None, &[])).await?;
                listed
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|g| {
                        (g["group"].as_str().unwrap_or_default().to_string(), g["offset"].as_u64().unwrap_or_default())
                    })
                    .collect()
            }
        };
        for (group, offset) in groups {
            print(&format!("{group}  acknowledged through #{offset}"));
        }
        Ok(0)
    }
}
