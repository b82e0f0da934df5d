//! Names the host accepts from guests and clients: namespaces, keys,
//! streams and idempotency keys.

/// The stream the runtime writes each transaction's end to, when asked to
/// (see `Runtime::publish_statuses`).
pub const STATUS_STREAM: &str = "txmirror.status";

/// Streams whose names begin so are the runtime's own: no policy grants
/// them, so that no guest can write a status it did not have.
pub const RESERVED_STREAM_PREFIX: &str = "txmirror.";

/// The longest namespace or key, in bytes.
pub const MAX_NAME_LEN: usize = 512;

/// Checks a namespace, key or stream name: 1 to [`MAX_NAME_LEN`] bytes, no NUL.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("must not be empty".into())
    } else if name.len() > MAX_NAME_LEN {
        Err(format!("is {} bytes long; the limit is {MAX_NAME_LEN}", name.len()))
    } else if name.contains('\0') {
        Err("must not contain a NUL byte".into())
    } else {
        Ok(())
    }
}
