//! `txmirror dlq drop-all`.

use super::filter::LetterFilterArgs;
use crate::commands::{Target, print};
use crate::exit::Failed;

/// Removes every dead letter the filters select, oldest first, without
/// running them.
#[derive(clap::Args, Debug)]
pub(crate) struct DlqDropAllCommand {
    #[command(flatten)]
    filter: LetterFilterArgs,
    /// At most this many (the service takes at most 500 a call).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Drops every letter when no filter is given (refused without it).
    #[arg(long)]
    all: bool,
}

impl DlqDropAllCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        let filter = self.filter.read(std::time::SystemTime::now())?;
        if filter.filter.selects_everything() && !self.all {
            return Err(Failed::usage("no filter given: pass --all to drop every dead letter (up to --limit)"));
        }
        let dropped: Vec<String> = match target {
            Target::Local(local) => local.open()?.drop_dead_letters(&filter.filter, self.limit)?,
            Target::Remote(remote) => {
                let answer = filter.post(remote, "/v1/dlq/drop", self.limit, &[("all", self.all.into())]).await?;
                answer["dropped"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|id| id.as_str().map(str::to_string))
                    .collect()
            }
        };
        for id in &dropped {
            print(&format!("dropped {id}"));
        }
        print(&format!("{} dropped", dropped.len()));
        Ok(0)
    }
}
