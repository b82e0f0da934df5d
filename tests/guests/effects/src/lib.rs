//! Attempts every kind of effect, to test that the mirror persists none.
//!
//! Path `all-effects` writes a key, writes a file under `/data`, emits an
//! event and POSTs to the URL in the `sink` config value. It carries on past
//! each refusal, so that the trace shows all four attempts, and reports
//! what happened to each. Path `observe` returns what the instance sees of
//! its environment: random values, the clock and a stored key. Path
//! `fetch` GETs the sink, which the mirror is allowed to do. Path
//! `careless` reports a validation issue and carries on regardless. Path
//! `sloppy` does the same without any outbound call: only the gate before
//! the commit can stop it. Path `diverge` POSTs to the sink and, if the
//! answer asks for it (`{"spin": n}`), loops n times before returning: a
//! stubbed answer can send the mirror down a longer road than the primary.

use serde::Serialize;
use serde_json::Value;
use txmirror_guest::http::Request;
use txmirror_guest::{Error, clock, config, events, kv, random};

#[derive(Serialize)]
struct EffectsReport {
    kv: Option<String>,
    file: Option<String>,
    event: Option<String>,
    post_status: Option<u16>,
    post_error: Option<String>,
}

fn all_effects(_input: Value) -> Result<EffectsReport, Error> {
    let kv = kv::put("scratch", "written", "by the guest").err().map(|e| e.to_string());
    let file = std::fs::write("/data/probe.txt", b"written by the guest").err().map(|e| e.to_string());
    let event = events::emit("effects", &serde_json::json!({ "hello": "world" })).err().map(|e| e.to_string());
    let sink = config::require("sink")?;
    let (post_status, post_error) = match Request::post(&sink).json(&serde_json::json!({ "effect": "post" }))?.send() {
        Ok(response) => (Some(response.status), None),
        Err(error) => (None, Some(error.to_string())),
    };
    Ok(EffectsReport { kv, file, event, post_status, post_error })
}

#[derive(Serialize)]
struct Observation {
    random: u64,
    random_bytes: Vec<u8>,
    now_unix_millis: u64,
    stored: Option<String>,
}

fn observe(_input: Value) -> Result<Observation, Error> {
    Ok(Observation {
        random: random::u64(),
        random_bytes: random::bytes(8),
        now_unix_millis: clock::now_unix_millis(),
        stored: kv::get("scratch", "written")?,
    })
}

#[derive(Serialize)]
struct Fetched {
    status: u16,
    body: String,
}

/// A safe request: the mirror may send it too.
fn fetch(_input: Value) -> Result<Fetched, Error> {
    let response = Request::get(&config::require("sink")?).send()?;
    Ok(Fetched { status: response.status, body: String::from_utf8_lossy(&response.body).into_owned() })
}

/// Reports a validation issue, yet goes on to write and POST: the runtime's
/// gate must stop it before the POST leaves.
fn careless(_input: Value) -> Result<EffectsReport, Error> {
    txmirror_guest::validation::report(&txmirror_guest::Issue::new("amount", "must be positive"));
    all_effects(Value::Null)
}

/// A validation issue, then a write and an event, and no outbound call.
fn sloppy(_input: Value) -> Result<Value, Error> {
    txmirror_guest::validation::report(&txmirror_guest::Issue::new("amount", "must be positive"));
    kv::put("scratch", "sloppy", "written anyway")?;
    events::emit("effects", &serde_json::json!({ "sloppy": true }))?;
    Ok(serde_json::json!({ "written": true }))
}

/// Loops as long as the sink's answer says.
fn diverge(_input: Value) -> Result<Value, Error> {
    let response = Request::post(&config::require("sink")?).json(&serde_json::json!({ "effect": "post" }))?.send()?;
    let answer: Value = response.json().unwrap_or(Value::Null);
    let spins = answer.get("spin").and_then(Value::as_u64).unwrap_or(0);
    let mut total = 0_u64;
    for i in 0..spins {
        total = std::hint::black_box(total.wrapping_add(i));
    }
    Ok(serde_json::json!({ "spins": spins, "total": total }))
}

txmirror_guest::transaction_module! {
    paths: {
        "all-effects" => all_effects,
        "sloppy" => sloppy,
        "diverge" => diverge,
        "observe" => observe,
        "fetch" => fetch,
        "careless" => careless,
    }
}
