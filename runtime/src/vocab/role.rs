//! Which twin an instance is.

use serde::{Deserialize, Serialize};

/// Which twin an instance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The instance whose effects count.
    Primary,
    /// The read-only twin whose effects are withheld.
    Mirror,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Primary => "primary",
            Self::Mirror => "mirror",
        })
    }
}
