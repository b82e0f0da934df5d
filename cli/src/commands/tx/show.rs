//! `txmirror tx show`: a transaction's whole story.

use crate::commands::{Target, blocking, json, print};
use crate::exit::Failed;
use crate::render;
use txmirror_runtime::{RecordedTransaction, TxReport};

/// Prints the whole story of a transaction.
#[derive(clap::Args, Debug)]
pub(crate) struct TxShowCommand {
    /// The transaction id.
    id: String,
    /// Prints the durable record as JSON instead of text.
    #[arg(long)]
    json: bool,
}

impl TxShowCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        let Self { id, json: as_json } = self;
        let local = match target {
            Target::Local(local) => local,
            Target::Remote(remote) => return blocking(remote, move |remote| show_remote(remote, &id, as_json)).await,
        };
        let runtime = local.open()?;
        let Some(record) = runtime.transaction(&id)? else {
            return Err(Failed {
                code: 4,
                error: anyhow::anyhow!("no transaction `{id}` in {}", local.data_dir.display()),
            });
        };
        if as_json {
            print(&json(&record)?);
        } else {
            let mut report = TxReport::from_record(record);
            report.deduplicated = false;
            print(&render::report(&report));
        }
        Ok(0)
    }
}

fn show_remote(remote: &crate::remote::Remote, id: &str, as_json: bool) -> Result<u8, Failed> {
    let view = remote.call("GET", &format!("/v1/transactions/{id}"), None, &[])?;
    if as_json {
        print(&json(&view)?);
        return Ok(0);
    }
    match serde_json::from_value::<Option<RecordedTransaction>>(view["record"].clone()) {
        Ok(Some(record)) => print(&render::report(&TxReport::from_record(record))),
        Ok(None) => print(&format!("transaction {id} is pending (accepted, not ended yet)")),
        Err(e) => return Err(Failed { code: 5, error: anyhow::anyhow!("the service's record: {e}") }),
    }
    Ok(0)
}
