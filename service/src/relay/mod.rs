//! The webhook relay: the events of chosen streams POSTed to other
//! systems (`[[webhooks]]` in the service's configuration).
//!
//! Each webhook is a consumer group of its streams, `webhook:NAME`, whose
//! offset is committed in the tenant's store as any group's: delivery is
//! at least once, in order per stream, and goes on after a restart or on
//! another node from the last acknowledged event. Each delivery carries
//! `webhook-id` (`txm_TENANT_OFFSET`, the same on every retry, for the
//! receiver to deduplicate by), `webhook-timestamp` and `webhook-signature`
//! as the Standard Webhooks specification asks ([`signature`]).
//!
//! An event that fails is retried after a delay that doubles (with a fifth
//! of jitter) up to `max_backoff_ms`, or after the `Retry-After` the
//! endpoint asked for; the events behind it wait. A circuit breaker per
//! endpoint (the runtime's [`Breaker`]) stops the attempts while the
//! endpoint is unwell (no answer, a timeout, `5xx`, `408`, `429`; another
//! `4xx` is the event's failure alone),
//! and those waits do not count against the event. After `max_attempts`
//! the event is parked as a dead letter in the catalog, and the relay goes
//! on; an operator lists and replays the letters (`/v1/webhooks`).
//!
//! A webhook with `statuses` also relays the runtime's status stream
//! (`txmirror.status`): each transaction's end, written with its record, so
//! that an end is told at least once if and only if it was recorded. With
//! `statuses = "requested"` it is told only the ends of the transactions
//! whose submission named it (`"notify"`); the others are passed over as
//! delivered. A status is delivered as `"type": "txmirror.status"`.
//!
//! With several nodes, one relays each webhook at a time: it holds the role
//! `webhook/TENANT/NAME` in the catalog, a lease as long as the node's, and
//! renews it before each delivery. A node that dies loses it when it lapses
//! and another takes it over from the group's offset. A delivery in flight
//! when the lease lapses may be sent again by the next holder, which the
//! receiver's deduplication absorbs. The breaker is the relaying node's
//! own: only that node calls the endpoint.

mod delivery;
mod signature;

use crate::catalog::DeliveryLetter;
use crate::config::{Statuses, WebhookConfig};
use crate::{AppState, ServiceError, Tenant};
use bytes::Bytes;
use delivery::{Delivery, HttpClient, Outcome};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use txmirror_runtime::store::StoredEvent;
use txmirror_runtime::vocab::STATUS_STREAM;
use txmirror_runtime::{Breaker, BreakerRule};

/// How often an idle relay looks for new events: other nodes' commits
/// reach this one only through the store.
const POLL_EVERY: Duration = Duration::from_millis(50);
/// Events read from a stream at once.
const PAGE: usize = 256;
/// The most letters one replay sends.
pub const MAX_REPLAY: usize = 1_000;

/// The consumer group a webhook's deliveries are acknowledged under.
pub fn group_of(webhook: &str) -> String {
    format!("webhook:{webhook}")
}

/// Every webhook of the service, relayed or not by this node.
#[derive(Debug, Default)]
pub struct Relays {
    webhooks: Vec<Arc<Webhook>>,
}

/// One webhook, as this node knows it.
#[derive(Debug)]
pub(crate) struct Webhook {
    config: WebhookConfig,
    secret: Vec<u8>,
    client: HttpClient,
    breaker: Mutex<Breaker>,
    /// When the breaker opens.
    rule: BreakerRule,
    /// Events delivered, attempts failed and events parked by this node.
    delivered: AtomicU64,
    failed: AtomicU64,
    parked: AtomicU64,
    /// What the last failed attempt met.
    last_error: Mutex<Option<String>>,
}

/// A webhook as `GET /v1/webhooks` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    /// Its name.
    pub name: String,
    /// Where it delivers.
    pub url: String,
    /// Its streams, and the offset delivered through in each (the status
    /// stream, `txmirror.status`, among them if it receives statuses).
    pub streams: Vec<StreamProgress>,
    /// The node relaying it now, if any.
    pub relayed_by: Option<String>,
    /// Its endpoint's breaker on this node: `closed`, `open` or `half_open`.
    pub breaker: String,
    /// Events this node delivered since it started.
    pub delivered: u64,
    /// Attempts that failed on this node since it started.
    pub failed_attempts: u64,
    /// Events parked as dead letters (all nodes).
    pub dead_letters: u64,
    /// What the last failed attempt on this node met.
    pub last_error: Option<String>,
}

