//! A webhook receiver on 127.0.0.1: it checks each delivery's Standard
//! Webhooks signature, keeps what it received, and can be down (its port
//! closed), refuse events, or lose its answer to a delivery it received.

#![allow(clippy::unwrap_used, dead_code, reason = "tests")]

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;

/// The signing secret the tests configure.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One delivery as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub body: Value,
    /// Whether its signature was the secret's.
    pub signed: bool,
    /// Whether its timestamp was within five minutes of the receiver's clock.
    pub fresh: bool,
}

#[derive(Debug, Default)]
struct Shared {
    received: Vec<Received>,
    /// Events (by payload `amount`) refused with `422`.
    refuse_amounts: HashSet<u64>,
    /// Ids whose first delivery is kept but answered `500`, as if the
    /// answer were lost.
    lose_first_answer: HashSet<String>,
    /// Requests still to answer `503` with `Retry-After: 0`.
    unavailable: usize,
}

/// The receiver: its address is fixed from the start, its socket open
/// only while it is up.
pub struct Receiver {
    pub address: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl Receiver {
    /// A receiver on a free port of 127.0.0.1, down until [`Receiver::up`].
    pub fn down() -> Self {
        let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        Self { address, shared: Arc::default(), server: Mutex::default() }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("http://{}/hooks/txmirror", self.address)
    }

    /// Opens its port and serves.
    pub async fn up(&self) {
        let listener = tokio::net::TcpListener::bind(self.address).await.unwrap();
        let app = Router::new().route("/hooks/txmirror", post(receive)).with_state(self.shared.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        *self.server.lock().unwrap() = Some(server);
    }

    /// Closes its port (connections in progress are dropped).
    pub fn close(&self) {
        if let Some(server) = self.server.lock().unwrap().take() {
            server.abort();
        }
    }

    /// What it received, in order, duplicates included.
    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().unwrap().received.clone()
    }

    /// Refuses events of this `amount` with `422` from now on (or accepts
    /// them again).
    pub fn refuse_amount(&self, amount: u64, refuse: bool) {
        let mut shared = self.shared.lock().unwrap();
        if refuse {
            shared.refuse_amounts.insert(amount);
        } else {
            shared.refuse_amounts.remove(&amount);
        }
    }

    /// Keeps the first delivery of `id` but answers it `500`.
    pub fn lose_first_answer(&self, id: &str) {
        self.shared.lock().unwrap().lose_first_answer.insert(id.to_string());
    }

    /// Answers the next `count` requests `503`.
    pub fn unavailable_for(&self, count: usize) {
        self.shared.lock().unwrap().unavailable = count;
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.close();
    }
}

async fn receive(State(shared): State<Arc<Mutex<Shared>>>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let (id, timestamp, signature) = (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"));
    let key = base64::engine::general_purpose::STANDARD.decode(SECRET.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&body);
    let expected = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let fresh = timestamp.parse::<u64>().is_ok_and(|at| at.abs_diff(now) < 300);
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON".into());
    };
    let mut shared = shared.lock().unwrap();
    if shared.unavailable > 0 {
        shared.unavailable -= 1;
        return (StatusCode::SERVICE_UNAVAILABLE, "warming up".into());
    }
    if body["payload"]["amount"].as_u64().is_some_and(|amount| shared.refuse_amounts.contains(&amount)) {
        return (StatusCode::UNPROCESSABLE_ENTITY, "this amount is not accepted".into());
    }
    shared.received.push(Received { id: id.clone(), body, signed: signature == expected, fresh });
    if shared.lose_first_answer.remove(&id) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "kept, but the answer is lost".into());
    }
    (StatusCode::NO_CONTENT, String::new())
}
