//! The effect journal as one attempt's instances see it: the keys of the
//! primary's unsafe calls, what earlier attempts of the transaction sent,
//! and the writes that keep it (see `store/effects.rs`).
//!
//! The store is synchronous; its calls run on tokio's blocking threads, so
//! a worker goes on running other instances while the journal is written.

use super::MAX_RESPONSE_BYTES;
use crate::policy::{EffectSettings, InDoubt, RedactionSettings};
use crate::store::{
    Effect, EffectResponse, EffectWrite, Fence, JournalWrites, StateStore, StoreError, TransactionOutcome,
};
use crate::vocab::{Failure, FailureKind};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

/// What becomes of the primary's unsafe call, once the journal is asked.
pub(crate) enum Prepared {
    /// Send it (keyed, its body read): `effect` is its intent, recorded.
    Send { request: Request<WasiBody>, effect: Box<Effect> },
    /// An earlier attempt's call that succeeded: its recorded response.
    Replay { response: Response<WasiBody>, status: u16, response_bytes: usize },
    /// Not sent: why, and the error the guest gets.
    Refused { reason: String, error: HttpError },
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

/// One attempt's view of its transaction's journal, shared by its twins.
pub(crate) struct EffectJournal {
    store: Arc<dyn StateStore>,
    /// Where its writes go, grouped with other transactions'.
    writes: Arc<JournalWrites>,
    transaction_id: String,
    /// The transaction whose sent calls `sent` tells: this one, or, for a
    /// compensation, the one it compensates.
    facts_of: String,
    path: String,
    fence: Option<Fence>,
    pub(crate) settings: EffectSettings,
    /// What of a call's URL the journal keeps.
    redaction: RedactionSettings,
    /// The path's effects by ordinal: read from the store at the attempt's
    /// first unsafe call, then kept up to date by the attempt's own writes.
    known: tokio::sync::OnceCell<Mutex<HashMap<u32, Effect>>>,
    /// What ends the transaction, if one of its calls found it.
    failure: Mutex<Option<Failure>>,
}

impl std::fmt::Debug for EffectJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EffectJournal")
            .field("transaction_id", &self.transaction_id)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The idempotency key of a transaction's `ordinal`-th unsafe call on
/// `path`: the same for every attempt and rerun of the transaction, on any
/// node, and different for every other call. A hash keeps it short and
/// free of characters a header cannot carry, whatever the id.
pub fn effect_key(transaction_id: &str, path: &str, ordinal: u32) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"txmirror effect key v1\0");
    hasher.update(transaction_id.as_bytes());
    hasher.update(b"\0");
    hasher.update(path.as_bytes());
    hasher.update(b"\0");
    hasher.update(&ordinal.to_le_bytes());
    let hex = hasher.finalize().to_hex();
    format!("txm-{}", &hex[..32])
}

/// What a request asks, for telling whether a call made again is the same:
/// BLAKE3 of its method, URL and body.
pub(crate) fn request_digest(method: &str, url: &str, body: &[u8]) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(method.as_bytes());
    hasher.update(b"\0");
    hasher.update(url.as_bytes());
    hasher.update(b"\0");
    hasher.update(body);
    hasher.finalize().to_hex().to_string()
}

impl EffectJournal {
    pub(crate) fn new(
        (store, writes): (Arc<dyn StateStore>, Arc<JournalWrites>),
        (transaction_id, facts_of): (String, String),
        path: String,
        fence: Option<Fence>,
        (settings, redaction): (EffectSettings, RedactionSettings),
    ) -> Self {
        Self {
            store,
            writes,
            transaction_id,
            facts_of,
            path,
            fence,
            settings,
            redaction,
            known: tokio::sync::OnceCell::new(),
            failure: Mutex::default(),
        }
    }

    /// The transaction's id.
    pub(crate) fn transaction_id(&self) -> &str {
        &self.transaction_id
    }

    /// The key of the path's `ordinal`-th unsafe call.
    pub(crate) fn key(&self, ordinal: u32) -> String {
        effect_key(&self.transaction_id, &self.path, ordinal)
    }

