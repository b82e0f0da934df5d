//! How the embedded store lays values down (see `docs/design.md`): every
//! value starts with a codec byte, then the value in that codec. Records
//! and dead letters are written through the `Disk*` structs below, which
//! are the format: the public types may change their shape (and their
//! JSON) without changing what is on disk.
//!
//! Postcard (a compact, documented binary format with a stable 1.0 wire
//! specification) writes fields in order, without names: a change to a
//! `Disk*` struct or an enum's variant order is a format change, which
//! raises [`FORMAT_VERSION`]. Failure kinds are kept by their stable names,
//! so that a new kind anywhere in the list changes nothing on disk.

use super::{
    Attempt, AttemptOutcome, Compensation, DeadLetter, Effect, EffectResponse, History, StoreError, TransactionOutcome,
    TransactionRecord,
};
use crate::vocab::{Failure, FailureKind};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The store's format: kept in `meta` under [`FORMAT_KEY`]. Format 1
/// (before this key existed) kept JSON values without a codec byte.
pub(crate) const FORMAT_VERSION: u64 = 2;
/// Where the format version is kept in the `meta` table.
pub(crate) const FORMAT_KEY: &str = "format";

/// The codec byte of a postcard value.
const POSTCARD: u8 = 1;
/// The codec byte of a key-value entry: the version that wrote it (u64,
/// little-endian), then the value's bytes as the guest gave them.
const VERSIONED: u8 = 2;

/// A key-value entry as stored.
pub(super) fn encode_versioned(version: u64, value: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(9 + value.len());
    bytes.push(VERSIONED);
    bytes.extend_from_slice(&version.to_le_bytes());
    bytes.extend_from_slice(value);
    bytes
}

/// A stored key-value entry: its version and value.
pub(super) fn decode_versioned(bytes: &[u8]) -> Result<(u64, &[u8]), StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { what: "kv value".into(), reason };
    let Some((&VERSIONED, rest)) = bytes.split_first() else {
        return Err(corrupt(format!("codec byte {:?}, not {VERSIONED:#04x}", bytes.first())));
    };
    let (version, value) = rest
        .split_first_chunk::<8>()
        .ok_or_else(|| corrupt(format!("{} bytes is shorter than a version", bytes.len())))?;
    Ok((u64::from_le_bytes(*version), value))
}

/// `value`, behind its codec byte.
pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_extend(value, vec![POSTCARD])
        .map_err(|e| StoreError::Encode { what: std::any::type_name::<T>(), source: std::sync::Arc::new(e) })
}

/// The value behind a codec byte; `what` names it in an error.
pub(super) fn decode<T: DeserializeOwned>(what: impl FnOnce() -> String, bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |what: String, reason: String| StoreError::Corrupt { what, reason };
    match bytes.split_first() {
        Some((&POSTCARD, rest)) => postcard::from_bytes(rest).map_err(|e| corrupt(what(), e.to_string())),
        Some((other, _)) => Err(corrupt(what(), format!("unknown codec byte {other:#04x}"))),
        None => Err(corrupt(what(), "the value is empty".into())),
    }
}

fn kind(name: &str) -> Result<FailureKind, String> {
    FailureKind::from_name(name).ok_or_else(|| format!("`{name}` is not a failure kind"))
}

#[derive(Serialize, Deserialize)]
enum DiskOutcome {
    Committed { version: u64, output: Vec<u8> },
    Failed { kind: String, message: String },
}

impl From<&TransactionOutcome> for DiskOutcome {
    fn from(outcome: &TransactionOutcome) -> Self {
        match outcome {
            TransactionOutcome::Committed { version, output } => {
                Self::Committed { version: *version, output: output.clone() }
            }
            TransactionOutcome::Failed { kind, message } => {
                Self::Failed { kind: kind.as_str().into(), message: message.clone() }
            }
        }
    }
}

impl TryFrom<DiskOutcome> for TransactionOutcome {
    type Error = String;

    fn try_from(outcome: DiskOutcome) -> Result<Self, String> {
        Ok(match outcome {
            DiskOutcome::Committed { version, output } => Self::Committed { version, output },
            DiskOutcome::Failed { kind: name, message } => Self::Failed { kind: kind(&name)?, message },
        })
    }
}

#[derive(Serialize, Deserialize)]
struct DiskAttempt {
    number: u32,
    path: String,
    /// The failure's kind and message; `None` for a commit.
    failed: Option<(String, String)>,
    snapshot_version: u64,
    duration_micros: u64,
}