/// How far a webhook has come in one stream.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StreamProgress {
    /// The stream.
    pub stream: String,
    /// The offset of the last event delivered or parked (0: none yet).
    pub delivered_through: u64,
}

/// What a replay of dead letters did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReplayReport {
    /// Letters delivered, and so removed.
    pub delivered: usize,
    /// Letters that failed again, and stay (with their attempts counted).
    pub failed: Vec<DeliveryLetter>,
}

impl Relays {
    /// The webhooks of `config`, checked (their secrets read).
    pub(crate) fn new(configs: &[WebhookConfig]) -> Result<Self, String> {
        let webhooks = configs
            .iter()
            .map(|config| {
                let secret = config.secret_bytes().map_err(|reason| format!("webhook `{}` {reason}", config.name))?;
                Ok(Arc::new(Webhook {
                    config: config.clone(),
                    secret,
                    client: delivery::client(),
                    breaker: Mutex::default(),
                    rule: BreakerRule {
                        failures: config.breaker_failures,
                        open_for: Duration::from_millis(config.breaker_open_ms),
                    },
                    delivered: AtomicU64::default(),
                    failed: AtomicU64::default(),
                    parked: AtomicU64::default(),
                    last_error: Mutex::default(),
                }))
            })
            .collect::<Result<_, String>>()?;
        Ok(Self { webhooks })
    }

    /// The webhook `name` of `tenant`.
    pub(crate) fn webhook(&self, tenant: &str, name: &str) -> Result<&Arc<Webhook>, ServiceError> {
        self.webhooks
            .iter()
            .find(|webhook| webhook.config.tenant == tenant && webhook.config.name == name)
            .ok_or_else(|| ServiceError::NotFound(format!("no webhook `{name}`")))
    }

    /// The webhooks of `tenant`.
    pub(crate) fn of_tenant<'a>(&'a self, tenant: &'a str) -> impl Iterator<Item = &'a Arc<Webhook>> + 'a {
        self.webhooks.iter().filter(move |webhook| webhook.config.tenant == tenant)
    }
}

/// Starts one relay task per webhook.
pub(crate) fn start(state: &AppState) {
    for webhook in &state.relays.webhooks {
        tokio::spawn(relay(state.downgrade(), webhook.clone()));
    }
}

/// The role a node plays while it relays `webhook`.
fn role_of(webhook: &WebhookConfig) -> String {
    format!("webhook/{}/{}", webhook.tenant, webhook.name)
}

/// Relays one webhook while the service runs: leads it, or waits for the
/// lease of the node that does to lapse.
async fn relay(weak: crate::WeakState, webhook: Arc<Webhook>) {
    let role = role_of(&webhook.config);
    // What this node knows of each stream's head event in its attempts:
    // its offset, the attempts made, and when the next may go.
    let mut heads: HashMap<String, Head> = HashMap::new();
    let mut leading = false;
    loop {
        // Nothing of the service is held between passes, so that a
        // service dropped without a shutdown closes its stores.
        let Some(state) = weak.upgrade() else { break };
        let Some(tenant) = state.tenant(&webhook.config.tenant).cloned() else { break };
        if !state.admission.is_open() {
            if leading {
                let _ = state.catalog.resign(&role, &state.node.id);
            }
            break;
        }
        let lease_ms = state.node.lease_ms();
        let now_leading = match state.catalog.lead(&role, &state.node.id, lease_ms) {
            Ok(leading) => leading,
            Err(error) => {
                tracing::warn!(webhook = %webhook.config.name, %error, "cannot renew the relay's lease");
                false
            }
        };
        if now_leading && !leading {
            tracing::info!(webhook = %webhook.config.name, "this node relays the webhook");
            // Another node may have delivered since this one last led.
            heads.clear();
        }
        leading = now_leading;
        let wait = if leading {
            let budget = Instant::now() + state.node.lease / 3;
            match webhook.pass(&state, &tenant, &mut heads, budget).await {
                Ok(Pass::Busy) => Duration::ZERO,
                Ok(Pass::Idle(wait)) => wait,
                Err(error) => {
                    tracing::warn!(webhook = %webhook.config.name, %error, "the relay cannot read or acknowledge its streams");
                    POLL_EVERY
                }
            }
        } else {
            state.node.lease / 3
        };
        // Even an open breaker's long wait is cut to renew the role in time.
        let wait = wait.min(state.node.lease / 3);
        drop((state, tenant));
        if wait.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(wait).await;
        }
    }
}