    /// The path's `ordinal`-th unsafe call as an earlier attempt (or this
    /// one) left it, if any.
    pub(crate) async fn prior(&self, ordinal: u32) -> Result<Option<Effect>, StoreError> {
        if !self.settings.journal {
            return Ok(None);
        }
        let known = self
            .known
            .get_or_try_init(|| async {
                let (store, id, path) = (self.store.clone(), self.transaction_id.clone(), self.path.clone());
                let effects = tokio::task::spawn_blocking(move || store.effects(&id))
                    .await
                    .map_err(|_| StoreError::Committer(None))??;
                let mine = effects.into_iter().filter(|effect| effect.path == path);
                Ok::<_, StoreError>(Mutex::new(mine.map(|effect| (effect.ordinal, effect)).collect()))
            })
            .await?;
        Ok(known.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&ordinal).cloned())
    }

    /// The calls sent so far by the transaction `facts_of` names, every
    /// path's, as the store holds them; but when that transaction (another
    /// one: this is its compensation) committed, not the calls of the path
    /// it committed on, which its outcome stands on: those of abandoned
    /// paths only.
    pub(crate) async fn sent(&self) -> Result<Vec<Effect>, StoreError> {
        let (store, id) = (self.store.clone(), self.facts_of.clone());
        let other = id != self.transaction_id;
        tokio::task::spawn_blocking(move || {
            let effects = store.effects(&id)?;
            let committed_path = match other.then(|| store.transaction(&id)).transpose()?.flatten() {
                Some(record) if matches!(record.outcome, TransactionOutcome::Committed { .. }) => Some(record.path),
                _ => None,
            };
            Ok(effects.into_iter().filter(|effect| committed_path.as_ref() != Some(&effect.path)).collect())
        })
        .await
        .map_err(|_| StoreError::Committer(None))?
    }

    /// Writes `effect` durably (under the attempt's fence), then remembers it.
    pub(crate) async fn record(&self, effect: Effect) -> Result<(), StoreError> {
        if !self.settings.journal {
            return Ok(());
        }
        let write = EffectWrite {
            transaction_id: self.transaction_id.clone(),
            effect: effect.clone(),
            fence: self.fence.clone(),
        };
        self.writes.write(write).await?;
        if let Some(known) = self.known.get() {
            known.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(effect.ordinal, effect);
        }
        Ok(())
    }

    /// Asks the journal about the path's `ordinal`-th unsafe call, about to
    /// be sent: keys it (unless the guest did), and either records its
    /// intent, durably, before it is sent, or answers it from an earlier
    /// attempt's success, or refuses it (a different request at the same
    /// point; a call in doubt the policy will not send again; a journal
    /// that cannot be written), ending the attempt.
    pub(crate) async fn prepare(&self, ordinal: u32, request: Request<WasiBody>) -> Prepared {
        let refuse = |kind: FailureKind, reason: String| {
            self.fail(Failure::new(kind, reason.clone()));
            Prepared::Refused { reason, error: HttpError::HttpRequestDenied }
        };
        let (mut parts, body) = request.into_parts();
        let body = match Limited::new(body, MAX_RESPONSE_BYTES).collect().await {
            Ok(body) => body.to_bytes(),
            Err(error) => {
                let reason = format!("the request's body could not be read for the effect journal: {error}");
                return Prepared::Refused { reason, error: HttpError::HttpRequestDenied };
            }
        };
        let (method, url) = (parts.method.to_string(), parts.uri.to_string());
        // The digest is of the request as sent; the journal, which is
        // stored and shown, keeps the URL as the policy's redaction says.
        let digest = request_digest(&method, &url, &body);
        let url = self.redaction.url(&url);
        // Validated with the policy; a name that is not one keys nothing.
        let header = HeaderName::from_bytes(self.settings.idempotency_header.as_bytes()).ok();
        let key = match header.as_ref().and_then(|name| parts.headers.get(name)).and_then(|v| v.to_str().ok()) {
            Some(theirs) => theirs.to_string(),
            None => {
                let ours = self.key(ordinal);
                if let (Some(name), Ok(value)) = (header, HeaderValue::from_str(&ours)) {
                    parts.headers.insert(name, value);
                }
                ours
            }
        };
        let prior = match self.prior(ordinal).await {
            Ok(prior) => prior,
            Err(error) => {
                let reason = format!("the effect journal could not be read, so nothing is sent: {error}");
                return refuse(FailureKind::Unavailable, reason);
            }
        };
        let sends = match &prior {
            Some(prior) if prior.digest != digest => {
                let reason = format!(
                    "unsafe call {ordinal} of path `{}` asks {method} {url}, but an earlier attempt of this \
                     transaction sent {} {} at that point (a different request: the guest must make the same calls \
                     in the same order on every attempt)",
                    self.path, prior.method, prior.url
                );
                return refuse(FailureKind::EffectMismatch, reason);
            }
            Some(prior) if prior.succeeded() => {
                let recorded = prior.response.clone().unwrap_or_else(|| EffectResponse {
                    status: 200,
                    headers: Vec::new(),
                    body: Vec::new(),
                    unix_ms: 0,
                });
                return replay(recorded);
            }
            Some(prior) if prior.in_doubt() && self.settings.in_doubt == InDoubt::DeadLetter => {
                let reason = format!(
                    "unsafe call {ordinal} of path `{}` ({} {}) was sent {} time(s) and its answer never came; \
                     the policy says not to send it again (`effects.in_doubt = \"dead_letter\"`)",
                    self.path, prior.method, prior.url, prior.sends
                );
                return refuse(FailureKind::EffectInDoubt, reason);
            }
            Some(prior) => prior.sends,
            None => 0,
        };
        let effect = Effect {
            path: self.path.clone(),
            ordinal,
            method,
            url,
            digest,
            key,
            sends: sends.saturating_add(1),
            sent_unix_ms: unix_ms(),
            response: None,
        };
        if let Err(error) = self.record(effect.clone()).await {
            let reason = format!("the effect journal could not record the call, so it is not sent: {error}");
            return refuse(FailureKind::Unavailable, reason);
        }
        let body = Full::new(body).map_err(|never| match never {}).boxed_unsync();
        Prepared::Send { request: Request::from_parts(parts, body), effect: Box::new(effect) }
    }

    /// Records what `effect`'s call got. A failure to record leaves the call
    /// in doubt, which a later attempt resolves by the policy.
    pub(crate) async fn answered(&self, mut effect: Box<Effect>, parts: &http::response::Parts, body: &Bytes) {
        let headers = parts
            .headers
            .iter()
            // How this connection carried the body says nothing of what a
            // replay carries.
            .filter(|(name, _)| *name != http::header::TRANSFER_ENCODING && *name != http::header::CONNECTION)
            .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_string())))
            .collect();
        effect.response =
            Some(EffectResponse { status: parts.status.as_u16(), headers, body: body.to_vec(), unix_ms: unix_ms() });
        if let Err(error) = self.record(*effect).await {
            tracing::warn!(transaction = %self.transaction_id, %error, "an unsafe call's answer was not journalled");
        }
    }

    /// Ends the attempt with `failure`, whatever the guest makes of the
    /// refused call; the first such failure stands.
    pub(crate) fn fail(&self, failure: Failure) {
        let mut slot = self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.get_or_insert(failure);
    }

    /// The failure a call found, if any.
    pub(crate) fn failure(&self) -> Option<Failure> {
        self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// A recorded response, as the guest receives it.
fn replay(recorded: EffectResponse) -> Prepared {
    let mut response = Response::builder().status(recorded.status);
    for (name, value) in &recorded.headers {
        response = response.header(name, value);
    }
    let response_bytes = recorded.body.len();
    let body = Full::new(Bytes::from(recorded.body)).map_err(|never| match never {}).boxed_unsync();
    match response.body(body) {
        Ok(response) => Prepared::Replay { response, status: recorded.status, response_bytes },
        Err(error) => Prepared::Refused {
            reason: format!("the journalled response could not be rebuilt: {error}"),
            error: HttpError::InternalError(Some(error.to_string())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_transaction_path_and_ordinal_and_fit_a_header() {
        let key = effect_key("t1", "charge", 1);
        assert_eq!(key, effect_key("t1", "charge", 1), "stable");
        assert!(key.starts_with("txm-") && key.len() == 36, "{key}");
        assert!(HeaderValue::from_str(&key).is_ok());
        for other in [effect_key("t2", "charge", 1), effect_key("t1", "refund", 1), effect_key("t1", "charge", 2)] {
            assert_ne!(key, other);
        }
        // The separators keep the parts apart.
        assert_ne!(effect_key("t1", "a", 1), effect_key("t1\0a", "", 1));
    }
}
