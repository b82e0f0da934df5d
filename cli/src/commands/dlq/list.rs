//! `txmirror dlq list`.

use super::filter::LetterFilterArgs;
use crate::commands::{Target, blocking, print};
use crate::exit::Failed;

/// Lists dead letters, oldest first.
#[derive(clap::Args, Debug)]
pub(crate) struct DlqListCommand {
    #[command(flatten)]
    filter: LetterFilterArgs,
    /// At most this many (the service lists at most 500).
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

impl DlqListCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        let filter = self.filter.read(std::time::SystemTime::now())?;
        let lines: Vec<String> = match target {
            Target::Local(local) => local
                .open()?
                .dead_letters_matching(&filter.filter, self.limit)?
                .iter()
                .map(|letter| {
                    line(
                        &letter.transaction_id,
                        &letter.path,
                        letter.attempts.len(),
                        letter.failure.kind.as_str(),
                        &letter.failure.message,
                    )
                })
                .collect(),
            Target::Remote(remote) => {
                let path = format!("/v1/dlq?{}", filter.query(self.limit)?);
                let letters = blocking(remote, move |remote| remote.call("GET", &path, None, &[])).await?;
                letters
                    .as_array()
                    .into_iter()
                    .flatten()
                    .take(self.limit)
                    .map(|letter| {
                        line(
                            letter["transaction_id"].as_str().unwrap_or_default(),
                            letter["path"].as_str().unwrap_or_default(),
                            letter["attempts"].as_u64().and_then(|n| usize::try_from(n).ok()).unwrap_or_default(),
                            letter["failure"]["kind"].as_str().unwrap_or_default(),
                            letter["failure"]["message"].as_str().unwrap_or_default(),
                        )
                    })
                    .collect()
            }
        };
        for line in lines {
            print(&line);
        }
        Ok(0)
    }
}

fn line(id: &str, path: &str, attempts: usize, kind: &str, message: &str) -> String {
    format!("{id}  path {path}  {attempts} attempts  {kind}: {message}")
}
