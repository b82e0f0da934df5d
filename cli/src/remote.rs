//! The commands that talk to a running service (`--server URL`), so that an
//! operator uses one tool for a local store and for the service.

use crate::{Failed, print, render};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use txmirror_runtime::RecordedTransaction;
use txmirror_runtime::TxReport;

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

impl Remote {
    pub(crate) fn new(server: &str, token: Option<String>) -> Result<Self, Failed> {
        let token =
            token.ok_or_else(|| failed(2, anyhow::anyhow!("--server needs a token: --token or TXMIRROR_TOKEN")))?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(600)))
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
        let (content_type, bytes) = body.unwrap_or(("application/octet-stream", Vec::new()));
        let request = request.header("content-type", content_type).body(bytes).map_err(|e| failed(2, e))?;
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
    Ok(crate::exit_code(&report))
}

pub(crate) fn tx_show(remote: &Remote, id: &str, json: bool) -> Result<u8, Failed> {
    let view = remote.call("GET", &format!("/v1/transactions/{id}"), None, &[])?;
    if json {
        print(&json_text(&view)?);
        return Ok(0);
    }
    match serde_json::from_value::<Option<RecordedTransaction>>(view["record"].clone()) {
        Ok(Some(record)) => print(&render::report(&TxReport::from_record(record))),
        Ok(None) => print(&format!("transaction {id} is pending (accepted, not ended yet)")),
        Err(e) => return Err(failed(5, anyhow::anyhow!("the service's record: {e}"))),
    }
    Ok(0)
}

pub(crate) fn tx_list(remote: &Remote, status: Option<&str>, limit: usize) -> Result<u8, Failed> {
    let mut query = format!("/v1/transactions?limit={limit}");
    if let Some(status) = status {
        query.push_str(&format!("&status={status}"));
    }
    let list = remote.call("GET", &query, None, &[])?;
    for line in list["transactions"].as_array().into_iter().flatten() {
        let decisions: Vec<&str> =
            line["decisions"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        print(&format!(
            "{}  {}  path {}  {} attempts{}{}",
            line["transaction_id"].as_str().unwrap_or_default(),
            line["status"].as_str().unwrap_or_default(),
            line["path"].as_str().unwrap_or("-"),
            line["attempts"],
            line["failure"].as_str().map(|f| format!("  {f}")).unwrap_or_default(),
            if decisions.is_empty() { String::new() } else { format!("  gate: {}", decisions.join(", ")) },
        ));
    }
    Ok(0)
}

pub(crate) fn submit(
    remote: &Remote,
    module: &str,
    body: Value,
    idempotency_key: Option<&str>,
    asynchronous: bool,
    json: bool,
) -> Result<u8, Failed> {
    let mut headers = Vec::new();
    if let Some(key) = idempotency_key {
        headers.push(("idempotency-key", key));
    }
    if asynchronous {
        headers.push(("prefer", "respond-async"));
    }
    let bytes = serde_json::to_vec(&body).map_err(|e| failed(5, e))?;
    let answer = remote.call(
        "POST",
        &format!("/v1/modules/{module}/transactions"),
        Some(("application/json", bytes)),
        &headers,
    )?;
    if asynchronous {
        print(&format!("accepted {}", answer["transaction_id"].as_str().unwrap_or_default()));
        return Ok(0);
    }
    print_report(answer, json)
}

pub(crate) fn upload(remote: &Remote, file: &Path) -> Result<u8, Failed> {
    let bytes = std::fs::read(file).map_err(|e| failed(3, anyhow::anyhow!("cannot read {}: {e}", file.display())))?;
    let info = remote.call("POST", "/v1/modules", Some(("application/wasm", bytes)), &[])?;
    print(&format!(
        "module {}\npaths: {}",
        info["hash"].as_str().unwrap_or_default(),
        info["paths"].as_array().into_iter().flatten().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")
    ));
    Ok(0)
}

pub(crate) fn put_policy(remote: &Remote, module: &str, file: &Path) -> Result<u8, Failed> {
    let text = std::fs::read(file).map_err(|e| failed(4, anyhow::anyhow!("cannot read {}: {e}", file.display())))?;
    remote.call("PUT", &format!("/v1/modules/{module}/policy"), Some(("application/toml", text)), &[])?;
    print(&format!("policy of {module} set from {}", file.display()));
    Ok(0)
}

pub(crate) fn dlq_list(remote: &Remote) -> Result<u8, Failed> {
    for letter in remote.call("GET", "/v1/dlq", None, &[])?.as_array().into_iter().flatten() {
        print(&format!(
            "{}  path {}  {} attempts  {}: {}",
            letter["transaction_id"].as_str().unwrap_or_default(),
            letter["path"].as_str().unwrap_or_default(),
            letter["attempts"],
            letter["failure"]["kind"].as_str().unwrap_or_default(),
            letter["failure"]["message"].as_str().unwrap_or_default(),
        ));
    }
    Ok(0)
}

pub(crate) fn show(remote: &Remote, path: &str) -> Result<u8, Failed> {
    print(&json_text(&remote.call("GET", path, None, &[])?)?);
    Ok(0)
}

pub(crate) fn post(remote: &Remote, path: &str) -> Result<Value, Failed> {
    remote.call("POST", path, None, &[])
}

pub(crate) fn delete(remote: &Remote, path: &str) -> Result<u8, Failed> {
    remote.call("DELETE", path, None, &[])?;
    Ok(0)
}
