//! `txmirror dlq replay-all`.

use super::filter::LetterFilterArgs;
use crate::commands::{Target, load, print};
use crate::exit::Failed;
use std::path::PathBuf;
use std::sync::Arc;
use txmirror_runtime::Policy;

/// Runs again every dead letter the filters select, oldest first, one after
/// another; a letter that fails again stays, to be replayed again.
#[derive(clap::Args, Debug)]
pub(crate) struct DlqReplayAllCommand {
    #[command(flatten)]
    filter: LetterFilterArgs,
    /// At most this many (the service takes at most 500 a call).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// The module file whose letters to replay; not with --server (the
    /// service knows every module). Locally, only its letters are taken.
    #[arg(value_name = "MODULE")]
    module_file: Option<PathBuf>,
    /// The policy to run them under; not with --server.
    #[arg(long)]
    policy: Option<PathBuf>,
}

/// One letter's line: its id, and what its replay did.
struct Line {
    id: String,
    committed: bool,
    what: String,
}

impl DlqReplayAllCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        let filter = self.filter.read(std::time::SystemTime::now())?;
        let lines = match target {
            Target::Remote(remote) => {
                let answer = filter.post(remote, "/v1/dlq/replay", self.limit, &[]).await?;
                answer["letters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|letter| {
                        let committed = letter["committed"].as_bool().unwrap_or(false);
                        Line {
                            id: letter["transaction_id"].as_str().unwrap_or_default().to_string(),
                            committed,
                            what: match (committed, letter["replay_transaction_id"].as_str()) {
                                (true, Some(replay)) => format!("committed as {replay}"),
                                _ => letter["error"].as_str().unwrap_or("failed").to_string(),
                            },
                        }
                    })
                    .collect::<Vec<_>>()
            }
            Target::Local(local) => {
                let (Some(module), Some(policy)) = (self.module_file, self.policy) else {
                    return Err(Failed::usage("a local replay needs the module and --policy (the service knows both)"));
                };
                let runtime = local.open_with_model()?;
                let policy = Arc::new(Policy::from_file(&policy)?);
                let module = load(&runtime, &module).await?;
                let replayed = runtime.replay_dead_letters(&module, &policy, &filter.filter, self.limit).await?;
                replayed
                    .into_iter()
                    .map(|letter| {
                        let (committed, what) = match letter.result {
                            Ok(report) if report.commit_version().is_some() => {
                                (true, format!("committed as {}", report.transaction_id))
                            }
                            Ok(report) => (
                                false,
                                report
                                    .failure
                                    .map_or_else(|| "failed".into(), |f| format!("{}: {}", f.kind, f.message)),
                            ),
                            Err(error) => (false, error.to_string()),
                        };
                        Line { id: letter.transaction_id, committed, what }
                    })
                    .collect()
            }
        };
        for line in &lines {
            print(&format!("{}  {}", line.id, line.what));
        }
        let committed = lines.iter().filter(|line| line.committed).count();
        print(&format!("{} selected, {committed} committed, {} failed", lines.len(), lines.len() - committed));
        // Like a single replay: not every letter committed is an exit of its own.
        Ok(if committed == lines.len() { 0 } else { 1 })
    }
}