#[derive(Serialize, Deserialize)]
struct DiskRecord {
    id: String,
    module: String,
    path: String,
    input_hash: String,
    outcome: DiskOutcome,
    attempts: Vec<DiskAttempt>,
    history: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct DiskCompensation {
    path: String,
    transaction_id: String,
    outcome: DiskOutcome,
}

#[derive(Serialize, Deserialize)]
struct DiskDeadLetter {
    transaction_id: String,
    module: String,
    path: String,
    input: Vec<u8>,
    failure: (String, String),
    attempts: Vec<u8>,
    compensation: Option<DiskCompensation>,
    dead_lettered_unix_ms: u64,
    idempotency_key: Option<String>,
}

/// A record as stored.
pub(super) fn encode_record(record: &TransactionRecord) -> Result<Vec<u8>, StoreError> {
    encode(&DiskRecord {
        id: record.id.clone(),
        module: record.module.clone(),
        path: record.path.clone(),
        input_hash: record.input_hash.clone(),
        outcome: (&record.outcome).into(),
        attempts: record
            .attempts
            .iter()
            .map(|attempt| DiskAttempt {
                number: attempt.number,
                path: attempt.path.clone(),
                failed: match &attempt.outcome {
                    AttemptOutcome::Committed => None,
                    AttemptOutcome::Failed { kind, message } => Some((kind.as_str().into(), message.clone())),
                },
                snapshot_version: attempt.snapshot_version,
                duration_micros: attempt.duration_micros,
            })
            .collect(),
        history: record.history.as_bytes().to_vec(),
    })
}

/// A stored record.
pub(super) fn decode_record(id: &str, bytes: &[u8]) -> Result<TransactionRecord, StoreError> {
    let what = || format!("transaction {id}");
    let disk: DiskRecord = decode(what, bytes)?;
    let corrupt = |reason: String| StoreError::Corrupt { what: what(), reason };
    let mut attempts = Vec::with_capacity(disk.attempts.len());
    for attempt in disk.attempts {
        let outcome = match attempt.failed {
            None => AttemptOutcome::Committed,
            Some((name, message)) => AttemptOutcome::Failed { kind: kind(&name).map_err(corrupt)?, message },
        };
        attempts.push(Attempt {
            number: attempt.number,
            path: attempt.path,
            outcome,
            snapshot_version: attempt.snapshot_version,
            duration_micros: attempt.duration_micros,
        });
    }
    Ok(TransactionRecord {
        id: disk.id,
        module: disk.module,
        path: disk.path,
        input_hash: disk.input_hash,
        outcome: disk.outcome.try_into().map_err(corrupt)?,
        attempts,
        history: History::from_bytes(disk.history),
    })
}

/// An effect of the journal, as stored.
#[derive(Serialize, Deserialize)]
struct DiskEffect {
    path: String,
    ordinal: u32,
    method: String,
    url: String,
    digest: String,
    key: String,
    sends: u32,
    sent_unix_ms: u64,
    response: Option<DiskEffectResponse>,
}

#[derive(Serialize, Deserialize)]
struct DiskEffectResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    unix_ms: u64,
}

/// An effect of the journal as stored.
pub(super) fn encode_effect(effect: &Effect) -> Result<Vec<u8>, StoreError> {
    let response = effect.response.as_ref().map(|response| DiskEffectResponse {
        status: response.status,
        headers: response.headers.clone(),
        body: response.body.clone(),
        unix_ms: response.unix_ms,
    });
    encode(&DiskEffect {
        path: effect.path.clone(),
        ordinal: effect.ordinal,
        method: effect.method.clone(),
        url: effect.url.clone(),
        digest: effect.digest.clone(),
        key: effect.key.clone(),
        sends: effect.sends,
        sent_unix_ms: effect.sent_unix_ms,
        response,
    })
}

/// A stored effect of `transaction_id`'s journal.
pub(super) fn decode_effect(transaction_id: &str, bytes: &[u8]) -> Result<Effect, StoreError> {
    let disk: DiskEffect = decode(|| format!("effect of transaction {transaction_id}"), bytes)?;
    Ok(Effect {
        path: disk.path,
        ordinal: disk.ordinal,
        method: disk.method,
        url: disk.url,
        digest: disk.digest,
        key: disk.key,
        sends: disk.sends,
        sent_unix_ms: disk.sent_unix_ms,
        response: disk.response.map(|response| EffectResponse {
            status: response.status,
            headers: response.headers,
            body: response.body,
            unix_ms: response.unix_ms,
        }),
    })
}

