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
//! Path `charge` reads the key `receipt`, POSTs a charge of `amount` to the sink, writes the answer
//! under the key `receipt` and then, as `then` says, returns it (`ok`),
//! fails as unavailable (`unavailable`), leaves its output without the
//! `receipt` field (`no-receipt`, for a success criterion to fail), or
//! POSTs again with the amount the first answer gave (`twice`). Path
//! `quote` GETs a quote from the sink, POSTs a charge of it and fails as
//! unavailable: when the quote changes between attempts, so does the charge.
//! Path `whoami` returns the transaction id and the key of its first unsafe
//! call, as the guest SDK tells them.

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

/// One charge, then whatever the input says (see the module's documentation).
fn charge(input: Value) -> Result<Value, Error> {
    let sink = config::require("sink")?;
    // Read first, so that two charges at once conflict on the receipt
    // (one per `order`, if the input names one).
    let receipt_key = match input.get("order").and_then(Value::as_str) {
        Some(order) => format!("receipt-{order}"),
        None => "receipt".to_string(),
    };
    let _previous: Option<String> = kv::get("scratch", &receipt_key)?;
    let amount = input.get("amount").cloned().unwrap_or(Value::from(1));
    let response = Request::post(&sink).json(&serde_json::json!({ "charge": amount }))?.send()?;
    let receipt = String::from_utf8_lossy(&response.body).into_owned();
    kv::put("scratch", &receipt_key, &receipt)?;
    match input.get("then").and_then(Value::as_str).unwrap_or("ok") {
        "unavailable" => Err(Error::unavailable("the gateway answered too late to be trusted")),
        "no-receipt" => Ok(serde_json::json!({ "status": response.status })),
        "twice" => {
            let again = Request::post(&sink).json(&serde_json::json!({ "charge": receipt }))?.send()?;
            Ok(serde_json::json!({ "status": again.status, "receipt": receipt }))
        }
        _ => Ok(serde_json::json!({ "status": response.status, "receipt": receipt })),
    }
}

/// A charge of whatever the sink quotes, then a failure.
fn quote(_input: Value) -> Result<Value, Error> {
    let sink = config::require("sink")?;
    let quote = Request::get(&sink).send()?;
    let quoted = String::from_utf8_lossy(&quote.body).into_owned();
    Request::post(&sink).json(&serde_json::json!({ "charge": quoted }))?.send()?;
    Err(Error::unavailable("the quote expired"))
}

/// What the guest SDK says of the transaction.
fn whoami(_input: Value) -> Result<Value, Error> {
    Ok(serde_json::json!({
        "transaction_id": txmirror_guest::context::transaction_id(),
        "first_key": txmirror_guest::context::effect_key(1),
    }))
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
        "charge" => charge,
        "quote" => quote,
        "whoami" => whoami,
        "observe" => observe,
        "fetch" => fetch,
        "careless" => careless,
    }
}
