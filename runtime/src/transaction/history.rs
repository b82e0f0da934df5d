//! The attempts' story as the store keeps it: a [`History`] the runtime
//! encodes and decodes, opaque to the store.
//!
//! A history starts with a codec byte, then the reports. The reports are
//! JSON, because traces are tagged enums whose JSON is also the API's
//! (`tx show`, `GET /v1/transactions/{id}`), and a binary codec cannot read
//! tagged enums. They are written compressed (zstd, level 1): a mirrored
//! transfer's 2.3 KB of JSON becomes about 0.7 KB, and the bytes a commit
//! writes and fsyncs are what limits durable throughput
//! (`docs/benchmarks.md`). A short history is written uncompressed (codec
//! 1): below [`COMPRESS_FROM`] bytes, zstd's set-up (its Huffman tables)
//! costs more time than its few hundred bytes save, and a primary-only
//! transaction's history is that short. An empty history is a transaction
//! that never ran.

use super::AttemptReport;
use crate::store::{History, StoreError};
use serde::Serialize;
use std::borrow::Borrow;
use std::cell::RefCell;

/// The codec byte of a JSON history.
const JSON: u8 = 1;
/// The codec byte of a zstd-compressed JSON history.
const JSON_ZSTD: u8 = 2;
/// Fast, and on this JSON within a few percent of the higher levels.
const ZSTD_LEVEL: i32 = 1;
/// The shortest JSON that is compressed. A profile of the tiny path put
/// zstd at 8% of a primary-only transaction whose history is shorter than
/// this (`docs/benchmarks.md`); a mirrored transfer's is 2.3 KB.
const COMPRESS_FROM: usize = 1024;

thread_local! {
    /// A compression context per thread: making one costs more than
    /// compressing a history with it.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
}

/// The reports (owned or borrowed), encoded for the store.
pub(crate) fn encode<R: Borrow<AttemptReport> + Serialize>(reports: &[R]) -> History {
    // Reports hold plain data (strings, numbers, maps with string keys):
    // serialising them to memory cannot fail.
    let json = serde_json::to_vec(reports).unwrap_or_else(|_| b"[]".to_vec());
    if json.len() < COMPRESS_FROM {
        return History::from_bytes([&[JSON][..], &json].concat());
    }
    let compressed = COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
        }
        let body = cell.as_mut()?.compress(&json).ok()?;
        Some([&[JSON_ZSTD][..], &body].concat())
    });
    // Without a compressor (it could not allocate its context), the history
    // is kept uncompressed rather than lost.
    History::from_bytes(compressed.unwrap_or_else(|| [&[JSON][..], &json].concat()))
}

/// The reports of a stored history; `what` names its owner in an error.
pub(crate) fn decode(what: &str, history: &History) -> Result<Vec<AttemptReport>, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { what: format!("the history of {what}"), reason };
    match history.as_bytes().split_first() {
        None => Ok(Vec::new()),
        Some((&JSON, rest)) => serde_json::from_slice(rest).map_err(|e| corrupt(e.to_string())),
        Some((&JSON_ZSTD, rest)) => {
            let json = zstd::stream::decode_all(rest).map_err(|e| corrupt(format!("cannot decompress: {e}")))?;
            serde_json::from_slice(&json).map_err(|e| corrupt(e.to_string()))
        }
        Some((other, _)) => Err(corrupt(format!("unknown codec byte {other:#04x}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Attempt, AttemptOutcome};
    use crate::trace::{HostCall, Trace, TraceEvent};
    use crate::vocab::Role;

    fn trace(role: Role) -> Trace {
        let call = HostCall::KvGet { namespace: "accounts".into(), key: "alice".into(), version: Some(3) };
        Trace {
            role,
            events: vec![TraceEvent { at_micros: 10, duration_micros: 2, call }],
            fuel_consumed: 6_827,
            memory_peak_bytes: 1 << 20,
            duration_micros: 155,
            ended: "returned".into(),
            output: Some("{}".into()),
            failure: None,
        }
    }

    fn report(number: u32) -> AttemptReport {
        AttemptReport {
            attempt: Attempt {
                number,
                path: "transfer".into(),
                outcome: AttemptOutcome::Committed,
                snapshot_version: 7,
                duration_micros: 120,
            },
            primary: trace(Role::Primary),
            mirror: Some(trace(Role::Mirror)),
            prediction: None,
            gate_prediction: None,
            explored: false,
            hedge: None,
            path_order: Vec::new(),
            split_arm: None,
        }
    }

    /// Reports compared by their JSON, which is what the API shows.
    fn json(reports: &[AttemptReport]) -> String {
        serde_json::to_string(reports).unwrap_or_default()
    }

    #[test]
    fn histories_are_compressed_and_both_codecs_are_read_back() {
        let reports = vec![report(1), report(2)];
        assert!(json(&reports).len() >= COMPRESS_FROM, "a history long enough to be compressed");
        let history = encode(&reports);
        assert_eq!(history.as_bytes().first(), Some(&JSON_ZSTD));
        assert_eq!(decode("t1", &history).map(|r| json(&r)).ok(), Some(json(&reports)));
        assert!(history.as_bytes().len() < json(&reports).len(), "compressed: {} bytes", history.as_bytes().len());
        // A history of the first codec (uncompressed JSON) is still read.
        let plain = [&[JSON][..], json(&reports).as_bytes()].concat();
        assert_eq!(decode("t1", &History::from_bytes(plain)).map(|r| json(&r)).ok(), Some(json(&reports)));
        assert_eq!(decode("t1", &History::default()).map(|r| r.len()).ok(), Some(0));
    }

    #[test]
    fn short_histories_are_kept_uncompressed_and_read_back() {
        let mut short = report(1);
        short.mirror = None;
        let reports = vec![short];
        assert!(json(&reports).len() < COMPRESS_FROM, "{} bytes", json(&reports).len());
        let history = encode(&reports);
        assert_eq!(history.as_bytes().first(), Some(&JSON));
        assert_eq!(history.as_bytes().len(), json(&reports).len() + 1);
        assert_eq!(decode("t1", &history).map(|r| json(&r)).ok(), Some(json(&reports)));
    }

    #[test]
    fn damaged_histories_are_refused_as_corrupt() {
        let refused = |bytes: Vec<u8>| match decode("t1", &History::from_bytes(bytes)) {
            Err(StoreError::Corrupt { what, reason }) => format!("{what}: {reason}"),
            other => format!("not refused: {other:?}"),
        };
        assert!(
            refused(vec![JSON_ZSTD, 1, 2, 3]).contains("cannot decompress"),
            "{}",
            refused(vec![JSON_ZSTD, 1, 2, 3])
        );
        assert!(refused(vec![9]).contains("unknown codec byte 0x09"));
        assert!(refused(b"\x01[{".to_vec()).contains("the history of t1"));
    }
}
