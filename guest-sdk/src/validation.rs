//! Input validation that the runtime can see.
//!
//! Each issue is reported to the host as soon as it is found. The runtime's
//! predictor sees it in the mirror's trace and can stop the primary before it
//! does anything, instead of waiting for the path to return.
//!
//! ```no_run
//! use txmirror_guest::validation::Validator;
//!
//! fn check(amount: i64, currency: &str) -> Result<(), txmirror_guest::Error> {
//!     let mut v = Validator::new();
//!     v.check(amount > 0, "amount", "must be positive");
//!     v.check(currency.len() == 3, "currency", "must be an ISO 4217 code");
//!     v.finish()
//! }
//! ```

use crate::wit::txmirror::transaction::types::ValidationIssue;
use crate::wit::txmirror::transaction::validation as host;
use crate::{Error, Issue};

/// Reports one issue to the host.
pub fn report(issue: &Issue) {
    host::report(&ValidationIssue { field: issue.field.clone(), message: issue.message.clone() });
}

/// Collects validation issues, reporting each one as it is found.
#[derive(Debug, Default)]
pub struct Validator {
    issues: Vec<Issue>,
}

impl Validator {
    /// An empty validator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an issue on `field` unless `ok` holds.
    pub fn check(&mut self, ok: bool, field: &str, message: &str) -> &mut Self {
        if !ok {
            self.push(Issue::new(field, message));
        }
        self
    }

    /// Records an issue.
    pub fn push(&mut self, issue: Issue) -> &mut Self {
        report(&issue);
        self.issues.push(issue);
        self
    }

    /// Whether no issue was found so far.
    pub fn is_ok(&self) -> bool {
        self.issues.is_empty()
    }

    /// `Ok(())` if no issue was found, else [`Error::Validation`] with all of them.
    pub fn finish(&mut self) -> Result<(), Error> {
        if self.issues.is_empty() { Ok(()) } else { Err(Error::Validation(std::mem::take(&mut self.issues))) }
    }
}
