//! Event streams: a page from an offset (with a long poll), Server-Sent
//! Events that resume from `Last-Event-ID`, and consumer groups whose
//! offsets are committed durably (at-least-once: a group reads from its
//! last acknowledged offset, so what it had not acknowledged comes again).
//!
//! A tenant's streams are in its own store, so a caller reads only its
//! tenant's; clients and operators may read them.

use super::request_body::{self, Body};
use crate::auth::{Caller, Role};
use crate::{AppState, ErrorBody, ServiceError};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use txmirror_runtime::Runtime;
use txmirror_runtime::store::StoredEvent;

/// The longest long poll.
const MAX_WAIT_MS: u64 = 30_000;
/// How often a waiting read looks for new events: commits of other nodes
/// reach this one only through the store.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// One event of a stream.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StreamEvent {
    /// Its offset: its position in the tenant's event log, increasing
    /// along the stream (not by one: the log is shared by all streams).
    pub offset: u64,
    /// The commit version that emitted it.
    pub version: u64,
    /// The transaction that emitted it: with `offset`, what a receiver
    /// deduplicates by.
    pub transaction_id: String,
    /// The payload, when it is JSON (as the SDKs write it).
    #[schema(value_type = Object)]
    pub payload: Option<serde_json::Value>,
    /// The payload as text, when it is not JSON.
    pub payload_text: Option<String>,
}

impl From<StoredEvent> for StreamEvent {
    fn from(event: StoredEvent) -> Self {
        let payload = serde_json::from_slice(&event.payload).ok();
        let payload_text = payload.is_none().then(|| String::from_utf8_lossy(&event.payload).into_owned());
        Self {
            offset: event.sequence,
            version: event.version,
            transaction_id: event.transaction_id,
            payload,
            payload_text,
        }
    }
}

/// A page of a stream.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventPage {
    /// The stream.
    pub stream: String,
    /// The events after the offset asked for, oldest first.
    pub events: Vec<StreamEvent>,
    /// Where the next page starts: the last event's offset, or the offset
    /// asked for when there was none.
    pub next_after: u64,
}

/// Where to read from and how.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// Events after this offset (exclusive). Default: the group's
    /// acknowledged offset with `group`, else 0 (the stream's start).
    pub after: Option<u64>,
    /// At most this many (default 100; from 1 to 500).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// With no event to give, wait up to this long for one (a long poll;
    /// default 0, at most 30,000).
    #[param(maximum = 30000)]
    pub wait_ms: Option<u64>,
    /// Read as this consumer group: from its acknowledged offset.
    pub group: Option<String>,
    /// `committed` (the default): the events transactions committed.
    /// `predicted`: what mirrors emitted before their primaries committed,
    /// and how each prediction was settled (`confirmed`, `corrected`,
    /// `retracted`); offsets are the view's own.
    #[param(pattern = "^(committed|predicted)$")]
    pub view: Option<String>,
}

/// A notice of a stream's predicted view.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PredictedNotice {
    /// Its offset in the predicted view (not a committed event's).
    pub offset: u64,
    /// `predicted`, `confirmed`, `corrected` or `retracted`.
    pub kind: String,
    /// The transaction whose mirror predicted the event.
    pub transaction_id: String,
    /// The attempt (from 1).
    pub attempt: u32,
    /// The event's place among the attempt's events on the stream (from 0).
    pub index: u32,
    /// The payload (for `corrected`, the one committed), when it is JSON.
    #[schema(value_type = Object)]
    pub payload: Option<serde_json::Value>,
    /// The payload as text, when it is not JSON.
    pub payload_text: Option<String>,
    /// For a settlement, the offset of the prediction it settles.
    pub settles: Option<u64>,
    /// For `confirmed` and `corrected`: how long before the commit the
    /// prediction came, in microseconds.
    pub lead_micros: Option<u64>,
    /// For `retracted`: why.
    pub reason: Option<String>,
}

