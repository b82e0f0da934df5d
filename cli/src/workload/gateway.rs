//! A payment gateway on 127.0.0.1 whose health the workload steers: it
//! answers `GET /health` and `POST /charges` according to its current phase.

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the gateway behaves for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Answers at once.
    Healthy,
    /// Charges take longer than the runtime's outbound timeout; the health
    /// check is slow too, but within it.
    Slow,
    /// Charges fail with 503; the health check says so only some of the time.
    Failing,
    /// Charges in this currency are declined with 502; others go through,
    /// and the health check is fine (the shop shape's regional outage).
    Declining(&'static str),
}

/// What a gateway does whatever its phase (the shop shape's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Traits {
    /// Charges of at least this many cents take `slow_ms` (a fraud check).
    pub(crate) slow_from_amount: Option<u64>,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// Milliseconds a charge takes in the slow phase (the health check: 60% of it).
    slow_ms: u64,
    /// Seeded draws for the health check in the failing phase.
    health_draws: u64,
    /// Charges received, by idempotency key, and how many were answered 2xx.
    charges: HashMap<String, (u32, u32)>,
    traits: Traits,
    /// Charges answered 429.
    refused: u32,
    /// Until when its quota is spent: whatever its phase, every charge is
    /// answered 429 until then.
    quota_spent_until: Option<Instant>,
}

/// A gateway and its counters. Stops when dropped.
#[derive(Debug)]
pub(crate) struct Gateway {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

/// What a gateway received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Charges {
    /// Charge requests received (unsafe calls that left a runtime).
    pub(crate) received: u32,
    /// Successful charges, by idempotency key (the order).
    pub(crate) booked: HashMap<String, u32>,
    /// Charge requests answered 429 (rate limited).
    pub(crate) refused: u32,
}

impl Gateway {
    /// Starts a gateway on an ephemeral port of 127.0.0.1.
    pub(crate) async fn start(seed: u64, slow_ms: u64, traits: Traits) -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(State {
            phase: Phase::Healthy,
            slow_ms,
            health_draws: seed,
            charges: HashMap::new(),
            traits,
            refused: 0,
            quota_spent_until: None,
        }));
        let shared = state.clone();
        let app = Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = shared.clone();
            async move { answer(&state, &method, &uri, &headers, &body).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, state, task })
    }

    /// `127.0.0.1:port`.
    pub(crate) fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// Sets the phase from now on.
    pub(crate) fn set_phase(&self, phase: Phase) {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).phase = phase;
    }

    /// Spends its quota for `how_long` from now: until then every charge is
    /// answered 429, with a `Retry-After` that says when the quota is back
    /// as HTTP can, in whole seconds rounded up.
    pub(crate) fn spend_quota(&self, how_long: Duration) {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.quota_spent_until = Some(Instant::now() + how_long);
    }

    /// Whether a charge sent now would be refused for a spent quota.
    pub(crate) fn quota_spent(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.quota_spent_until.is_some_and(|until| Instant::now() < until)
    }

    /// What it received so far.
    pub(crate) fn charges(&self) -> Charges {
        let state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Charges {
            received: state.charges.values().map(|(received, _)| received).sum(),
            booked: state
                .charges
                .iter()
                .filter(|(_, (_, ok))| *ok > 0)
                .map(|(key, (_, ok))| (key.clone(), *ok))
                .collect(),
            refused: state.refused,
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A splitmix64 step: the failing phase's health checks, reproducible.
fn draw(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) as f64 / u64::MAX as f64
}

/// What a charge's body says, as far as the shop shape's gateway cares.
fn charge_of(body: &[u8]) -> (String, u64) {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let currency = value["currency"].as_str().unwrap_or_default().to_string();
    (currency, value["amount_cents"].as_u64().unwrap_or(0))
}

async fn answer(
    state: &Mutex<State>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> axum::response::Response {
    let charge = method == Method::POST && uri.path() == "/charges";
    // A charge is booked when it arrives, even if its answer comes too late
    // for the client: as with a real gateway.
    let (status, delay_ms, body) = {
        let mut state = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let quota_back_in = state.quota_spent_until.map(|until| until.saturating_duration_since(Instant::now()));
        if let Some(left) = quota_back_in.filter(|left| charge && !left.is_zero()) {
            state.refused += 1;
            let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default();
            state.charges.entry(key.to_string()).or_default().0 += 1;
            // Whole seconds, rounded up: a client that waits as long finds
            // the quota back.
            let retry_after = left.as_millis().div_ceil(1000).to_string();
            let headers = [("content-type", "application/json"), ("retry-after", retry_after.as_str())];
            return (StatusCode::TOO_MANY_REQUESTS, headers, "{}").into_response();
        }
        let failing_health = draw(&mut state.health_draws) < 0.6;
        let (currency, amount) = if charge { charge_of(body) } else { (String::new(), 0) };
        let (status, mut delay_ms) = match (state.phase, charge) {
            (Phase::Healthy, true) => (StatusCode::CREATED, 0),
            (Phase::Healthy | Phase::Declining(_), false) => (StatusCode::OK, 0),
            (Phase::Slow, true) => (StatusCode::CREATED, state.slow_ms),
            (Phase::Slow, false) => (StatusCode::OK, state.slow_ms * 6 / 10),
            (Phase::Failing, true) => (StatusCode::SERVICE_UNAVAILABLE, 0),
            (Phase::Failing, false) if failing_health => (StatusCode::SERVICE_UNAVAILABLE, 0),
            (Phase::Failing, false) => (StatusCode::OK, 0),
            (Phase::Declining(declined), true) if declined == currency => (StatusCode::BAD_GATEWAY, 0),
            (Phase::Declining(_), true) => (StatusCode::CREATED, 0),
        };
        if charge && state.traits.slow_from_amount.is_some_and(|from| amount >= from) {
            delay_ms = delay_ms.max(state.slow_ms);
        }
        let body = if charge {
            let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default();
            let entry = state.charges.entry(key.to_string()).or_default();
            entry.0 += 1;
            if status.is_success() {
                entry.1 += 1;
            }
            format!(r#"{{"charge_id":"ch_{}_{}"}}"#, key, entry.0)
        } else {
            "{}".to_string()
        };
        (status, delay_ms, body)
    };
    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    (status, [("content-type", "application/json")], body).into_response()
}
