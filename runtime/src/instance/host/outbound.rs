//! Outbound HTTP: the host decides per request whether it goes out.
//!
//! - A host the policy does not grant is refused (`HTTP-request-denied`),
//!   however it is spelt (see `policy/hosts.rs`).
//! - The primary sends what is granted, within the policy's timeout.
//! - The mirror sends safe requests (GET, HEAD) to measure them, and never
//!   sends an unsafe one: it records it and answers with a stub from the
//!   policy, else the primary's last real response to the same endpoint,
//!   else a synthesised `200 {}`. A GET or HEAD that carries a body or a
//!   method-override header is unsafe: a server may act on either.
//! - A stubbed answer carries nothing the guest could tell it by (the trace
//!   says where it came from), so that a module cannot behave for the
//!   mirror and otherwise for real.
//! - A host whose circuit breaker is open (`[breaker]`) is not called: the
//!   primary's call and the mirror's (sent or stubbed) fail at once, so the
//!   mirror shows the predictor what the primary will meet. Only the
//!   primary takes a half-open breaker's trial. A host's concurrency limit
//!   holds each real call until a slot frees, within the outbound timeout.

use crate::policy::{MirrorSettings, Policy, SafeCalls, Stub};
use crate::trace::{HostCall, HttpOutcome, TraceRecorder};
use crate::vocab::{CancelToken, Role};
use crate::vocab::{HostGrant, HostPort, endpoint_name};
use bytes::Bytes;
use http::{Method, Response};
use http_body_util::{BodyExt, Full, Limited};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use super::MAX_RESPONSE_BYTES;
use super::journal::{EffectJournal, Prepared};
use crate::adjust::breaker::BreakerRule;
use crate::adjust::breakers::Breakers;
use crate::adjust::gate::{Gate, Verdict};
use crate::adjust::timeouts::AttemptTimeouts;
use crate::predict::InputProfile;
use crate::predict::history::{EndpointHealth, Exchange};
use tracing::Instrument as _;

/// The last real response of primaries to each endpoint, shared by the runtime.
///
/// The mirror answers unsafe requests from here when the policy has no stub,
/// so it follows the primary's control flow as closely as possible.
#[derive(Debug, Default)]
pub struct EndpointMemory {
    last: Mutex<HashMap<String, (u16, Bytes)>>,
    /// Latency and error rate of every endpoint really called.
    pub(crate) health: EndpointHealth,
    /// The hosts' circuit breakers.
    pub(crate) breakers: Breakers,
}

/// How many endpoints [`EndpointMemory`] remembers.
const REMEMBERED_ENDPOINTS: usize = 4096;

impl EndpointMemory {
    fn remember(&self, endpoint: String, status: u16, body: Bytes) {
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.len() >= REMEMBERED_ENDPOINTS && !last.contains_key(&endpoint) {
            last.clear();
        }
        last.insert(endpoint, (status, body));
    }

    fn recall(&self, endpoint: &str) -> Option<(u16, Bytes)> {
        self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(endpoint).cloned()
    }
}

/// The `wasi:http` hooks of one instance.
pub(crate) struct OutboundHooks {
    pub(crate) role: Role,
    pub(crate) policy: Arc<Policy>,
    pub(crate) trace: TraceRecorder,
    pub(crate) memory: Arc<EndpointMemory>,
    /// The primary's effect gate.
    pub(crate) gate: Option<Arc<Gate>>,
    /// Whether this instance runs beside a primary (not in a dry run).
    pub(crate) beside_primary: bool,
    /// The attempt's timeouts, which the gate may raise.
    pub(crate) timeouts: Arc<AttemptTimeouts>,
    /// Unsafe requests the instance has made so far.
    pub(crate) unsafe_calls: usize,
    /// The transaction's input, whose conditions each request is learnt under.
    pub(crate) input: Arc<InputProfile>,
    /// The transaction's effect journal, if it keeps one (not in a dry run).
    pub(crate) journal: Option<Arc<EffectJournal>>,
    /// Set when the attempt lost a hedge race: a request in flight stops.
    pub(crate) cancelled: Option<Arc<AtomicBool>>,
    /// Set when the caller cancels the transaction: no unsafe call is sent
    /// after it, and a safe one in flight stops waiting.
    pub(crate) caller_cancel: Option<CancelToken>,
}

