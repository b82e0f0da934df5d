//! `txmirror dlq drop-all`.

use super::filter::LetterFilterArgs;
use crate::commands::{Target, blocking, print};
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
                let mut body = filter.fields();
                body.insert("limit".into(), self.limit.into());
                body.insert("all".into(), self.all.into());
                let body = serde_json::to_vec(&body).map_err(|e| Failed { code: 2, error: e.into() })?;
                let answer = blocking(remote, move |remote| {
                    remote.call("POST", "/v1/dlq/drop", Some(("application/json", body)), &[])
                })
                .await?;
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
