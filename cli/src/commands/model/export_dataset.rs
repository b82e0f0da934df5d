//! `txmirror model export-dataset`: labelled examples from the store.

use crate::commands::Target;
use crate::exit::Failed;
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use txmirror_runtime::{Runtime, dataset};

/// Writes every scored attempt in the store as a labelled example.
#[derive(clap::Args, Debug)]
pub(crate) struct ExportDatasetCommand {
    /// The file to write; `-` for standard output.
    #[arg(long)]
    out: PathBuf,
}

impl ExportDatasetCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        let runtime = target.local()?.open()?;
        let count = export(&runtime, &self.out)?;
        eprintln!("wrote {count} examples to {}", self.out.display());
        Ok(0)
    }
}

/// Writes the dataset of every transaction in the store, page by page.
fn export(runtime: &Runtime, out: &Path) -> anyhow::Result<usize> {
    let mut examples = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = runtime.transactions(after.as_deref(), 1_000)?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        examples.extend(page.iter().flat_map(dataset::examples));
    }
    let count = if out == Path::new("-") {
        dataset::write_csv(std::io::stdout().lock(), examples)?
    } else {
        let file = std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
        dataset::write_csv(std::io::BufWriter::new(file), examples)?
    };
    Ok(count)
}
