//! Transactional key-value state.
//!
//! Reads see one snapshot of the store taken when the transaction started,
//! plus this transaction's own writes. Writes become visible to others only
//! when the transaction commits; if another transaction changed a key this
//! one read, the commit is refused and the runtime retries the transaction.
//!
//! Values are stored as JSON. Use [`get_bytes`] and [`put_bytes`] for raw
//! bytes.
//!
//! ```no_run
//! # fn demo() -> Result<(), txmirror_guest::kv::KvError> {
//! use txmirror_guest::kv;
//!
//! kv::put("accounts", "alice", &100u64)?;
//! let balance: Option<u64> = kv::get("accounts", "alice")?;
//! assert_eq!(balance, Some(100));
//! # Ok(()) }
//! ```

use crate::wit::txmirror::transaction::kv as host;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a key-value operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KvError {
    /// The policy does not grant this namespace (or grants it read-only).
    Denied(String),
    /// The namespace or key is not acceptable.
    InvalidKey(String),
    /// The value, or the transaction's writes in total, are too large.
    TooLarge(String),
    /// A stored value is not valid JSON for the requested type.
    Decode(String),
    /// A value could not be encoded as JSON.
    Encode(String),
}

impl std::fmt::Display for KvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Denied(m) => write!(f, "denied: {m}"),
            Self::InvalidKey(m) => write!(f, "invalid key: {m}"),
            Self::TooLarge(m) => write!(f, "too large: {m}"),
            Self::Decode(m) => write!(f, "stored value cannot be decoded: {m}"),
            Self::Encode(m) => write!(f, "value cannot be encoded: {m}"),
        }
    }
}

impl std::error::Error for KvError {}

impl From<host::KvError> for KvError {
    fn from(error: host::KvError) -> Self {
        match error {
            host::KvError::Denied(m) => Self::Denied(m),
            host::KvError::InvalidKey(m) => Self::InvalidKey(m),
            host::KvError::TooLarge(m) => Self::TooLarge(m),
        }
    }
}

/// Reads and decodes the value of `key`, or `None` if it is absent.
pub fn get<T: DeserializeOwned>(namespace: &str, key: &str) -> Result<Option<T>, KvError> {
    match get_bytes(namespace, key)? {
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| KvError::Decode(e.to_string())),
        None => Ok(None),
    }
}

/// Encodes `value` and writes it to `key`.
pub fn put<T: Serialize + ?Sized>(namespace: &str, key: &str, value: &T) -> Result<(), KvError> {
    let bytes = serde_json::to_vec(value).map_err(|e| KvError::Encode(e.to_string()))?;
    put_bytes(namespace, key, &bytes)
}

/// Reads the raw bytes of `key`.
pub fn get_bytes(namespace: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
    Ok(host::get(namespace, key)?)
}

/// Writes raw bytes to `key`.
pub fn put_bytes(namespace: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
    Ok(host::put(namespace, key, value)?)
}

/// Deletes `key`; deleting an absent key is not an error.
pub fn delete(namespace: &str, key: &str) -> Result<(), KvError> {
    Ok(host::delete(namespace, key)?)
}

/// Up to `limit` entries whose key starts with `prefix`, in key order, decoded.
pub fn scan<T: DeserializeOwned>(namespace: &str, prefix: &str, limit: u32) -> Result<Vec<(String, T)>, KvError> {
    host::scan(namespace, prefix, limit)?
        .into_iter()
        .map(|(key, bytes)| {
            serde_json::from_slice(&bytes).map(|value| (key, value)).map_err(|e| KvError::Decode(e.to_string()))
        })
        .collect()
}
