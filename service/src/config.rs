//! The service's configuration file (`txmirror serve --config FILE`).
//!
//! ```toml
//! listen = "127.0.0.1:8080"            # the default
//! data_dir = "txmirror-data"           # relative to this file; the default
//! model = "models/txmirror-v3.onnx"    # optional: the rules decide alone without one
//! shutdown_deadline_secs = 30          # the default
//!
//! [[tokens]]
//! name = "acme-ci"                     # shown in logs, never the token
//! tenant = "acme"
//! role = "developer"                   # developer, operator or client
//! sha256 = "…64 hex digits…"           # SHA-256 of the token: `txmirror token new` prints both
//! profile = "cautious"                 # optional: its submissions' profile in a policy's [profiles]
//!
//! [[webhooks]]                         # optional: relays streams' events (see `relay`)
//! name = "billing"
//! tenant = "acme"
//! url = "https://billing.example.com/hooks/txmirror"
//! streams = ["payments"]
//! statuses = "requested"               # optional: transactions' ends too, "all" or those whose submission names it
//! secret_env = "BILLING_WEBHOOK_SECRET" # or `secret`; signs each delivery
//!
//! [server]                             # optional: see `server::ServerConfig`
//! header_read_timeout_ms = 10000
//!
//! [[quotas]]                           # optional: see `quota`
//! tenant = "acme"
//! max_in_flight = 64
//! ```
//!
//! Tokens are kept only as SHA-256 hashes: the file can be read by anyone
//! who may read the configuration without giving them access.

use crate::auth::Role;
use crate::quota::QuotaConfig;
use crate::server::ServerConfig;
use serde::Deserialize;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The longest tenant or token name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// What `txmirror serve` runs with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where the stores, the catalog and the compile cache live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Where compiled modules are cached; `DATA_DIR/cache` if unset.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// The failure-prediction model (an ONNX file), if any.
    #[serde(default)]
    pub model: Option<PathBuf>,
    /// How long a shutdown waits for transactions in flight before it hands
    /// their leases back (another node, or the next start, ends them).
    #[serde(default = "default_shutdown_deadline_secs")]
    pub shutdown_deadline_secs: u64,
    /// Who may call the API.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Where the tenants' state lives (`[store]`): the embedded store in
    /// `DATA_DIR/tenants/` unless a PostgreSQL URL is given.
    #[serde(default)]
    pub store: StoreConfig,
    /// This process as one node of several (`[node]`).
    #[serde(default)]
    pub node: NodeConfig,
    /// How long streams keep their events (`[[retention]]`); without a
    /// rule, a stream keeps every event.
    #[serde(default)]
    pub retention: Vec<RetentionConfig>,
    /// Where streams' events are delivered (`[[webhooks]]`).
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// Connection limits and deadlines (`[server]`).
    #[serde(default)]
    pub server: ServerConfig,
    /// Per-tenant quotas (`[[quotas]]`; see [`crate::quota`]).
    #[serde(default)]
    pub quotas: Vec<QuotaConfig>,
}

/// Which transactions' ends a webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Statuses {
    /// Every transaction's of its tenant.
    All,
    /// Those whose submission named the webhook (`"notify": "NAME"`).
    Requested,
}

/// A receiver of a tenant's streams' events (`[[webhooks]]`): each event
/// is POSTed to `url`, in order per stream, signed, until it is accepted
/// (`2xx`) or has failed `max_attempts` times and is parked as a dead
/// letter an operator can replay.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Its name, unique per tenant: its consumer group is `webhook:NAME`.
    pub name: String,
    /// The tenant whose streams it receives.
    pub tenant: String,
    /// Where events are POSTed: `http://` or `https://`.
    pub url: String,
    /// The streams it receives.
    #[serde(default)]
    pub streams: Vec<String>,
    /// Whether it receives transactions' ends too (the runtime's status
    /// stream): every one of its tenant's, or those whose submission names
    /// this webhook (`"notify"`).
    #[serde(default)]
    pub statuses: Option<Statuses>,
    /// The signing secret: `whsec_` and base64 (Standard Webhooks), or any
    /// other text, taken as bytes. Prefer `secret_env`.
    #[serde(default)]
    pub secret: Option<String>,
    /// The environment variable that holds the signing secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// How long one POST may take, in milliseconds.
    #[serde(default = "default_webhook_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts of one event before it is parked as a dead letter.
    #[serde(default = "default_webhook_max_attempts")]
    pub max_attempts: u32,
    /// The delay before the first retry, in milliseconds; it doubles (with
    /// a fifth of jitter) at each retry, up to `max_backoff_ms`.
    #[serde(default = "default_webhook_backoff_ms")]
    pub backoff_ms: u64,
    /// The longest delay between two attempts, in milliseconds.
    #[serde(default = "default_webhook_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Failures in a row (timeouts, refused connections, `5xx`, `429`)
    /// that open the endpoint's circuit breaker.
    #[serde(default = "default_webhook_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker lets nothing through before one trial, in
    /// milliseconds.
    #[serde(default = "default_webhook_breaker_open_ms")]
    pub breaker_open_ms: u64,
}

