//! The commands that talk to a running service (`--server URL`), so that an
//! operator uses one tool for a local store and for the service.

use crate::commands::{exit_code, print};
use crate::exit::Failed;
use crate::render;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use txmirror_runtime::TxReport;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig, parse_pem};

/// A service and the token to call it with.
pub(crate) struct Remote {
    agent: ureq::Agent,
    base: String,
    token: String,
}

/// What the service answered, or why it could not be asked.
fn failed(code: u8, error: impl Into<anyhow::Error>) -> Failed {
    Failed { code, error: error.into() }
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token stays out of every log.
        f.debug_struct("Remote").field("base", &self.base).finish_non_exhaustive()
    }
}

impl Remote {
    pub(crate) fn new(server: &str, token: Option<String>, ca_file: Option<&Path>) -> Result<Self, Failed> {
        let token =
            token.ok_or_else(|| failed(2, anyhow::anyhow!("--server needs a token: --token or TXMIRROR_TOKEN")))?;
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            return Err(failed(2, anyhow::anyhow!("--server must be an http:// or https:// URL, not {server}")));
        }
        let roots = match ca_file {
            Some(path) => RootCerts::Specific(Arc::new(trusted(path)?)),
            None => RootCerts::WebPki,
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(600)))
            .tls_config(TlsConfig::builder().root_certs(roots).build())
            .build()
            .into();
        Ok(Self { agent, base: server.trim_end_matches('/').to_string(), token })
    }

    /// Calls the API; a JSON error from the service becomes the command's
    /// error with the service's code and message.
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        extra: &[(&str, &str)],
    ) -> Result<Value, Failed> {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.token));
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        // A request without a body declares no media type: the service
        // refuses a body of a type the endpoint does not take.
        let bytes = match body {
            Some((content_type, bytes)) => {
                request = request.header("content-type", content_type);
                bytes
            }
            None => Vec::new(),
        };
        let request = request.body(bytes).map_err(|e| failed(2, e))?;
        let mut response = self
            .agent
            .run(request)
            .map_err(|e| failed(5, anyhow::anyhow!("cannot reach the service at {}: {e}", self.base)))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().map_err(|e| failed(5, e))?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let code = value["error"]["code"].as_str().unwrap_or("unknown").to_string();
        let message = value["error"]["message"].as_str().map_or_else(|| value.to_string(), str::to_string);
        let exit = match code.as_str() {
            "unauthorized" | "forbidden" | "bad_request" => 2,
            "module_refused" => 3,
            "policy_refused" | "no_policy" | "not_found" | "conflict" | "idempotency_key_reused" => 4,
            _ => 5,
        };
        Err(failed(exit, anyhow::anyhow!("the service answered {status} {code}: {message}")))
    }
}

/// The certificates of a `--ca-file`.
fn trusted(path: &Path) -> Result<Vec<Certificate<'static>>, Failed> {
    let bad = |what: String| failed(2, anyhow::anyhow!("--ca-file {}: {what}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut certificates = Vec::new();
    for item in parse_pem(&pem) {
        if let PemItem::Certificate(certificate) = item.map_err(|e| bad(e.to_string()))? {
            certificates.push(certificate);
        }
    }
    if certificates.is_empty() {
        return Err(bad("holds no PEM certificate".into()));
    }
    Ok(certificates)
}

fn json_text(value: &Value) -> Result<String, Failed> {
    serde_json::to_string_pretty(value).map_err(|e| failed(5, e))
}

fn report(value: Value) -> Result<TxReport, Failed> {
    serde_json::from_value(value).map_err(|e| failed(5, anyhow::anyhow!("the service's report: {e}")))
}

/// Prints a transaction's report (text or JSON); the exit code of its outcome.
pub(crate) fn print_report(value: Value, json: bool) -> Result<u8, Failed> {
    let text = if json { json_text(&value)? } else { String::new() };
    let report = report(value)?;
    print(&if json { text } else { render::report(&report) });
    Ok(exit_code(&report))
}
