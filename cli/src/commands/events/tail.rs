//! `txmirror events`: a stream's committed events.

use super::{Target, print};
use crate::exit::Failed;

/// Prints the events of a stream.
#[derive(clap::Args, Debug)]
pub(crate) struct EventsCommand {
    /// The stream.
    stream: String,
    /// Only events after this sequence number.
    #[arg(long, default_value_t = 0)]
    after: u64,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

impl EventsCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        let runtime = target.local()?.open()?;
        for event in runtime.events(&self.stream, self.after, self.limit)? {
            let payload = String::from_utf8_lossy(&event.payload);
            print(&format!("#{} v{} {} {payload}", event.sequence, event.version, event.transaction_id));
        }
        Ok(0)
    }
}