impl WebhookConfig {
    /// The signing secret's bytes, from `secret` or `secret_env`.
    pub fn secret_bytes(&self) -> Result<Vec<u8>, String> {
        let text = match (&self.secret, &self.secret_env) {
            (Some(secret), None) => secret.clone(),
            (None, Some(variable)) => std::env::var(variable)
                .map_err(|_| format!("the environment variable {variable} (secret_env) is not set"))?,
            (Some(_), Some(_)) => return Err("sets both secret and secret_env; keep one".into()),
            (None, None) => return Err("has no secret: set secret_env (or secret) to sign its deliveries".into()),
        };
        let bytes = match text.strip_prefix("whsec_") {
            Some(encoded) => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|e| format!("its secret starts with whsec_ but the rest is not base64: {e}"))?
            }
            None => text.into_bytes(),
        };
        if bytes.len() < 16 {
            return Err(format!("its secret is {} bytes; at least 16 are needed", bytes.len()));
        }
        Ok(bytes)
    }
}

fn default_webhook_timeout_ms() -> u64 {
    5_000
}

fn default_webhook_max_attempts() -> u32 {
    10
}

fn default_webhook_backoff_ms() -> u64 {
    500
}

fn default_webhook_max_backoff_ms() -> u64 {
    60_000
}

fn default_webhook_breaker_failures() -> u32 {
    5
}

fn default_webhook_breaker_open_ms() -> u64 {
    15_000
}

/// How long one stream keeps its events (`[[retention]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// The stream.
    pub stream: String,
    /// Only this tenant's stream; every tenant's if unset.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Events older than this may go.
    #[serde(default)]
    pub max_age_secs: Option<u64>,
    /// All but the newest this many events may go.
    #[serde(default)]
    pub max_events: Option<u64>,
    /// Purges what consumer groups have not acknowledged as well (by
    /// default it is kept, whatever its age or place).
    #[serde(default)]
    pub purge_unacknowledged: bool,
}

impl RetentionConfig {
    /// The store's retention for a purge at `now_unix_ms`.
    pub fn at(&self, now_unix_ms: u64) -> txmirror_runtime::store::StreamRetention {
        let before = self.max_age_secs.map(|age| now_unix_ms.saturating_sub(age.saturating_mul(1000)));
        let retention = txmirror_runtime::store::StreamRetention::new(before, self.max_events);
        if self.purge_unacknowledged { retention.overriding_groups() } else { retention }
    }
}

/// This process as a node (`[node]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The node's name, in logs, the API and its lease holder's id; the
    /// `HOSTNAME` environment variable, or `txmirror`, if unset.
    #[serde(default = "default_node_name")]
    pub name: String,
    /// How long a lease on an accepted transaction lasts unless its node
    /// renews it, in milliseconds: a dead node's work is taken over this
    /// long (and a quarter more, at most) after its last renewal.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self { name: default_node_name(), lease_ms: default_lease_ms() }
    }
}

impl NodeConfig {
    /// The lowest lease accepted: renewals every third of it must keep up
    /// with a loaded database.
    pub const MIN_LEASE_MS: u64 = 300;
    /// The highest: a dead node's work waits this long.
    pub const MAX_LEASE_MS: u64 = 3_600_000;

    /// The lease.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }
}

fn default_node_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|name| !name.is_empty() && check_name("node", name).is_ok())
        .unwrap_or_else(|| "txmirror".to_string())
}

fn default_lease_ms() -> u64 {
    10_000
}

