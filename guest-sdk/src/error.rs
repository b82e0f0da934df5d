use crate::wit::txmirror::transaction::types::{TxError, ValidationIssue};

/// One problem with a transaction's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// The input field at fault, as a dotted path such as `lines.0.sku`.
    pub field: String,
    /// What is wrong with it, for a person to read.
    pub message: String,
}

impl Issue {
    /// A new issue about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// Why a path failed.
///
/// The variant tells the runtime what to do next: a validation error is
/// final, a rejection is final for this input, and an unavailable dependency
/// may succeed on a retry or on another path.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The input is invalid; retrying it unchanged cannot succeed.
    Validation(Vec<Issue>),
    /// A business rule refused the transaction.
    Rejected(String),
    /// A dependency failed or could not be reached.
    Unavailable(String),
}

impl Error {
    /// A business-rule rejection.
    pub fn rejected(reason: impl Into<String>) -> Self {
        Self::Rejected(reason.into())
    }

    /// A failed or unreachable dependency.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::Unavailable(reason.into())
    }

    /// A single validation issue.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![Issue::new(field, message)])
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Validation(issues) => {
                write!(f, "invalid input:")?;
                for issue in issues {
                    write!(f, " {}: {};", issue.field, issue.message)?;
                }
                Ok(())
            }
            Self::Rejected(reason) => write!(f, "rejected: {reason}"),
            Self::Unavailable(reason) => write!(f, "unavailable: {reason}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for TxError {
    fn from(error: Error) -> Self {
        match error {
            Error::Validation(issues) => TxError::Validation(
                issues
                    .into_iter()
                    .map(|issue| ValidationIssue { field: issue.field, message: issue.message })
                    .collect(),
            ),
            Error::Rejected(reason) => TxError::Rejected(reason),
            Error::Unavailable(reason) => TxError::Unavailable(reason),
        }
    }
}

impl From<crate::kv::KvError> for Error {
    fn from(error: crate::kv::KvError) -> Self {
        Self::Unavailable(format!("key-value store: {error}"))
    }
}

impl From<crate::events::EventError> for Error {
    fn from(error: crate::events::EventError) -> Self {
        Self::Unavailable(format!("events: {error}"))
    }
}

impl From<crate::http::HttpError> for Error {
    fn from(error: crate::http::HttpError) -> Self {
        Self::Unavailable(format!("http: {error}"))
    }
}