/// A dead letter as stored.
pub(super) fn encode_dead_letter(letter: &DeadLetter) -> Result<Vec<u8>, StoreError> {
    encode(&DiskDeadLetter {
        transaction_id: letter.transaction_id.clone(),
        module: letter.module.clone(),
        path: letter.path.clone(),
        input: letter.input.clone(),
        failure: (letter.failure.kind.as_str().into(), letter.failure.message.clone()),
        attempts: letter.attempts.as_bytes().to_vec(),
        compensation: letter.compensation.as_ref().map(|c| DiskCompensation {
            path: c.path.clone(),
            transaction_id: c.transaction_id.clone(),
            outcome: (&c.outcome).into(),
        }),
        dead_lettered_unix_ms: letter.dead_lettered_unix_ms,
        idempotency_key: letter.idempotency_key.clone(),
    })
}

/// A stored dead letter.
pub(super) fn decode_dead_letter(id: &str, bytes: &[u8]) -> Result<DeadLetter, StoreError> {
    let what = || format!("dead letter {id}");
    let disk: DiskDeadLetter = decode(what, bytes)?;
    let corrupt = |reason: String| StoreError::Corrupt { what: what(), reason };
    let (name, message) = disk.failure;
    let compensation = match disk.compensation {
        Some(c) => Some(Compensation {
            path: c.path,
            transaction_id: c.transaction_id,
            outcome: c.outcome.try_into().map_err(corrupt)?,
        }),
        None => None,
    };
    Ok(DeadLetter {
        transaction_id: disk.transaction_id,
        module: disk.module,
        path: disk.path,
        input: disk.input,
        failure: Failure { kind: kind(&name).map_err(corrupt)?, message },
        attempts: History::from_bytes(disk.attempts),
        compensation,
        dead_lettered_unix_ms: disk.dead_lettered_unix_ms,
        idempotency_key: disk.idempotency_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(outcome: TransactionOutcome) -> TransactionRecord {
        TransactionRecord {
            id: "t1".into(),
            module: "m".into(),
            path: "charge".into(),
            input_hash: "h".into(),
            outcome,
            attempts: vec![
                Attempt {
                    number: 1,
                    path: "charge".into(),
                    outcome: AttemptOutcome::Failed { kind: FailureKind::Diverted, message: "gate".into() },
                    snapshot_version: 3,
                    duration_micros: 40,
                },
                Attempt {
                    number: 2,
                    path: "charge-backup".into(),
                    outcome: AttemptOutcome::Committed,
                    snapshot_version: 3,
                    duration_micros: 50,
                },
            ],
            history: History::from_bytes(b"opaque".to_vec()),
        }
    }

    #[test]
    fn records_and_dead_letters_read_back_as_written() {
        for outcome in [
            TransactionOutcome::Committed { version: 4, output: b"{}".to_vec() },
            TransactionOutcome::Failed { kind: FailureKind::FuelExhausted, message: "out of fuel".into() },
        ] {
            let written = record(outcome);
            let bytes = encode_record(&written).unwrap_or_default();
            assert_eq!(bytes.first(), Some(&POSTCARD));
            assert_eq!(decode_record("t1", &bytes).ok(), Some(written));
        }
        let letter = DeadLetter {
            transaction_id: "t2".into(),
            module: "m".into(),
            path: "charge".into(),
            input: b"{\"a\":1}".to_vec(),
            failure: Failure { kind: FailureKind::Unavailable, message: "503".into() },
            attempts: History::from_bytes(vec![1, 2, 3]),
            compensation: Some(Compensation {
                path: "refund".into(),
                transaction_id: "t2.compensation".into(),
                outcome: TransactionOutcome::Committed { version: 9, output: Vec::new() },
            }),
            dead_lettered_unix_ms: 17,
            idempotency_key: Some("k".into()),
        };
        let bytes = encode_dead_letter(&letter).unwrap_or_default();
        assert_eq!(decode_dead_letter("t2", &bytes).ok(), Some(letter));
    }

    #[test]
    fn unknown_codecs_kinds_and_truncated_values_are_refused_as_corrupt() {
        let bytes = encode_record(&record(TransactionOutcome::Committed { version: 1, output: Vec::new() }))
            .unwrap_or_default();
        let refused = |bytes: &[u8]| match decode_record("t1", bytes) {
            Err(StoreError::Corrupt { what, reason }) => format!("{what}: {reason}"),
            other => format!("not refused: {other:?}"),
        };
        assert!(refused(&[]).contains("empty"), "{}", refused(&[]));
        assert!(refused(b"{\"id\":\"t1\"}").contains("unknown codec byte 0x7b"), "JSON of format 1");
        assert!(refused(&bytes[..bytes.len() / 2]).starts_with("transaction t1: "));
        let renamed =
            encode(&DiskOutcome::Failed { kind: "exploded".into(), message: String::new() }).unwrap_or_default();
        let outcome: DiskOutcome =
            decode(String::new, &renamed).unwrap_or(DiskOutcome::Committed { version: 0, output: Vec::new() });
        assert_eq!(TransactionOutcome::try_from(outcome).err().as_deref(), Some("`exploded` is not a failure kind"));
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        fn kind() -> impl Strategy<Value = FailureKind> {
            (0..64usize).prop_filter_map("a known kind", |i| {
                ["unavailable", "conflict", "guest_trap", "effect_in_doubt", "diverted", "rejected"]
                    .get(i % 6)
                    .and_then(|name| FailureKind::from_name(name))
            })
        }

        fn outcome() -> impl Strategy<Value = TransactionOutcome> {
            prop_oneof![
                (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..64))
                    .prop_map(|(version, output)| TransactionOutcome::Committed { version, output }),
                (kind(), ".{0,40}").prop_map(|(kind, message)| TransactionOutcome::Failed { kind, message }),
            ]
        }

        fn attempt() -> impl Strategy<Value = Attempt> {
            (any::<u32>(), "[a-z-]{1,12}", prop::option::of((kind(), ".{0,20}")), any::<u64>(), any::<u64>()).prop_map(
                |(number, path, failed, snapshot_version, duration_micros)| Attempt {
                    number,
                    path,
                    outcome: failed
                        .map_or(AttemptOutcome::Committed, |(kind, message)| AttemptOutcome::Failed { kind, message }),
                    snapshot_version,
                    duration_micros,
                },
            )
        }

        fn record() -> impl Strategy<Value = TransactionRecord> {
            (
                ".{1,40}",
                "[0-9a-f]{0,64}",
                ".{0,20}",
                outcome(),
                proptest::collection::vec(attempt(), 0..4),
                proptest::collection::vec(any::<u8>(), 0..128),
            )
                .prop_map(|(id, module, path, outcome, attempts, history)| TransactionRecord {
                    id,
                    module,
                    path,
                    input_hash: "h".into(),
                    outcome,
                    attempts,
                    history: History::from_bytes(history),
                })
        }

        fn effect() -> impl Strategy<Value = Effect> {
            (
                "[a-z-]{1,12}",
                any::<u32>(),
                ".{0,60}",
                any::<u32>(),
                any::<u64>(),
                prop::option::of((100u16..600, proptest::collection::vec(any::<u8>(), 0..64), any::<u64>())),
            )
                .prop_map(|(path, ordinal, url, sends, sent_unix_ms, response)| Effect {
                    path,
                    ordinal,
                    method: "POST".into(),
                    url,
                    digest: "d".into(),
                    key: "k".into(),
                    sends,
                    sent_unix_ms,
                    response: response.map(|(status, body, unix_ms)| EffectResponse {
                        status,
                        headers: vec![("content-type".into(), "application/json".into())],
                        body,
                        unix_ms,
                    }),
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            /// Whatever bytes a store hands back, decoding answers, never panics.
            #[test]
            fn any_bytes_decode_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = decode_record("t", &bytes);
                let _ = decode_effect("t", &bytes);
                let _ = decode_dead_letter("t", &bytes);
                let _ = decode_versioned(&bytes);
            }

            /// A record, an effect and a versioned value read back as written.
            #[test]
            fn what_is_written_reads_back(record in record(), effect in effect(), version in any::<u64>(),
                                          value in proptest::collection::vec(any::<u8>(), 0..64)) {
                let bytes = encode_record(&record).expect("encodes");
                prop_assert_eq!(decode_record(&record.id, &bytes).expect("decodes"), record);
                let bytes = encode_effect(&effect).expect("encodes");
                prop_assert_eq!(decode_effect("t", &bytes).expect("decodes"), effect);
                let bytes = encode_versioned(version, &value);
                prop_assert_eq!(decode_versioned(&bytes).expect("decodes"), (version, value.as_slice()));
            }

            /// A record cut short, or with a byte changed, is refused or read, never a panic.
            #[test]
            fn damaged_records_never_panic(record in record(), cut in any::<prop::sample::Index>(),
                                           flip in any::<prop::sample::Index>(), bit in 0u8..8) {
                let bytes = encode_record(&record).expect("encodes");
                let _ = decode_record("t", &bytes[..cut.index(bytes.len() + 1)]);
                let mut flipped = bytes.clone();
                let at = flip.index(flipped.len());
                flipped[at] ^= 1 << bit;
                let _ = decode_record("t", &flipped);
            }
        }
    }
}
