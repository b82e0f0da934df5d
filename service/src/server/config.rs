//! The `[server]` table: how long a client may take, and how many may be
//! connected at once.

use super::tls::TlsFiles;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

/// Limits on connections and requests (`[server]`).
///
/// ```toml
/// [server]
/// header_read_timeout_ms = 10000   # a request's head, from connection or previous response
/// body_read_timeout_ms = 30000     # a request's whole body, from the end of its head
/// idle_timeout_ms = 60000          # no byte either way while no request is being handled
/// max_connections = 1024           # more are closed at once
/// allow_plain_http = false         # plain HTTP on an address that is not loopback
///
/// [server.tls]                     # HTTPS: a PEM certificate chain and key
/// cert_file = "cert.pem"
/// key_file = "key.pem"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// How long a connection has to send a request's whole head, counted
    /// from when it connects or its previous response was sent; it is
    /// therefore also how long a kept-alive connection may wait between
    /// requests. A TLS handshake must end within it too.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// How long a request's whole body may take to arrive, counted from the
    /// end of its head. A body that is late is answered `408` and the
    /// connection is closed.
    #[serde(default = "default_body_read_timeout_ms")]
    pub body_read_timeout_ms: u64,
    /// How long a connection may move no byte while none of its requests is
    /// being handled (a client that stops reading its response, say).
    /// Event streams send a keep-alive comment every 15 s, so the bound is
    /// above that.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// How many connections may be open at once; one more is closed as
    /// soon as it is accepted (and counted in the metrics).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// HTTPS with this certificate and key; plain HTTP without.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Plain HTTP on an address that is not loopback, where bearer tokens
    /// would cross a network in clear: refused unless this says so.
    #[serde(default)]
    pub allow_plain_http: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_ms: default_header_read_timeout_ms(),
            body_read_timeout_ms: default_body_read_timeout_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
            max_connections: default_max_connections(),
            tls: None,
            allow_plain_http: false,
        }
    }
}

impl ServerConfig {
    /// The least idle timeout: above the event streams' keep-alive interval.
    pub const MIN_IDLE_TIMEOUT_MS: u64 = 16_000;

    /// Checks the bounds TOML types do not, and that tokens do not cross
    /// a network in clear from `listen`.
    pub(crate) fn check(&self, listen: SocketAddr) -> Result<(), String> {
        if self.tls.is_none() && !listen.ip().is_loopback() && !self.allow_plain_http {
            return Err(format!(
                "listen = \"{listen}\" is not a loopback address, and bearer tokens would cross the network in \
                 clear: give [server.tls] cert_file and key_file (`txmirror tls self-signed` makes a pair), or set \
                 [server] allow_plain_http = true"
            ));
        }
        let bounded = [
            ("header_read_timeout_ms", self.header_read_timeout_ms, 100, 600_000),
            ("body_read_timeout_ms", self.body_read_timeout_ms, 100, 3_600_000),
            ("idle_timeout_ms", self.idle_timeout_ms, Self::MIN_IDLE_TIMEOUT_MS, 3_600_000),
            ("max_connections", self.max_connections as u64, 1, 1_000_000),
        ];
        for (setting, value, low, high) in bounded {
            if !(low..=high).contains(&value) {
                return Err(format!("[server] {setting} = {value} is outside {low}..={high}"));
            }
        }
        Ok(())
    }

    /// The head's deadline.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    /// The body's deadline.
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }

    /// The idle bound.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
}

fn default_header_read_timeout_ms() -> u64 {
    10_000
}

fn default_body_read_timeout_ms() -> u64 {
    30_000
}

fn default_idle_timeout_ms() -> u64 {
    60_000
}

fn default_max_connections() -> usize {
    1024
}