/// The tenants' store (`[store]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// A PostgreSQL database (`postgres://user@host:port/db`): each
    /// tenant's state in a schema of its own there. Unset: the embedded
    /// store, one redb file per tenant.
    #[serde(default)]
    pub url: Option<String>,
}

/// One bearer token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A name for logs.
    pub name: String,
    /// The tenant the token acts for.
    pub tenant: String,
    /// What the token may do.
    pub role: Role,
    /// The SHA-256 of the token, 64 lower-case hex digits.
    pub sha256: String,
    /// The profile its submissions run under (`[profiles.NAME]` in a
    /// module's policy), unless a submission names another.
    #[serde(default)]
    pub profile: Option<String>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("txmirror-data")
}

fn default_shutdown_deadline_secs() -> u64 {
    30
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped settings.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, with its place.
        message: String,
    },
    /// A setting is out of bounds.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl ServiceConfig {
    /// A configuration with the defaults and these tokens.
    pub fn new(data_dir: impl Into<PathBuf>, tokens: Vec<TokenConfig>) -> Self {
        Self {
            listen: default_listen(),
            data_dir: data_dir.into(),
            cache_dir: None,
            model: None,
            shutdown_deadline_secs: default_shutdown_deadline_secs(),
            tokens,
            store: StoreConfig::default(),
            node: NodeConfig::default(),
            retention: Vec::new(),
            webhooks: Vec::new(),
            server: ServerConfig::default(),
            quotas: Vec::new(),
        }
    }

    /// Reads and checks a configuration file; relative paths in it are
    /// taken from the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        let mut config = Self::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.data_dir = base.join(&config.data_dir);
        config.model = config.model.map(|model| base.join(model));
        config.cache_dir = config.cache_dir.map(|dir| base.join(dir));
        config.server.tls = config.server.tls.map(|tls| tls.relative_to(base));
        Ok(config)
    }

    /// Parses and checks a configuration; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.display().to_string(), message: e.to_string() })?;
        config.check().map_err(|message| ConfigError::Invalid { path: path.display().to_string(), message })?;
        Ok(config)
    }

    /// Checks the settings that TOML types alone do not.
    pub fn check(&self) -> Result<(), String> {
        if self.tokens.is_empty() {
            return Err("no [[tokens]]: every request needs a bearer token; `txmirror token new` makes one".into());
        }
        if let Some(url) = &self.store.url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err("[store] url must be a PostgreSQL URL, postgres://user@host:port/database".into());
        }
        check_name("[node] name", &self.node.name)?;
        self.server.check(self.listen)?;
        let mut quotas = HashSet::new();
        for (index, rule) in self.quotas.iter().enumerate() {
            let at = format!("[[quotas]] {}", index + 1);
            rule.check(&at)?;
            if let Some(tenant) = &rule.tenant
                && !self.tokens.iter().any(|token| &token.tenant == tenant)
            {
                return Err(format!("{at}: no token names tenant `{tenant}`"));
            }
            if !quotas.insert(rule.tenant.as_deref()) {
                return Err(match &rule.tenant {
                    Some(tenant) => format!("{at}: tenant `{tenant}` has two [[quotas]]"),
                    None => format!("{at}: two [[quotas]] without a tenant"),
                });
            }
        }
        if !(NodeConfig::MIN_LEASE_MS..=NodeConfig::MAX_LEASE_MS).contains(&self.node.lease_ms) {
            return Err(format!(
                "[node] lease_ms = {} is outside {}..={}",
                self.node.lease_ms,
                NodeConfig::MIN_LEASE_MS,
                NodeConfig::MAX_LEASE_MS
            ));
        }
        if self.shutdown_deadline_secs > 3600 {
            return Err(format!("shutdown_deadline_secs = {} is over an hour", self.shutdown_deadline_secs));
        }
        for (index, rule) in self.retention.iter().enumerate() {
            let at = format!("[[retention]] {} (`{}`)", index + 1, rule.stream);
            txmirror_runtime::vocab::validate_name(&rule.stream).map_err(|reason| format!("{at}: stream {reason}"))?;
            if rule.max_age_secs.is_none() && rule.max_events.is_none() {
                return Err(format!("{at} sets neither max_age_secs nor max_events, so it would keep everything"));
            }
            if let Some(tenant) = &rule.tenant
                && !self.tokens.iter().any(|token| &token.tenant == tenant)
            {
                return Err(format!("{at}: no token names tenant `{tenant}`"));
            }
        }
        let mut webhooks = HashSet::new();
        for (index, webhook) in self.webhooks.iter().enumerate() {
            let at = format!("[[webhooks]] {} (`{}`)", index + 1, webhook.name);
            check_name(&format!("{at}: name"), &webhook.name)?;
            if !self.tokens.iter().any(|token| token.tenant == webhook.tenant) {
                return Err(format!("{at}: no token names tenant `{}`", webhook.tenant));
            }
            if !webhooks.insert((webhook.tenant.as_str(), webhook.name.as_str())) {
                return Err(format!("{at}: tenant `{}` has two webhooks of this name", webhook.tenant));
            }
            check_webhook_url(&webhook.url).map_err(|reason| format!("{at}: url {reason}"))?;
            if webhook.streams.is_empty() && webhook.statuses.is_none() {
                return Err(format!("{at} names no streams and no statuses"));
            }
            for stream in &webhook.streams {
                txmirror_runtime::vocab::validate_name(stream).map_err(|reason| format!("{at}: stream {reason}"))?;
                if stream.starts_with(txmirror_runtime::vocab::RESERVED_STREAM_PREFIX) {
                    return Err(format!("{at}: stream `{stream}` is the runtime's own; ask for `statuses` instead"));
                }
            }
            webhook.secret_bytes().map_err(|reason| format!("{at} {reason}"))?;
            let bounded = [
                ("timeout_ms", webhook.timeout_ms, 100, 60_000),
                ("max_attempts", u64::from(webhook.max_attempts), 1, 1_000),
                ("backoff_ms", webhook.backoff_ms, 10, 3_600_000),
                ("max_backoff_ms", webhook.max_backoff_ms, webhook.backoff_ms, 86_400_000),
                ("breaker_failures", u64::from(webhook.breaker_failures), 1, 1_000),
                ("breaker_open_ms", webhook.breaker_open_ms, 10, 3_600_000),
            ];
            for (setting, value, low, high) in bounded {
                if !(low..=high).contains(&value) {
                    return Err(format!("{at}: {setting} = {value} is outside {low}..={high}"));
                }
            }
        }
        let mut names = HashSet::new();
        let mut hashes = HashSet::new();
        for token in &self.tokens {
            check_name("token name", &token.name)?;
            check_name("tenant", &token.tenant)?;
            if !names.insert(token.name.as_str()) {
                return Err(format!("two tokens are named `{}`", token.name));
            }
            if token.sha256.len() != 64 || !token.sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(format!(
                    "token `{}`: sha256 must be 64 lower-case hex digits (the SHA-256 of the token, not the token)",
                    token.name
                ));
            }
            if !hashes.insert(token.sha256.as_str()) {
                return Err(format!("token `{}` has the same hash as another token", token.name));
            }
        }
        Ok(())
    }

    /// The quota rule of a tenant: its own, else the one without a tenant.
    pub fn quota_of(&self, tenant: &str) -> Option<&QuotaConfig> {
        let own = self.quotas.iter().find(|rule| rule.tenant.as_deref() == Some(tenant));
        own.or_else(|| self.quotas.iter().find(|rule| rule.tenant.is_none()))
    }

    /// The shutdown deadline.
    pub fn shutdown_deadline(&self) -> Duration {
        Duration::from_secs(self.shutdown_deadline_secs)
    }
}

/// Tenant and token names: 1 to [`MAX_NAME_LEN`] of `a-z`, `0-9`, `-`, `_`,
/// so that they are safe as directory names and in URLs.
fn check_name(what: &str, name: &str) -> Result<(), String> {
    let fits = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_'));
    if fits { Ok(()) } else { Err(format!("{what} `{name}` must be 1 to {MAX_NAME_LEN} of a-z, 0-9, - and _")) }
}

/// A webhook's URL: `http` or `https`, a host, no credentials (they would
/// show in logs and the API; sign with the secret instead), no fragment.
fn check_webhook_url(url: &str) -> Result<(), String> {
    let uri: axum::http::Uri = url.parse().map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!("`{url}` must start with http:// or https://"));
    }
    let Some(authority) = uri.authority() else { return Err(format!("`{url}` names no host")) };
    if authority.as_str().contains('@') {
        return Err("must not hold credentials; the deliveries are signed with the secret".into());
    }
    if url.contains('#') {
        return Err(format!("`{url}` has a fragment, which is never sent"));
    }
    Ok(())
}