/// Why a call was not sent, or stopped waiting, after its caller cancelled
/// the transaction.
const CALLER_CANCELLED: &str = "stopped: its caller cancelled the transaction";

/// How often a request in flight looks whether its attempt lost its race.
const CANCEL_POLL: Duration = Duration::from_millis(5);

type ResponseFuture = Box<
    dyn Future<Output = Result<(Response<WasiBody>, Box<dyn Future<Output = Result<(), HttpError>> + Send>), HttpError>>
        + Send,
>;

fn full_body(bytes: Bytes) -> WasiBody {
    Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

fn done() -> Box<dyn Future<Output = Result<(), HttpError>> + Send> {
    Box::new(async { Ok(()) })
}

/// Headers by which a server may take a request for another method.
const METHOD_OVERRIDES: [&str; 3] = ["x-http-method-override", "x-http-method", "x-method-override"];

/// Whether a request cannot act: of a method the mirror may send (GET and
/// HEAD unless `[mirror] send_methods` says otherwise), with no body
/// declared and no method override. (A body streamed without a declared
/// length is found when the mirror reads it, before anything is sent.)
fn is_safe(request: &http::Request<WasiBody>, mirror: &MirrorSettings) -> bool {
    let headers = request.headers();
    mirror.may_send(request.method().as_str())
        && !METHOD_OVERRIDES.iter().any(|name| headers.contains_key(*name))
        && !headers.contains_key(http::header::TRANSFER_ENCODING)
        && headers
            .get(http::header::CONTENT_LENGTH)
            .is_none_or(|length| length.to_str().ok().and_then(|text| text.trim().parse::<u64>().ok()) == Some(0))
}

fn find_stub<'a>(stubs: &'a [Stub], method: &Method, url: &str) -> Option<&'a Stub> {
    stubs.iter().find(|stub| {
        stub.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
            && url.starts_with(&stub.url_prefix)
    })
}

