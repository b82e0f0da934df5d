//! Streams in the embedded store: a per-stream index over the global event
//! log, and the committed offsets of consumer groups.
//!
//! Tables, added within format 2 (a store opened before they existed gets
//! them when next opened, the index built from the log then):
//! - `stream_events`: `(stream, sequence)` → nothing: reading a stream from
//!   an offset walks its own entries only, in time proportional to what is
//!   read, not to the whole log;
//! - `consumer_offsets`: `stream NUL group` → the last sequence the group
//!   acknowledged;
//! - `event_times`: sequence → when its commit was applied (ms since the
//!   Unix epoch), for retention by age (events written before it existed
//!   have none, and count as the oldest);
//! - `meta`: `"stream_index_through"`, the last sequence of the log that the
//!   index covers. Opening catches the index up from there, so a store
//!   written meanwhile by a build without the index is indexed again.

use super::super::codec::decode;
use super::super::{StoreError, StoredEvent, StreamRetention};
use super::{EVENTS, META, storage};
use redb::{ReadableTable, TableDefinition};

pub(super) const STREAM_EVENTS: TableDefinition<'_, (&str, u64), ()> = TableDefinition::new("stream_events");
pub(super) const CONSUMER_OFFSETS: TableDefinition<'_, &str, u64> = TableDefinition::new("consumer_offsets");
pub(super) const EVENT_TIMES: TableDefinition<'_, u64, u64> = TableDefinition::new("event_times");
const INDEX_THROUGH_KEY: &str = "stream_index_through";

fn offset_key(stream: &str, group: &str) -> String {
    format!("{stream}\0{group}")
}

/// Indexes the events of the log past what the index covers; how many.
pub(super) fn catch_up(txn: &redb::WriteTransaction) -> Result<u64, StoreError> {
    let mut meta = txn.open_table(META).map_err(storage)?;
    let through = meta.get(INDEX_THROUGH_KEY).map_err(storage)?.map_or(0, |v| v.value());
    let events = txn.open_table(EVENTS).map_err(storage)?;
    let mut index = txn.open_table(STREAM_EVENTS).map_err(storage)?;
    let (mut last, mut indexed) = (through, 0);
    for item in events.range(through.saturating_add(1)..).map_err(storage)? {
        let (sequence, bytes) = item.map_err(storage)?;
        let event: StoredEvent = decode(|| format!("event {}", sequence.value()), bytes.value())?;
        index.insert((event.stream.as_str(), sequence.value()), ()).map_err(storage)?;
        (last, indexed) = (sequence.value(), indexed + 1);
    }
    if last != through {
        meta.insert(INDEX_THROUGH_KEY, last).map_err(storage)?;
    }
    Ok(indexed)
}

/// Indexes the events a commit appends (their stream and sequence), with
/// the commit's time.
pub(super) fn index<'a>(
    txn: &redb::WriteTransaction,
    meta: &mut redb::Table<'_, &str, u64>,
    appended: impl IntoIterator<Item = (&'a str, u64)>,
    now_unix_ms: u64,
) -> Result<(), StoreError> {
    let mut index = txn.open_table(STREAM_EVENTS).map_err(storage)?;
    let mut times = txn.open_table(EVENT_TIMES).map_err(storage)?;
    let mut last = None;
    for (stream, sequence) in appended {
        index.insert((stream, sequence), ()).map_err(storage)?;
        times.insert(sequence, now_unix_ms).map_err(storage)?;
        last = Some(sequence);
    }
    if let Some(last) = last {
        meta.insert(INDEX_THROUGH_KEY, last).map_err(storage)?;
    }
    Ok(())
}

