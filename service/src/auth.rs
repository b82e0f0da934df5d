//! Bearer tokens, roles and tenants.
//!
//! Every request under `/v1` names its caller with `Authorization: Bearer
//! TOKEN`. The service keeps only the SHA-256 of each token (see
//! [`crate::config`]); a token belongs to one tenant and has one role:
//!
//! | role | may |
//! |---|---|
//! | `developer` | upload, list, show and delete modules; read policies |
//! | `operator` | list and show modules; put and read policies; read transactions; the dead-letter queue; the model; metrics |
//! | `client` | submit transactions; read transactions |
//!
//! Everything a request names is looked up in the caller's tenant only, so
//! another tenant's modules, transactions and dead letters answer 404
//! exactly as if they did not exist.

use crate::{AppState, ServiceError, Tenant};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Uploads and manages modules.
    Developer,
    /// Writes policies, runs the dead-letter queue and the model.
    Operator,
    /// Submits transactions and reads them.
    Client,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Developer => "developer",
            Self::Operator => "operator",
            Self::Client => "client",
        })
    }
}

/// The SHA-256 of a token, as the configuration keeps it.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh token: `txm_` and 256 random bits in hex.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("txm_{hex}")
}

/// What the service knows of a token.
#[derive(Debug, Clone)]
pub(crate) struct TokenInfo {
    pub(crate) name: String,
    pub(crate) tenant: String,
    pub(crate) role: Role,
    pub(crate) profile: Option<String>,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The caller's tenant.
    pub tenant: Arc<Tenant>,
    /// The caller's role.
    pub role: Role,
    /// The token's name, for logs.
    pub token_name: String,
    /// The profile the token's submissions run under, if it names one.
    pub profile: Option<String>,
}

impl Caller {
    /// Refuses the request unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ServiceError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            let needed: Vec<String> = roles.iter().map(ToString::to_string).collect();
            Err(ServiceError::Forbidden(format!(
                "this needs the {} role; the token has the {} role",
                needed.join(" or "),
                self.role
            )))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ServiceError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ServiceError::Unauthorized("no Authorization: Bearer token".into()))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| ServiceError::Unauthorized("the Authorization header is not `Bearer TOKEN`".into()))?;
        let info = state
            .tokens
            .get(&hash_token(token))
            .ok_or_else(|| ServiceError::Unauthorized("the token is not known".into()))?;
        let tenant = state
            .tenants
            .get(&info.tenant)
            .cloned()
            .ok_or_else(|| ServiceError::Internal(format!("token {} names no open tenant", info.name)))?;
        // Operators are not held to the request rate: they must be able to
        // look into a flood while it lasts.
        if info.role != Role::Operator {
            tenant.quota().request()?;
        }
        Ok(Self { tenant, role: info.role, token_name: info.name.clone(), profile: info.profile.clone() })
    }
}