impl From<txmirror_runtime::PredictionNotice> for PredictedNotice {
    fn from(notice: txmirror_runtime::PredictionNotice) -> Self {
        let payload = serde_json::from_slice(&notice.payload).ok();
        let payload_text = payload.is_none().then(|| String::from_utf8_lossy(&notice.payload).into_owned());
        let kind =
            serde_json::to_value(notice.kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        Self {
            offset: notice.offset,
            kind,
            transaction_id: notice.transaction_id,
            attempt: notice.attempt,
            index: notice.index,
            payload,
            payload_text,
            settles: notice.settles,
            lead_micros: notice.lead_micros,
            reason: notice.reason,
        }
    }
}

/// A page of a stream's predicted view.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PredictedPage {
    /// The stream.
    pub stream: String,
    /// The notices after the offset asked for, oldest first.
    pub notices: Vec<PredictedNotice>,
    /// Where the next page starts.
    pub next_after: u64,
}

/// How a stream's predictions have fared on the node that answers.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PredictionReport {
    /// The stream.
    pub stream: String,
    /// Events the mirrors emitted.
    pub predicted: u64,
    /// Predictions the primaries committed as they were.
    pub confirmed: u64,
    /// Predictions committed with another payload.
    pub corrected: u64,
    /// Predictions of attempts that failed or were diverted.
    pub retracted: u64,
    /// Predictions of committed attempts whose primary did not emit them.
    pub not_emitted: u64,
    /// Committed events no prediction stood for.
    pub unpredicted: u64,
    /// Of the events of predicted attempts that committed, the share that
    /// did not match (corrected, not emitted or unpredicted).
    pub mismatch_rate: Option<f64>,
    /// The mean time from a prediction to its commit, in milliseconds.
    pub mean_lead_ms: Option<f64>,
}

/// A consumer group's acknowledgement.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Acknowledgement {
    /// Every event of the stream up to and including this offset is
    /// handled; it must be an event of the stream.
    pub offset: u64,
}

/// A consumer group's place in a stream.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupOffset {
    /// The group.
    pub group: String,
    /// The last offset it acknowledged (0: none yet).
    pub offset: u64,
}

/// A stream or group name as the runtime accepts one, or why not.
fn checked_name<'a>(what: &str, name: &'a str) -> Result<&'a str, ServiceError> {
    txmirror_runtime::vocab::validate_name(name)
        .map(|()| name)
        .map_err(|reason| ServiceError::BadRequest(format!("the {what} name {reason}")))
}

fn read(runtime: &Runtime, stream: &str, after: u64, limit: usize) -> Result<Vec<StreamEvent>, ServiceError> {
    Ok(runtime.events(stream, after, limit)?.into_iter().map(StreamEvent::from).collect())
}