/// Removes up to `limit` of the oldest events of `stream` that
/// `retention` lets go, stopping at the first it keeps; how many.
pub(super) fn purge(
    txn: &redb::WriteTransaction,
    stream: &str,
    retention: &StreamRetention,
    limit: usize,
) -> Result<usize, StoreError> {
    if !retention.limits_anything() {
        return Ok(0);
    }
    // The groups' floor: nothing past the least acknowledged offset goes.
    let floor = if retention.keep_unacknowledged {
        let offsets = txn.open_table(CONSUMER_OFFSETS).map_err(storage)?;
        let prefix = format!("{stream}\0");
        let mut least: Option<u64> = None;
        for item in offsets.range(prefix.as_str()..).map_err(storage)? {
            let (key, offset) = item.map_err(storage)?;
            if !key.value().starts_with(prefix.as_str()) {
                break;
            }
            least = Some(least.map_or(offset.value(), |l| l.min(offset.value())));
        }
        least
    } else {
        None
    };
    let mut index = txn.open_table(STREAM_EVENTS).map_err(storage)?;
    // The first of the newest `keep_last`: everything before it may go.
    let kept_from = match retention.keep_last {
        None => 0,
        Some(0) => u64::MAX,
        Some(n) => {
            let mut newest = index.range((stream, 0)..=(stream, u64::MAX)).map_err(storage)?.rev();
            let nth = newest.nth(usize::try_from(n - 1).unwrap_or(usize::MAX));
            match nth {
                Some(item) => item.map_err(storage)?.0.value().1,
                None => 0,
            }
        }
    };
    let mut events = txn.open_table(EVENTS).map_err(storage)?;
    let mut times = txn.open_table(EVENT_TIMES).map_err(storage)?;
    let mut doomed = Vec::new();
    for item in index.range((stream, 0)..=(stream, u64::MAX)).map_err(storage)?.take(limit) {
        let sequence = item.map_err(storage)?.0.value().1;
        let committed = times.get(sequence).map_err(storage)?.map_or(0, |t| t.value());
        let old = retention.committed_before_unix_ms.is_some_and(|before| committed < before);
        let acknowledged = floor.is_none_or(|floor| sequence <= floor) || !retention.keep_unacknowledged;
        if !((old || sequence < kept_from) && acknowledged) {
            break;
        }
        doomed.push(sequence);
    }
    for sequence in &doomed {
        index.remove((stream, *sequence)).map_err(storage)?;
        events.remove(*sequence).map_err(storage)?;
        times.remove(*sequence).map_err(storage)?;
    }
    Ok(doomed.len())
}

/// Events of `stream` after `after`, at most `limit`, through the index.
pub(super) fn read(
    txn: &redb::ReadTransaction,
    stream: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let index = txn.open_table(STREAM_EVENTS).map_err(storage)?;
    let events = txn.open_table(EVENTS).map_err(storage)?;
    let mut found = Vec::new();
    for item in index.range((stream, after.saturating_add(1))..=(stream, u64::MAX)).map_err(storage)?.take(limit) {
        let (key, _) = item.map_err(storage)?;
        let sequence = key.value().1;
        let bytes = events.get(sequence).map_err(storage)?.ok_or_else(|| StoreError::Corrupt {
            what: format!("event {sequence}"),
            reason: "the stream index names an event the log does not hold".into(),
        })?;
        found.push(decode(|| format!("event {sequence}"), bytes.value())?);
    }
    Ok(found)
}

/// The offset `group` acknowledged on `stream`, if any.
pub(super) fn group_offset(txn: &redb::ReadTransaction, stream: &str, group: &str) -> Result<Option<u64>, StoreError> {
    let table = txn.open_table(CONSUMER_OFFSETS).map_err(storage)?;
    Ok(table.get(offset_key(stream, group).as_str()).map_err(storage)?.map(|v| v.value()))
}

/// Moves `group`'s offset on `stream` forward to `offset` (never back);
/// the offset it has now.
pub(super) fn acknowledge(
    txn: &redb::WriteTransaction,
    stream: &str,
    group: &str,
    offset: u64,
) -> Result<u64, StoreError> {
    let mut table = txn.open_table(CONSUMER_OFFSETS).map_err(storage)?;
    let key = offset_key(stream, group);
    let current = table.get(key.as_str()).map_err(storage)?.map_or(0, |v| v.value());
    let kept = current.max(offset);
    if kept != current {
        table.insert(key.as_str(), kept).map_err(storage)?;
    }
    Ok(kept)
}

/// The groups of `stream` and their offsets, by name.
pub(super) fn groups(txn: &redb::ReadTransaction, stream: &str) -> Result<Vec<(String, u64)>, StoreError> {
    let table = txn.open_table(CONSUMER_OFFSETS).map_err(storage)?;
    let prefix = format!("{stream}\0");
    let mut found = Vec::new();
    for item in table.range(prefix.as_str()..).map_err(storage)? {
        let (key, offset) = item.map_err(storage)?;
        let Some(group) = key.value().strip_prefix(prefix.as_str()).map(str::to_string) else { break };
        found.push((group, offset.value()));
    }
    Ok(found)
}
