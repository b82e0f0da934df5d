//! Names the host accepts from guests and clients: namespaces, keys,
//! streams and idempotency keys.

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