/// A stream's head event in its attempts.
#[derive(Debug, Clone)]
struct Head {
    offset: u64,
    attempts: u32,
    not_before: Instant,
}

/// What one pass over a webhook's streams found.
enum Pass {
    /// It delivered until its time ran out: go on at once.
    Busy,
    /// Nothing to send before this long.
    Idle(Duration),
}

impl Webhook {
    /// Delivers what it can of each stream until `budget`.
    async fn pass(
        &self,
        state: &AppState,
        tenant: &Tenant,
        heads: &mut HashMap<String, Head>,
        budget: Instant,
    ) -> Result<Pass, ServiceError> {
        let runtime = tenant.runtime();
        let group = group_of(&self.config.name);
        let mut wait = POLL_EVERY;
        for stream in self.streams() {
            let stream = &stream;
            let mut after = runtime.group_offset(stream, &group)?;
            'pages: loop {
                let events = runtime.events(stream, after, PAGE)?;
                if events.is_empty() {
                    break;
                }
                let mut delivered_through = None;
                for event in events {
                    let now = Instant::now();
                    if now >= budget {
                        self.acknowledge(runtime, stream, &group, delivered_through)?;
                        return Ok(Pass::Busy);
                    }
                    if !self.wants(&event) {
                        delivered_through = Some(event.sequence);
                        after = event.sequence;
                        continue;
                    }
                    let head = heads.entry(stream.clone()).or_insert(Head { offset: 0, attempts: 0, not_before: now });
                    if head.offset != event.sequence {
                        *head = Head { offset: event.sequence, attempts: 0, not_before: now };
                    }
                    if now < head.not_before {
                        wait = wait.min(head.not_before - now);
                        self.acknowledge(runtime, stream, &group, delivered_through)?;
                        break 'pages;
                    }
                    let permitted = self.breaker.lock().unwrap_or_else(PoisonError::into_inner).permit(now);
                    if !permitted {
                        self.acknowledge(runtime, stream, &group, delivered_through)?;
                        let opens = self.breaker.lock().unwrap_or_else(PoisonError::into_inner).opens_again_at();
                        return Ok(Pass::Idle(opens.map_or(POLL_EVERY, |at| at.saturating_duration_since(now))));
                    }
                    let delivery = self.delivery_of(tenant.name(), &event);
                    let outcome = delivery::send(
                        &self.client,
                        &self.config.url,
                        &self.secret,
                        &delivery,
                        Duration::from_millis(self.config.timeout_ms),
                    )
                    .await;
                    tenant.metrics().webhook_attempt(&self.config.name, outcome_label(&outcome));
                    match outcome {
                        Outcome::Delivered => {
                            self.breaker.lock().unwrap_or_else(PoisonError::into_inner).succeeded();
                            self.delivered.fetch_add(1, Ordering::Relaxed);
                            delivered_through = Some(event.sequence);
                            after = event.sequence;
                        }
                        Outcome::Unavailable { error, retry_after } => {
                            self.breaker
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .failed(Instant::now(), self.rule);
                            let parked =
                                self.failed_attempt(state, tenant, head, &event, &delivery, error, retry_after)?;
                            if !parked {
                                self.acknowledge(runtime, stream, &group, delivered_through)?;
                                break 'pages;
                            }
                            delivered_through = Some(event.sequence);
                            after = event.sequence;
                        }
                        Outcome::Refused { error } => {
                            // The endpoint answers: it is well.
                            self.breaker.lock().unwrap_or_else(PoisonError::into_inner).succeeded();
                            let parked = self.failed_attempt(state, tenant, head, &event, &delivery, error, None)?;
                            if !parked {
                                self.acknowledge(runtime, stream, &group, delivered_through)?;
                                break 'pages;
                            }
                            delivered_through = Some(event.sequence);
                            after = event.sequence;
                        }
                    }
                    tenant.metrics().webhook_breaker(&self.config.name, self.breaker_state().gauge());
                }
                self.acknowledge(runtime, stream, &group, delivered_through)?;
            }
        }
        Ok(Pass::Idle(wait))
    }

    /// The streams it relays: its own, and the status stream if it asks
    /// for statuses.
    fn streams(&self) -> Vec<String> {
        let statuses = self.config.statuses.map(|_| STATUS_STREAM.to_string());
        self.config.streams.iter().cloned().chain(statuses).collect()
    }

    /// Whether it is to be told of `event`: every event of its own streams;
    /// of the status stream, every end or those whose submission named it.
    fn wants(&self, event: &StoredEvent) -> bool {
        if event.stream != STATUS_STREAM || self.config.statuses != Some(Statuses::Requested) {
            return true;
        }
        let notify = serde_json::from_slice::<serde_json::Value>(&event.payload)
            .ok()
            .and_then(|payload| payload.get("notify").and_then(|n| n.as_str().map(str::to_owned)));
        notify.as_deref() == Some(self.config.name.as_str())
    }

    /// Notes a failed attempt of `event`: schedules the next, or parks the
    /// event once it has had its attempts. Whether it was parked.
    #[allow(clippy::too_many_arguments)]
    fn failed_attempt(
        &self,
        state: &AppState,
        tenant: &Tenant,
        head: &mut Head,
        event: &StoredEvent,
        delivery: &Delivery,
        error: String,
        retry_after: Option<Duration>,
    ) -> Result<bool, ServiceError> {
        self.failed.fetch_add(1, Ordering::Relaxed);
        head.attempts += 1;
        tracing::debug!(webhook = %self.config.name, offset = event.sequence, attempts = head.attempts, %error, "a delivery failed");
        *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(error.clone());
        if head.attempts < self.config.max_attempts {
            let delay = backoff(&self.config, head.attempts, retry_after);
            head.not_before = Instant::now() + delay;
            return Ok(false);
        }
        let letter = DeliveryLetter {
            tenant: tenant.name().to_string(),
            webhook: self.config.name.clone(),
            stream: event.stream.clone(),
            offset: event.sequence,
            id: delivery.id.clone(),
            body: String::from_utf8_lossy(&delivery.body).into_owned(),
            attempts: head.attempts,
            last_error: error,
            parked_unix_ms: unix_ms(),
        };
        state.catalog.park_delivery(&letter)?;
        self.parked.fetch_add(1, Ordering::Relaxed);
        tenant.metrics().webhook_attempt(&self.config.name, "parked");
        tracing::warn!(webhook = %self.config.name, offset = event.sequence, attempts = head.attempts, "an undeliverable event was parked as a dead letter");
        Ok(true)
    }

    /// Commits the group's offset through `offset`, if anything went.
    fn acknowledge(
        &self,
        runtime: &txmirror_runtime::Runtime,
        stream: &str,
        group: &str,
        offset: Option<u64>,
    ) -> Result<(), ServiceError> {
        if let Some(offset) = offset {
            runtime.acknowledge(stream, group, offset)?;
        }
        Ok(())
    }

    /// The delivery of `event`: its id and its body.
    fn delivery_of(&self, tenant: &str, event: &StoredEvent) -> Delivery {
        let id = format!("txm_{tenant}_{}", event.sequence);
        let view = crate::api::StreamEvent::from(event.clone());
        let kind = if event.stream == STATUS_STREAM { "txmirror.status" } else { "txmirror.event" };
        let body = serde_json::json!({
            "type": kind,
            "id": id,
            "stream": event.stream,
            "offset": view.offset,
            "version": view.version,
            "transaction_id": view.transaction_id,
            "payload": view.payload,
            "payload_text": view.payload_text,
        });
        Delivery { id, body: Bytes::from(body.to_string()) }
    }

    fn breaker_state(&self) -> txmirror_runtime::BreakerState {
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner).state(Instant::now())
    }

    /// The webhook as the API shows it.
    pub(crate) fn view(&self, state: &AppState, tenant: &Tenant) -> Result<WebhookView, ServiceError> {
        let group = group_of(&self.config.name);
        let streams = self
            .streams()
            .into_iter()
            .map(|stream| {
                let delivered_through = tenant.runtime().group_offset(&stream, &group)?;
                Ok(StreamProgress { stream, delivered_through })
            })
            .collect::<Result<_, ServiceError>>()?;
        let relayed_by = state.catalog.role_holder(&role_of(&self.config))?;
        Ok(WebhookView {
            name: self.config.name.clone(),
            url: self.config.url.clone(),
            streams,
            relayed_by,
            breaker: self.breaker_state().as_str().to_string(),
            delivered: self.delivered.load(Ordering::Relaxed),
            failed_attempts: self.failed.load(Ordering::Relaxed),
            dead_letters: state.catalog.delivery_letter_count(tenant.name(), &self.config.name)?,
            last_error: self.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        })
    }

    /// Whether a submission may name it to be told of its transaction's end.
    pub(crate) fn tells_statuses(&self) -> bool {
        self.config.statuses.is_some()
    }

    /// The webhook's dead letters, at most `limit`.
    pub(crate) fn dead_letters(&self, state: &AppState, limit: usize) -> Result<Vec<DeliveryLetter>, ServiceError> {
        Ok(state.catalog.delivery_letters(&self.config.tenant, &self.config.name, limit)?)
    }

    /// Sends each dead letter once more (the breaker aside: an operator
    /// asked), removing those delivered.
    pub(crate) async fn replay(&self, state: &AppState) -> Result<ReplayReport, ServiceError> {
        let letters = self.dead_letters(state, MAX_REPLAY)?;
        let mut report = ReplayReport { delivered: 0, failed: Vec::new() };
        for mut letter in letters {
            let delivery = Delivery { id: letter.id.clone(), body: Bytes::from(letter.body.clone()) };
            let timeout = Duration::from_millis(self.config.timeout_ms);
            match delivery::send(&self.client, &self.config.url, &self.secret, &delivery, timeout).await {
                Outcome::Delivered => {
                    state.catalog.remove_delivery_letter(
                        &letter.tenant,
                        &letter.webhook,
                        &letter.stream,
                        letter.offset,
                    )?;
                    self.delivered.fetch_add(1, Ordering::Relaxed);
                    report.delivered += 1;
                }
                Outcome::Unavailable { error, .. } | Outcome::Refused { error } => {
                    self.failed.fetch_add(1, Ordering::Relaxed);
                    letter.attempts += 1;
                    letter.last_error = error;
                    state.catalog.park_delivery(&letter)?;
                    report.failed.push(letter);
                }
            }
        }
        Ok(report)
    }
}

fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Delivered => "delivered",
        Outcome::Unavailable { .. } => "unavailable",
        Outcome::Refused { .. } => "refused",
    }
}

/// The delay before attempt `attempts + 1`: `backoff_ms` doubled at each
/// attempt, up to `max_backoff_ms`, with a fifth of jitter (so that a
/// fleet of relays does not retry in step); at least what `Retry-After`
/// asked, within `max_backoff_ms`.
fn backoff(config: &WebhookConfig, attempts: u32, retry_after: Option<Duration>) -> Duration {
    let doubled = config.backoff_ms.saturating_mul(1u64 << attempts.saturating_sub(1).min(32));
    let base = doubled.min(config.max_backoff_ms);
    let jitter = rand::random_range(0.8..1.2);
    let delay = Duration::from_millis(base).mul_f64(jitter);
    let asked = retry_after.unwrap_or_default().min(Duration::from_millis(config.max_backoff_ms));
    delay.max(asked)
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> WebhookConfig {
        let text = r#"
            name = "w"
            tenant = "t"
            url = "http://127.0.0.1:1/"
            streams = ["s"]
            secret = "a secret of sixteen bytes or more"
            backoff_ms = 100
            max_backoff_ms = 1000
        "#;
        toml::from_str(text).expect("a webhook")
    }

    #[test]
    fn retries_back_off_doubling_within_bounds_and_honour_retry_after() {
        let config = config();
        for (attempts, expected) in [(1, 100.0), (2, 200.0), (3, 400.0), (4, 800.0), (5, 1000.0), (40, 1000.0)] {
            let delay = backoff(&config, attempts, None).as_secs_f64() * 1000.0;
            assert!((expected * 0.8..=expected * 1.2).contains(&delay), "attempt {attempts}: {delay} ms");
        }
        assert_eq!(backoff(&config, 1, Some(Duration::from_millis(700))), Duration::from_millis(700));
        assert_eq!(
            backoff(&config, 1, Some(Duration::from_secs(3600))),
            Duration::from_millis(1000),
            "Retry-After within max_backoff_ms"
        );
    }
}
