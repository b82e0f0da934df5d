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
//! - `meta`: `"stream_index_through"`, the last sequence of the log that the
//!   index covers. Opening catches the index up from there, so a store
//!   written meanwhile by a build without the index is indexed again.

use super::super::codec::decode;
use super::super::{StoreError, StoredEvent};
use super::{EVENTS, META, storage};
use redb::{ReadableTable, TableDefinition};

pub(super) const STREAM_EVENTS: TableDefinition<'_, (&str, u64), ()> = TableDefinition::new("stream_events");
pub(super) const CONSUMER_OFFSETS: TableDefinition<'_, &str, u64> = TableDefinition::new("consumer_offsets");
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

/// Indexes one event as the commit appends it.
pub(super) fn index(
    index: &mut redb::Table<'_, (&str, u64), ()>,
    meta: &mut redb::Table<'_, &str, u64>,
    stream: &str,
    sequence: u64,
) -> Result<(), StoreError> {
    index.insert((stream, sequence), ()).map_err(storage)?;
    meta.insert(INDEX_THROUGH_KEY, sequence).map_err(storage)?;
    Ok(())
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