/// A stream's events after an offset; with `Accept: text/event-stream`,
/// Server-Sent Events from there on (each with its offset as its id, so a
/// client that reconnects with `Last-Event-ID` resumes after it).
#[utoipa::path(get, path = "/v1/streams/{stream}/events", tag = "streams",
    params(("stream" = String, Path, description = "The stream."), EventQuery),
    responses((status = 200, description = "A page (or, with `Accept: text/event-stream`, \
        Server-Sent Events: `id` the offset, `data` the event as JSON)",
        content((EventPage = "application/json"), (String = "text/event-stream"))), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn read_events(
    caller: Caller,
    State(state): State<AppState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    query: Result<Query<EventQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ServiceError> {
    caller.require(&[Role::Client, Role::Operator])?;
    let Query(query) = query.map_err(|e| ServiceError::BadRequest(e.body_text()))?;
    let stream = checked_name("stream", &stream)?.to_string();
    // From 1 to 500, as for the dead-letter queue.
    let limit = crate::api::dead_letters::limit(query.limit, 100)?;
    let wait = match query.wait_ms.unwrap_or(0) {
        ms @ 0..=MAX_WAIT_MS => Duration::from_millis(ms),
        ms => return Err(ServiceError::BadRequest(format!("wait_ms must be at most {MAX_WAIT_MS}, not {ms}"))),
    };
    let runtime = caller.tenant.runtime().clone();
    let group_offset = match &query.group {
        Some(group) => Some(runtime.group_offset(&stream, checked_name("group", group)?)?),
        None => None,
    };
    let last_event_id = match headers.get("last-event-id") {
        Some(value) => Some(value.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()).ok_or_else(|| {
            ServiceError::BadRequest("Last-Event-ID must be an event's offset (a whole number)".into())
        })?),
        None => None,
    };
    let after = last_event_id.or(query.after).or(group_offset).unwrap_or(0);
    let predicted = match query.view.as_deref() {
        None | Some("committed") => false,
        Some("predicted") => true,
        Some(other) => {
            return Err(ServiceError::BadRequest(format!("view must be `committed` or `predicted`, not `{other}`")));
        }
    };
    if predicted && query.group.is_some() {
        return Err(ServiceError::BadRequest("consumer groups read the committed view only".into()));
    }
    let wants_events = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"));
    let source = if predicted { Source::Predicted } else { Source::Committed };
    if wants_events {
        return Ok(server_sent_events(state, runtime, source, stream, after, limit).into_response());
    }
    let started = Instant::now();
    if predicted {
        let notices = loop {
            let notices = runtime.predicted_events(&stream, after, limit);
            if !notices.is_empty() || started.elapsed() >= wait || !state.admission.is_open() {
                break notices;
            }
            tokio::time::sleep(POLL_EVERY.min(wait.saturating_sub(started.elapsed()))).await;
        };
        let next_after = notices.last().map_or(after, |notice| notice.offset);
        let notices = notices.into_iter().map(PredictedNotice::from).collect();
        return Ok(Json(PredictedPage { stream, notices, next_after }).into_response());
    }
    let events = loop {
        let events = read(&runtime, &stream, after, limit)?;
        if !events.is_empty() || started.elapsed() >= wait || !state.admission.is_open() {
            break events;
        }
        tokio::time::sleep(POLL_EVERY.min(wait.saturating_sub(started.elapsed()))).await;
    };
    let next_after = events.last().map_or(after, |event| event.offset);
    Ok(Json(EventPage { stream, events, next_after }).into_response())
}

/// Which view a stream is read from.
#[derive(Debug, Clone, Copy)]
enum Source {
    Committed,
    Predicted,
}

/// The next items of a view after `after`: (offset, SSE event type, data).
fn next_items(
    runtime: &Runtime,
    source: Source,
    stream: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<(u64, &'static str, String)>, ServiceError> {
    Ok(match source {
        Source::Committed => read(runtime, stream, after, limit)?
            .into_iter()
            .map(|event| (event.offset, "message", serde_json::to_string(&event).unwrap_or_default()))
            .collect(),
        Source::Predicted => runtime
            .predicted_events(stream, after, limit)
            .into_iter()
            .map(|notice| {
                let kind = match notice.kind {
                    txmirror_runtime::NoticeKind::Predicted => "predicted",
                    txmirror_runtime::NoticeKind::Confirmed => "confirmed",
                    txmirror_runtime::NoticeKind::Corrected => "corrected",
                    _ => "retracted",
                };
                (notice.offset, kind, serde_json::to_string(&PredictedNotice::from(notice)).unwrap_or_default())
            })
            .collect(),
    })
}

/// Events (or the predicted view's notices, each as an SSE event of its
/// kind) from `after` on, as they come, until the client goes or the
/// service shuts down.
fn server_sent_events(
    state: AppState,
    runtime: Runtime,
    source: Source,
    stream: String,
    after: u64,
    limit: usize,
) -> Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>> {
    /// Where the stream is: the last offset read, events read and not yet
    /// sent, and whether it has ended.
    struct Position {
        after: u64,
        pending: std::collections::VecDeque<(u64, &'static str, String)>,
        ended: bool,
    }
    let start = Position { after, pending: std::collections::VecDeque::new(), ended: false };
    let events = futures_util::stream::unfold(start, move |mut at| {
        let (state, runtime, stream) = (state.clone(), runtime.clone(), stream.clone());
        async move {
            loop {
                if let Some((offset, kind, data)) = at.pending.pop_front() {
                    let mut event = Event::default().id(offset.to_string()).data(data);
                    if kind != "message" {
                        event = event.event(kind);
                    }
                    return Some((Ok(event), at));
                }
                if at.ended || !state.admission.is_open() {
                    return None;
                }
                match next_items(&runtime, source, &stream, at.after, limit) {
                    Ok(items) if items.is_empty() => tokio::time::sleep(POLL_EVERY).await,
                    Ok(items) => {
                        at.after = items.last().map_or(at.after, |item| item.0);
                        at.pending.extend(items);
                    }
                    Err(error) => {
                        // The store failed: say so and end; the client
                        // reconnects with its Last-Event-ID.
                        at.ended = true;
                        return Some((Ok(Event::default().event("error").data(error.to_string())), at));
                    }
                }
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Acknowledges, for a consumer group, every event of the stream up to an
/// offset: durably, forward only (an older offset changes nothing).
#[utoipa::path(post, path = "/v1/streams/{stream}/groups/{group}/ack", tag = "streams",
    params(("stream" = String, Path, description = "The stream."), ("group" = String, Path, description = "The consumer group.")),
    request_body = Acknowledgement,
    responses((status = 200, body = GroupOffset), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn acknowledge(
    caller: Caller,
    Path((stream, group)): Path<(String, String)>,
    Body(body, ..): Body<request_body::Json>,
) -> Result<Json<GroupOffset>, ServiceError> {
    caller.require(&[Role::Client, Role::Operator])?;
    let (stream, group) = (checked_name("stream", &stream)?, checked_name("group", &group)?);
    if group.starts_with("webhook:") {
        return Err(ServiceError::BadRequest(format!(
            "group `{group}` is a webhook's: the relay acknowledges its deliveries itself"
        )));
    }
    let ack: Acknowledgement =
        serde_json::from_slice(&body).map_err(|e| ServiceError::BadRequest(format!("the request body: {e}")))?;
    let runtime = caller.tenant.runtime();
    // The offset must be an event of this stream: a typo must not skip
    // events the group has not seen.
    let names_an_event = ack.offset > 0
        && runtime.events(stream, ack.offset - 1, 1)?.first().is_some_and(|event| event.sequence == ack.offset);
    if !names_an_event {
        return Err(ServiceError::BadRequest(format!("offset {} is not an event of stream `{stream}`", ack.offset)));
    }
    let offset = runtime.acknowledge(stream, group, ack.offset)?;
    Ok(Json(GroupOffset { group: group.to_string(), offset }))
}

/// The consumer groups of a stream and their offsets.
#[utoipa::path(get, path = "/v1/streams/{stream}/groups", tag = "streams",
    params(("stream" = String, Path, description = "The stream.")),
    responses((status = 200, body = Vec<GroupOffset>), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn groups(caller: Caller, Path(stream): Path<String>) -> Result<Json<Vec<GroupOffset>>, ServiceError> {
    caller.require(&[Role::Client, Role::Operator])?;
    let stream = checked_name("stream", &stream)?;
    let groups = caller.tenant.runtime().consumer_groups(stream)?;
    Ok(Json(groups.into_iter().map(|(group, offset)| GroupOffset { group, offset }).collect()))
}

/// How a stream's predictions have fared on the node that answers: how
/// many were confirmed, corrected and retracted, the mismatch rate and the
/// mean lead time from prediction to commit.
#[utoipa::path(get, path = "/v1/streams/{stream}/predictions", tag = "streams",
    params(("stream" = String, Path, description = "The stream.")),
    responses((status = 200, body = PredictionReport), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn predictions(
    caller: Caller,
    Path(stream): Path<String>,
) -> Result<Json<PredictionReport>, ServiceError> {
    caller.require(&[Role::Client, Role::Operator])?;
    let stream = checked_name("stream", &stream)?;
    let stats = caller.tenant.runtime().prediction_stats(stream);
    Ok(Json(PredictionReport {
        stream: stream.to_string(),
        predicted: stats.predicted,
        confirmed: stats.confirmed,
        corrected: stats.corrected,
        retracted: stats.retracted,
        not_emitted: stats.not_emitted,
        unpredicted: stats.unpredicted,
        mismatch_rate: stats.mismatch_rate(),
        mean_lead_ms: stats.mean_lead_micros().map(|micros| micros as f64 / 1000.0),
    }))
}
