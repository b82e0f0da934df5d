//! `txmirror events tail`.

use super::line;
use crate::commands::{Target, blocking, print};
use crate::exit::Failed;
use crate::remote::Remote;
use std::time::Duration;

/// How long a follow waits for new events per round: a long poll on a
/// service, a pause between reads of a local store.
const FOLLOW_WAIT: Duration = Duration::from_secs(10);
const LOCAL_PAUSE: Duration = Duration::from_millis(200);

/// Prints a stream's events.
#[derive(clap::Args, Debug)]
pub(crate) struct TailCommand {
    /// The stream.
    stream: String,
    /// Only events after this offset (default: the group's acknowledged
    /// offset with --group, else the stream's start).
    #[arg(long)]
    after: Option<u64>,
    /// At most this many per read.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Keeps printing the events that commit after, until interrupted (or
    /// until --count events).
    #[arg(long)]
    follow: bool,
    /// Stops after this many events.
    #[arg(long)]
    count: Option<u64>,
    /// Reads as this consumer group, from its acknowledged offset, and
    /// acknowledges each event once it is printed (at least once: an event
    /// printed and not yet acknowledged when interrupted comes again).
    #[arg(long)]
    group: Option<String>,
}

impl TailCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        if !(1..=500).contains(&self.limit) {
            return Err(Failed::usage("--limit must be from 1 to 500"));
        }
        if self.group.as_deref().is_some_and(|group| txmirror_runtime::vocab::validate_name(group).is_err()) {
            return Err(Failed::usage("--group must be a name of 1 to 512 bytes without NUL"));
        }
        match target {
            Target::Local(local) => {
                let runtime = local.open()?;
                let mut after = match (&self.group, self.after) {
                    (_, Some(after)) => after,
                    (Some(group), None) => runtime.group_offset(&self.stream, group)?,
                    (None, None) => 0,
                };
                let mut printed = 0;
                loop {
                    let events = runtime.events(&self.stream, after, self.limit)?;
                    for event in &events {
                        print(&line(
                            event.sequence,
                            event.version,
                            &event.transaction_id,
                            &String::from_utf8_lossy(&event.payload),
                        ));
                        after = event.sequence;
                        if let Some(group) = &self.group {
                            runtime.acknowledge(&self.stream, group, after)?;
                        }
                        printed += 1;
                        if self.count.is_some_and(|count| printed >= count) {
                            return Ok(0);
                        }
                    }
                    if events.is_empty() {
                        if !self.follow {
                            return Ok(0);
                        }
                        tokio::time::sleep(LOCAL_PAUSE).await;
                    }
                }
            }
            Target::Remote(remote) => blocking(remote, move |remote| self.remote(remote)).await,
        }
    }

    fn remote(&self, remote: &Remote) -> Result<u8, Failed> {
        let mut after = self.after;
        let mut printed = 0;
        loop {
            let mut query = format!("limit={}", self.limit);
            if let Some(after) = after {
                query.push_str(&format!("&after={after}"));
            }
            if let Some(group) = &self.group {
                query.push_str(&format!("&group={group}"));
            }
            if self.follow {
                query.push_str(&format!("&wait_ms={}", FOLLOW_WAIT.as_millis()));
            }
            let page = remote.call("GET", &format!("/v1/streams/{}/events?{query}", self.stream), None, &[])?;
            let events = page["events"].as_array().cloned().unwrap_or_default();
            for event in &events {
                let offset = event["offset"].as_u64().unwrap_or_default();
                let payload = match &event["payload"] {
                    serde_json::Value::Null => event["payload_text"].as_str().unwrap_or_default().to_string(),
                    json => json.to_string(),
                };
                let (version, id) = (
                    event["version"].as_u64().unwrap_or_default(),
                    event["transaction_id"].as_str().unwrap_or_default(),
                );
                print(&line(offset, version, id, &payload));
                if let Some(group) = &self.group {
                    let body = serde_json::json!({ "offset": offset }).to_string().into_bytes();
                    let path = format!("/v1/streams/{}/groups/{group}/ack", self.stream);
                    remote.call("POST", &path, Some(("application/json", body)), &[])?;
                }
                after = Some(offset);
                printed += 1;
                if self.count.is_some_and(|count| printed >= count) {
                    return Ok(0);
                }
            }
            if events.is_empty() && !self.follow {
                return Ok(0);
            }
        }
    }
}
