//! A transaction's status as it changes, pushed over Server-Sent Events
//! (`GET /v1/transactions/{id}/events`): a client that submitted with
//! `Prefer: respond-async` follows its transaction instead of polling.
//!
//! Each event is `event: status`, its data `{"transaction_id", "status",
//! "dead_lettered", "path", "attempts"}`: one at once, then one whenever
//! the status changes; the stream ends after the transaction has ended
//! (`committed` or `failed`). A pending transaction that has run past its
//! policy's `[phases] delayed_after_ms` is `delayed` (with `delayed_ms`,
//! how long since its acceptance); one whose caller has cancelled it, on
//! the node that runs it, is `cancelling` until it ends. While it runs on the node that answers,
//! each event also says its attempt (`attempt`, `attempt_path`), and a
//! new attempt is an event of its own. It follows the store, so a transaction
//! another node runs, or takes over, is followed as well.

use super::transactions::{Found, find, unix_ms, view};
use crate::auth::{Caller, Role};
use crate::{AppState, ErrorBody, ServiceError, Tenant};
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the status is looked at.
const POLL_EVERY: Duration = Duration::from_millis(50);
/// How long one stream follows a transaction; a client that wants longer
/// reconnects (the first event says where it is).
const LONGEST: Duration = Duration::from_secs(600);

/// What a status event says: the status, what makes the event new (the
/// status and, while it runs here, its attempt), and the event's data.
fn status_of(state: &AppState, tenant: &Tenant, id: &str, found: Found) -> (String, String, serde_json::Value) {
    let (delayed, cancelling) = match &found {
        Found::Pending(pending) => (
            delayed_for(tenant, &pending.module, pending.accepted_unix_ms),
            state.node.cancel_requested(tenant.name(), id),
        ),
        Found::Recorded { .. } => (None, false),
    };
    let view = view(id, found);
    let record = view.record.as_ref();
    let status = match (cancelling, delayed) {
        (true, _) => "cancelling".to_string(),
        (false, Some(_)) => "delayed".to_string(),
        (false, None) => view.status,
    };
    let mut data = json!({
        "transaction_id": id,
        "status": status,
        "dead_lettered": view.dead_lettered,
        "path": record.map(|r| r.path.clone()),
        "attempts": record.map_or(0, |r| r.attempts.len()),
    });
    if let Some(delayed_ms) = delayed {
        data["delayed_ms"] = json!(delayed_ms);
    }
    let mut key = status.clone();
    if record.is_none()
        && let Some(progress) = tenant.runtime().progress(id)
    {
        data["attempt"] = json!(progress.attempt);
        data["attempt_path"] = json!(progress.path);
        key = format!("{status} {}", progress.attempt);
    }
    (status, key, data)
}

/// How long a pending transaction of `module` accepted at `accepted_unix_ms`
/// has run, if its policy calls that delayed.
fn delayed_for(tenant: &Tenant, module: &str, accepted_unix_ms: u64) -> Option<u64> {
    let threshold = tenant.module(module).ok()?.policy?.phases.delayed_after_ms?;
    let ran = unix_ms().saturating_sub(accepted_unix_ms);
    (ran >= threshold).then_some(ran)
}

/// A transaction's status as it changes, until it ends.
#[utoipa::path(get, path = "/v1/transactions/{id}/events", tag = "transactions", params(("id" = String, Path)),
    responses((status = 200, content_type = "text/event-stream", body = String,
        description = "Server-Sent Events: `event: status`, `data` the status as JSON, until the transaction ends"),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn transaction_events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>>, ServiceError> {
    caller.require(&[Role::Client, Role::Operator])?;
    let found = find(&caller.tenant, &id)?.ok_or_else(|| ServiceError::NotFound(format!("no transaction {id}")))?;
    let first = status_of(&state, &caller.tenant, &id, found);
    let tenant: Arc<Tenant> = caller.tenant.clone();
    let started = Instant::now();
    /// What made the last event (its status and attempt), the next one,
    /// and whether the stream is done.
    struct Following {
        last: Option<String>,
        next: Option<(String, String, serde_json::Value)>,
        done: bool,
    }
    let start = Following { last: None, next: Some(first), done: false };
    let events = futures_util::stream::unfold(start, move |mut at| {
        let (state, tenant, id) = (state.clone(), tenant.clone(), id.clone());
        async move {
            loop {
                if at.done {
                    return None;
                }
                if let Some((status, key, data)) = at.next.take()
                    && at.last.as_deref() != Some(key.as_str())
                {
                    at.done = !matches!(status.as_str(), "pending" | "delayed" | "cancelling");
                    at.last = Some(key);
                    return Some((Ok(Event::default().event("status").data(data.to_string())), at));
                }
                if !state.admission.is_open() || started.elapsed() > LONGEST {
                    return None;
                }
                tokio::time::sleep(POLL_EVERY).await;
                match find(&tenant, &id) {
                    Ok(Some(found)) => at.next = Some(status_of(&state, &tenant, &id, found)),
                    // Pending a moment ago and now nowhere cannot happen
                    // (the record is written as the acceptance ends); a
                    // failing store ends the stream, saying so.
                    Ok(None) => at.done = true,
                    Err(error) => {
                        at.done = true;
                        return Some((Ok(Event::default().event("error").data(error.to_string())), at));
                    }
                }
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