/// How long a response's `Retry-After` asks to wait: delay-seconds, or an
/// HTTP date (RFC 9110, section 10.2.3) measured from `now`. A value that is
/// neither is ignored, and so is a wait beyond an hour: no client waits that
/// long inside a transaction, and an absurd header must not pin an endpoint.
fn retry_after(headers: &http::HeaderMap, now: SystemTime) -> Option<Duration> {
    const LONGEST: Duration = Duration::from_secs(3600);
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value).ok()?.duration_since(now).unwrap_or(Duration::ZERO),
    };
    (wait <= LONGEST).then_some(wait)
}

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> ResponseFuture {
        let method = request.method().clone();
        let uri = request.uri().clone();
        let url = uri.to_string();
        let safe = is_safe(&request, &self.policy.mirror);
        let at = self.trace.now_micros();
        let trace = self.trace.clone();
        // The request's size, as its `Content-Length` declares it (the
        // mirror's stubbed requests are measured exactly, below).
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        // The trace keeps the URL as the policy's redaction says.
        let traced_url = self.policy.redaction.url(&url);
        let record = move |outcome: HttpOutcome, request_bytes: Option<u64>| {
            let (method, url) = (method.to_string(), traced_url.clone());
            trace.record_since(at, HostCall::Http { method, url, safe, request_bytes, outcome });
        };

        let target = HostPort::of(&uri).and_then(|target| {
            let grants = &self.policy.capabilities.outbound_hosts;
            let granted = grants
                .iter()
                .filter_map(|grant| HostGrant::parse(grant).ok())
                .any(|grant| grant.allows(&target, uri.scheme_str()));
            if granted { Ok(target) } else { Err(format!("the policy does not grant host `{target}`")) }
        });
        let target = match target {
            Ok(target) => target,
            Err(reason) => {
                record(HttpOutcome::Denied { reason }, declared);
                return Box::new(async { Err(HttpError::HttpRequestDenied) });
            }
        };

        // The place of an unsafe call among the instance's unsafe calls:
        // the twins count alike, so the mirror's n-th call is the primary's.
        let ordinal = (!safe).then(|| {
            self.unsafe_calls += 1;
            u32::try_from(self.unsafe_calls).unwrap_or(u32::MAX)
        });
        // Granted, so the host has its one spelling.
        let endpoint = endpoint_name(request.method().as_str(), &uri).unwrap_or_else(|| target.to_string());
        // A host whose breaker is open is not called, by either twin.
        let breaker = self.policy.breaker.for_host(&target, uri.scheme_str());
        let rule = breaker.failures.map(|failures| BreakerRule { failures, open_for: breaker.open_for });
        let host = target.to_string();
        if rule.is_some()
            && let Err(short) = self.memory.breakers.admit(&host, true, Instant::now())
        {
            let opens_in_ms = u64::try_from(short.opens_in.as_millis()).unwrap_or(u64::MAX);
            record(HttpOutcome::ShortCircuited { host, opens_in_ms }, declared);
            return Box::new(async { Err(HttpError::ConnectionRefused) });
        }
        // What the mirror answers itself instead of sending: every unsafe
        // request, and the safe ones to a host the policy says so of.
        let held = match (self.role, safe) {
            (Role::Primary, _) => None,
            (Role::Mirror, false) => Some(SafeCalls::Stub),
            (Role::Mirror, true) => match self.policy.mirror.safe_calls(&target, uri.scheme_str()) {
                SafeCalls::Send => None,
                answer => Some(answer),
            },
        };
        if let Some(answer) = held {
            // Never sent. Drain the request body so the guest's writes finish,
            // then answer from a stub (a policy stub only where the policy
            // asks for stubs, not for recorded answers).
            let stub = (answer == SafeCalls::Stub)
                .then(|| find_stub(&self.policy.mirror.stubs, request.method(), &uri.to_string()).cloned())
                .flatten();
            let memory = self.memory.clone();
            let journal = self.journal.clone().zip(ordinal);
            // The endpoint is wanted: if the primary's call does not follow,
            // it is being held back, and what is known of it must not fade.
            if self.beside_primary {
                memory.health.asked(&endpoint, &self.input.conditions, Instant::now());
            }
            return Box::new(async move {
                let drained = Limited::new(request.into_body(), MAX_RESPONSE_BYTES).collect().await;
                let request_bytes =
                    drained.ok().and_then(|body| u64::try_from(body.to_bytes().len()).ok()).or(declared);
                // The real answer to this very call, if an attempt of the
                // transaction got one, before any guess.
                let sent = match journal {
                    Some((journal, ordinal)) => journal.prior(ordinal).await.ok().flatten(),
                    None => None,
                };
                let (status, body, source) = match (sent.and_then(|effect| effect.response), stub) {
                    (Some(real), _) if (200..300).contains(&real.status) => {
                        (real.status, Bytes::from(real.body), "journal")
                    }
                    (_, Some(stub)) => (stub.status, Bytes::from(stub.body), "policy"),
                    (_, None) => match memory.recall(&endpoint) {
                        Some((status, body)) => (status, body, "last-response"),
                        None => (200, Bytes::from_static(b"{}"), "synthesised"),
                    },
                };
                record(HttpOutcome::Stubbed { status, source: source.to_string() }, request_bytes);
                let response = Response::builder()
                    .status(status)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(full_body(body))
                    .map_err(|e| HttpError::InternalError(Some(e.to_string())))?;
                Ok((response, done()))
            });
        }

        let timeouts = self.timeouts.clone();
        let remember = (self.role == Role::Primary).then(|| self.memory.clone());
        // Every request really sent teaches the endpoint's health.
        let health = self.memory.clone();
        let evidence = self.policy.prediction.evidence();
        let input = self.input.clone();
        // The primary's unsafe calls pass the effect gate first.
        let gate = match (&self.gate, self.role, safe) {
            (Some(gate), Role::Primary, false) => Some((gate.clone(), self.unsafe_calls, self.trace.clone())),
            _ => None,
        };
        let journal = match self.role {
            Role::Primary => self.journal.clone().zip(ordinal),
            Role::Mirror => None,
        };
        let mirror = self.role == Role::Mirror;
        let cancelled = self.cancelled.clone();
        // An unsafe call in flight is never abandoned: its answer is the
        // journal's to learn, and the compensation's to know.
        let caller_cancel = self.caller_cancel.clone();
        let stop_waiting = caller_cancel.clone().filter(|_| safe);
        let memory = self.memory.clone();
        // The call runs on a task of wasi-http's own: it keeps the twin's
        // span, so that the gate's decision is told in it.
        let span = tracing::Span::current();
        Box::new(
            async move {
                if let Some((gate, nth, primary)) = gate
                    && let Verdict::Stop(reason) = gate.before_unsafe_call(nth, at, &primary).await
                {
                    record(HttpOutcome::Denied { reason }, declared);
                    return Err(HttpError::HttpRequestDenied);
                }
                // Looked at after the gate, which may have waited for the mirror.
                if !mirror && !safe && caller_cancel.as_ref().is_some_and(CancelToken::is_cancelled) {
                    record(HttpOutcome::Denied { reason: CALLER_CANCELLED.to_string() }, declared);
                    return Err(HttpError::HttpRequestDenied);
                }
                // Keyed and journalled before it leaves; not sent again if an
                // earlier attempt's call succeeded.
                let mut request = request;
                let mut sending = None;
                if let Some((journal, ordinal)) = journal {
                    match journal.prepare(ordinal, request).await {
                        Prepared::Send { request: keyed, effect } => {
                            request = keyed;
                            sending = Some((journal, effect));
                        }
                        Prepared::Replay { response, status, response_bytes } => {
                            record(HttpOutcome::Replayed { status, response_bytes }, declared);
                            return Ok((response, done()));
                        }
                        Prepared::Refused { reason, error } => {
                            record(HttpOutcome::Denied { reason }, declared);
                            return Err(error);
                        }
                    }
                }
                // The mirror's safe request goes without a body: one streamed
                // without a declared length is read first, and if it holds
                // anything, nothing is sent (a server may act on it).
                if mirror {
                    let (parts, body) = request.into_parts();
                    let read = Limited::new(body, MAX_RESPONSE_BYTES).collect().await.map(|body| body.to_bytes());
                    if !read.as_ref().is_ok_and(Bytes::is_empty) {
                        let reason = "the mirror sends no body on GET or HEAD".to_string();
                        record(HttpOutcome::Denied { reason }, declared);
                        return Err(HttpError::HttpRequestDenied);
                    }
                    request = http::Request::from_parts(parts, full_body(Bytes::new()));
                }
                // Read after the gate, which may have raised it.
                let limit = timeouts.outbound();
                let timeout =
                    options.as_ref().and_then(|o| o.first_byte_timeout).map_or(limit, |guest| guest.min(limit));
                // The primary takes a half-open breaker's one trial here, after
                // the gate and the journal, which may stop the call; the trial
                // then settles with the call's outcome below.
                let breakers = &memory.breakers;
                if rule.is_some()
                    && !mirror
                    && let Err(short) = breakers.admit(&host, false, Instant::now())
                {
                    let opens_in_ms = u64::try_from(short.opens_in.as_millis()).unwrap_or(u64::MAX);
                    record(HttpOutcome::ShortCircuited { host, opens_in_ms }, declared);
                    return Err(HttpError::ConnectionRefused);
                }
                let slot = match breaker.max_concurrent {
                    Some(max) => {
                        match tokio::time::timeout(timeout, breakers.slots(&host, max).acquire_owned()).await {
                            Ok(Ok(slot)) => Some(slot),
                            _ => {
                                // Only the primary takes trials: the mirror's call
                                // must not give back a trial the primary has out.
                                if !mirror {
                                    breakers.abandon(&host);
                                }
                                let error = format!(
                                    "no free slot of the {max} calls {host} may have at once within {} ms",
                                    timeout.as_millis()
                                );
                                record(HttpOutcome::Failed { error }, declared);
                                return Err(HttpError::ConnectionReadTimeout);
                            }
                        }
                    }
                    None => None,
                };
                let started = Instant::now();
                let exchange = async {
                    let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
                    // The connection future must run while the body is read.
                    let io = tokio::spawn(io);
                    let (parts, body) = response.into_parts();
                    let body = Limited::new(body, MAX_RESPONSE_BYTES)
                        .collect()
                        .await
                        .map_err(|e| HttpError::InternalError(Some(format!("response body: {e}"))))?
                        .to_bytes();
                    Ok::<_, HttpError>((parts, body, io))
                };
                // In a hedge race the other attempt won: this one stops waiting
                // for its answer (it holds no token, so the call is a safe one).
                // A safe call stops waiting, too, when the caller cancels.
                let lost = async move {
                    if cancelled.is_none() && stop_waiting.is_none() {
                        return std::future::pending().await;
                    }
                    loop {
                        if cancelled.as_ref().is_some_and(|flag| flag.load(Ordering::SeqCst)) {
                            return "stopped: the other path of the hedge won";
                        }
                        if stop_waiting.as_ref().is_some_and(CancelToken::is_cancelled) {
                            return CALLER_CANCELLED;
                        }
                        tokio::time::sleep(CANCEL_POLL).await;
                    }
                };
                let outcome = tokio::select! {
                    outcome = tokio::time::timeout(timeout, exchange) => outcome,
                    why = lost => {
                        if !mirror {
                            breakers.abandon(&host);
                        }
                        record(HttpOutcome::Failed { error: why.to_string() }, declared);
                        return Err(HttpError::InternalError(Some(why.to_string())));
                    }
                };
                let observe = |status: Option<u16>, retry_after: Option<Duration>| {
                    let exchange = Exchange {
                        sent_at: started,
                        request_bytes: declared,
                        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
                        status,
                        retry_after,
                        conditions: &input.conditions,
                    };
                    health.health.observe(&endpoint, exchange, &evidence, Instant::now());
                    // A host that failed to answer, or answered `5xx`, counts
                    // against its breaker; any other answer shows it well.
                    if let Some(rule) = rule {
                        let well = status.is_some_and(|status| status < 500);
                        breakers.report(&host, rule, well, Instant::now());
                    }
                };
                match outcome {
                    Err(_elapsed) => {
                        observe(None, None);
                        record(
                            HttpOutcome::Failed { error: format!("timed out after {} ms", timeout.as_millis()) },
                            declared,
                        );
                        Err(HttpError::ConnectionReadTimeout)
                    }
                    Ok(Err(error)) => {
                        observe(None, None);
                        record(HttpOutcome::Failed { error: error.to_string() }, declared);
                        Err(error)
                    }
                    Ok(Ok((parts, body, io))) => {
                        drop(slot);
                        let status = parts.status.as_u16();
                        let wait = retry_after(&parts.headers, SystemTime::now());
                        observe(Some(status), wait);
                        // Only a refusal's wait binds the retry: a `2xx` with the
                        // header asks nothing of it.
                        let retry_after_ms = wait
                            .filter(|_| matches!(status, 429 | 503))
                            .map(|wait| u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
                        record(HttpOutcome::Answered { status, response_bytes: body.len(), retry_after_ms }, declared);
                        if let Some((journal, effect)) = sending {
                            journal.answered(effect, &parts, &body).await;
                        }
                        if let Some(memory) = remember {
                            memory.remember(endpoint, status, body.clone());
                        }
                        let io: Box<dyn Future<Output = Result<(), HttpError>> + Send> =
                            Box::new(async move { io.await.unwrap_or(Ok(())) });
                        Ok((Response::from_parts(parts, full_body(body)), io))
                    }
                }
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let wait = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from_str(value).ok()?);
            retry_after(&headers, now)
        };
        assert_eq!(wait("120"), Some(Duration::from_secs(120)));
        assert_eq!(wait("Wed, 21 Oct 2015 07:28:30 GMT"), Some(Duration::from_secs(30)));
        assert_eq!(wait("Wed, 21 Oct 2015 07:27:00 GMT"), Some(Duration::ZERO), "a date passed");
        assert_eq!(wait("soon"), None);
        assert_eq!(wait("86400"), None, "beyond an hour");
        assert_eq!(retry_after(&http::HeaderMap::new(), now), None);
    }
}
