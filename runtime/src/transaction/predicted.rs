//! The predicted view of event streams: what a mirrored transaction's
//! mirror emits, published at once, then settled against what its primary
//! commits.
//!
//! The mirror runs beside the primary from the same snapshot, so its
//! events are what the primary is about to emit, known before the primary
//! commits them (often before it has sent anything). Each event the mirror
//! emits is published as a `predicted` notice on its stream's view, marked
//! with the transaction and attempt. When the attempt ends, each
//! prediction is settled: `confirmed` when the primary committed the same
//! payload at the same place (the same stream, the same index among the
//! attempt's events on it), `corrected` with the committed payload when it
//! committed another, `retracted` when the attempt failed or was diverted
//! (the next attempt's mirror predicts again) or the primary did not emit
//! it at all. A committed event that no prediction stood for counts as
//! unpredicted.
//!
//! The view is a log of notices in memory, per runtime (per node): the
//! last [`KEPT_NOTICES`] of them, with an offset of their own. A consumer
//! reads it from an offset like a committed stream, and sees a prediction
//! and then its settlement. It is not durable: a node that restarts starts
//! an empty view, and what it had predicted is settled by nobody (the
//! committed stream is the record).

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// How many notices the view keeps (the oldest go first).
pub const KEPT_NOTICES: usize = 16_384;
/// How many attempts may have unsettled predictions at once; past that the
/// oldest are retracted (an attempt whose end never came).
const OPEN_ATTEMPTS: usize = 4_096;

/// What a notice says of a predicted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NoticeKind {
    /// The mirror emitted it; the primary has not committed yet.
    Predicted,
    /// The primary committed the same payload.
    Confirmed,
    /// The primary committed another payload (`payload` is the committed one).
    Corrected,
    /// The primary will not commit it: its attempt failed or was
    /// diverted, or it emitted nothing there.
    Retracted,
}

/// One notice of a stream's predicted view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PredictionNotice {
    /// Its place in the view, from 1 (shared by all streams).
    pub offset: u64,
    /// What it says.
    pub kind: NoticeKind,
    /// The stream.
    pub stream: String,
    /// The transaction whose mirror predicted the event.
    pub transaction_id: String,
    /// The attempt (from 1).
    pub attempt: u32,
    /// The event's place among the attempt's events on this stream (from 0).
    pub index: u32,
    /// The predicted payload; for `corrected`, the committed one.
    pub payload: Vec<u8>,
    /// For a settlement, the offset of the prediction it settles.
    pub settles: Option<u64>,
    /// For `confirmed` and `corrected`: how long before the commit the
    /// prediction was published, in microseconds.
    pub lead_micros: Option<u64>,
    /// For `retracted`: why.
    pub reason: Option<String>,
    /// When it was published, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

/// How a stream's predictions have fared on this node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PredictionStats {
    /// Events the mirrors emitted.
    pub predicted: u64,
    /// Predictions the primaries committed as they were.
    pub confirmed: u64,
    /// Predictions the primaries committed with another payload.
    pub corrected: u64,
    /// Predictions of attempts that failed or were diverted.
    pub retracted: u64,
    /// Predictions of committed attempts whose primary did not emit them.
    pub not_emitted: u64,
    /// Committed events that no prediction stood for.
    pub unpredicted: u64,
    /// The sum of the lead times of confirmed and corrected predictions,
    /// in microseconds.
    pub lead_micros_total: u64,
}

impl PredictionStats {
    /// Of the events committed by attempts a mirror predicted, the share
    /// that did not match a prediction (corrected, not emitted or
    /// unpredicted); `None` before any.
    pub fn mismatch_rate(&self) -> Option<f64> {
        let wrong = self.corrected + self.not_emitted + self.unpredicted;
        let settled = self.confirmed + wrong;
        (settled > 0).then(|| wrong as f64 / settled as f64)
    }

    /// The mean time from a prediction to its commit, in microseconds.
    pub fn mean_lead_micros(&self) -> Option<u64> {
        let settled = self.confirmed + self.corrected;
        (settled > 0).then(|| self.lead_micros_total / settled)
    }
}

/// A prediction waiting for its attempt's end.
#[derive(Debug)]
struct Open {
    offset: u64,
    stream: String,
    index: u32,
    payload: Vec<u8>,
    at: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    notices: VecDeque<PredictionNotice>,
    last_offset: u64,
    stats: BTreeMap<String, PredictionStats>,
    /// By (transaction, attempt), in the order they were opened.
    open: HashMap<(String, u32), Vec<Open>>,
    opened: VecDeque<(String, u32)>,
}

impl Inner {
    fn push(&mut self, mut notice: PredictionNotice) -> u64 {
        self.last_offset += 1;
        notice.offset = self.last_offset;
        if self.notices.len() == KEPT_NOTICES {
            self.notices.pop_front();
        }
        self.notices.push_back(notice);
        self.last_offset
    }

    fn retract(&mut self, transaction_id: &str, attempt: u32, open: Vec<Open>, reason: &str, not_emitted: bool) {
        for prediction in open {
            let stats = self.stats.entry(prediction.stream.clone()).or_default();
            if not_emitted {
                stats.not_emitted += 1
            } else {
                stats.retracted += 1
            }
            self.push(PredictionNotice {
                kind: NoticeKind::Retracted,
                stream: prediction.stream,
                transaction_id: transaction_id.to_string(),
                attempt,
                index: prediction.index,
                payload: prediction.payload,
                settles: Some(prediction.offset),
                reason: Some(reason.to_string()),
                ..notice_now()
            });
        }
    }
}

fn notice_now() -> PredictionNotice {
    PredictionNotice {
        offset: 0,
        kind: NoticeKind::Predicted,
        stream: String::new(),
        transaction_id: String::new(),
        attempt: 0,
        index: 0,
        payload: Vec::new(),
        settles: None,
        lead_micros: None,
        reason: None,
        at_unix_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
    }
}

/// The predicted view of every stream of one runtime.
#[derive(Debug, Default)]
pub struct PredictedStreams {
    inner: Mutex<Inner>,
}

impl PredictedStreams {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens an attempt whose mirror runs: its primary's committed events
    /// will be settled against what the mirror publishes (nothing, if it
    /// emits nothing: then they count as unpredicted).
    pub(crate) fn expect(&self, transaction_id: &str, attempt: u32) {
        let mut inner = self.lock();
        let key = (transaction_id.to_string(), attempt);
        if inner.open.contains_key(&key) {
            return;
        }
        if inner.opened.len() == OPEN_ATTEMPTS
            && let Some(oldest) = inner.opened.pop_front()
            && let Some(open) = inner.open.remove(&oldest)
        {
            inner.retract(&oldest.0, oldest.1, open, "the attempt never ended on this node", false);
        }
        inner.opened.push_back(key.clone());
        inner.open.insert(key, Vec::new());
    }

    /// Publishes an event a mirror emitted.
    pub(crate) fn publish(&self, transaction_id: &str, attempt: u32, stream: &str, payload: &[u8]) {
        self.expect(transaction_id, attempt);
        let mut inner = self.lock();
        let key = (transaction_id.to_string(), attempt);
        let index = inner.open.get(&key).map_or(0, |open| open.iter().filter(|o| o.stream == stream).count());
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        inner.stats.entry(stream.to_string()).or_default().predicted += 1;
        let offset = inner.push(PredictionNotice {
            stream: stream.to_string(),
            transaction_id: transaction_id.to_string(),
            attempt,
            index,
            payload: payload.to_vec(),
            ..notice_now()
        });
        let open = Open { offset, stream: stream.to_string(), index, payload: payload.to_vec(), at: Instant::now() };
        inner.open.entry(key).or_default().push(open);
    }

    /// Settles an attempt whose primary committed `events` (stream,
    /// payload), in the order it emitted them.
    pub(crate) fn settle_committed<'a>(
        &self,
        transaction_id: &str,
        attempt: u32,
        events: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) {
        let mut inner = self.lock();
        let key = (transaction_id.to_string(), attempt);
        let Some(mut open) = inner.open.remove(&key) else {
            // An attempt without a mirror predicted nothing and misses nothing.
            return;
        };
        inner.opened.retain(|k| k != &key);
        let mut seen: HashMap<&str, u32> = HashMap::new();
        for (stream, payload) in events {
            let index = seen.entry(stream).or_default();
            let place = open.iter().position(|o| o.stream == stream && o.index == *index);
            *index += 1;
            let Some(place) = place else {
                inner.stats.entry(stream.to_string()).or_default().unpredicted += 1;
                continue;
            };
            let prediction = open.swap_remove(place);
            let lead = u64::try_from(prediction.at.elapsed().as_micros()).unwrap_or(u64::MAX);
            let same = prediction.payload == payload;
            let stats = inner.stats.entry(stream.to_string()).or_default();
            if same {
                stats.confirmed += 1
            } else {
                stats.corrected += 1
            }
            stats.lead_micros_total = stats.lead_micros_total.saturating_add(lead);
            inner.push(PredictionNotice {
                kind: if same { NoticeKind::Confirmed } else { NoticeKind::Corrected },
                stream: stream.to_string(),
                transaction_id: transaction_id.to_string(),
                attempt,
                index: prediction.index,
                payload: payload.to_vec(),
                settles: Some(prediction.offset),
                lead_micros: Some(lead),
                ..notice_now()
            });
        }
        open.sort_by_key(|o| o.offset);
        inner.retract(transaction_id, attempt, open, "the primary committed without emitting it", true);
    }

    /// Settles an attempt that did not commit: its predictions are retracted.
    pub(crate) fn settle_failed(&self, transaction_id: &str, attempt: u32, reason: &str) {
        let mut inner = self.lock();
        let key = (transaction_id.to_string(), attempt);
        if let Some(open) = inner.open.remove(&key) {
            inner.opened.retain(|k| k != &key);
            inner.retract(transaction_id, attempt, open, reason, false);
        }
    }

    /// The notices of `stream` after `after`, at most `limit`, oldest first.
    pub fn notices(&self, stream: &str, after: u64, limit: usize) -> Vec<PredictionNotice> {
        let inner = self.lock();
        // Offsets are dense in the deque: start at the first past `after`.
        let first = inner.notices.front().map_or(0, |n| n.offset);
        let skip = usize::try_from(after.saturating_add(1).saturating_sub(first)).unwrap_or(usize::MAX);
        inner.notices.iter().skip(skip).filter(|n| n.stream == stream).take(limit).cloned().collect()
    }

    /// How each stream's predictions have fared, by stream.
    pub fn all_stats(&self) -> Vec<(String, PredictionStats)> {
        self.lock().stats.iter().map(|(stream, stats)| (stream.clone(), stats.clone())).collect()
    }

    /// How `stream`'s predictions have fared.
    pub fn stats(&self, stream: &str) -> PredictionStats {
        self.lock().stats.get(stream).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::{NoticeKind, PredictedStreams};

    fn kinds(view: &PredictedStreams, stream: &str) -> Vec<(NoticeKind, Vec<u8>)> {
        view.notices(stream, 0, 100).into_iter().map(|n| (n.kind, n.payload)).collect()
    }

    #[test]
    fn predictions_are_confirmed_corrected_or_retracted() {
        let view = PredictedStreams::default();
        // A mirrored attempt whose mirror emits nothing: its primary's
        // event is unpredicted; an attempt without a mirror counts nothing.
        view.expect("quiet", 1);
        view.settle_committed("quiet", 1, [("s", b"z".as_slice())]);
        view.settle_committed("alone", 1, [("s", b"z".as_slice())]);
        assert_eq!(view.stats("s").unpredicted, 1);
        view.publish("t", 1, "s", b"a");
        view.publish("t", 1, "s", b"b");
        view.publish("t", 1, "other", b"x");
        assert_eq!(kinds(&view, "s"), [(NoticeKind::Predicted, b"a".to_vec()), (NoticeKind::Predicted, b"b".to_vec())]);
        // The primary commits `a`, then `c` where the mirror said `b`, and
        // nothing on `other`; plus an event nobody predicted.
        view.settle_committed("t", 1, [("s", b"a".as_slice()), ("s", b"c".as_slice()), ("s", b"d".as_slice())]);
        // (confirmed a, corrected c; d unpredicted; `other`'s x not emitted.)
        let settled: Vec<(NoticeKind, Vec<u8>)> = kinds(&view, "s").into_iter().skip(2).collect();
        assert_eq!(settled, [(NoticeKind::Confirmed, b"a".to_vec()), (NoticeKind::Corrected, b"c".to_vec())]);
        assert_eq!(kinds(&view, "other")[1].0, NoticeKind::Retracted);
        let stats = view.stats("s");
        assert_eq!((stats.predicted, stats.confirmed, stats.corrected, stats.unpredicted), (2, 1, 1, 2));
        assert_eq!(stats.mismatch_rate(), Some(3.0 / 4.0));
        assert!(stats.mean_lead_micros().is_some());

        // A failed attempt's predictions are retracted with the reason.
        view.publish("u", 1, "s", b"e");
        view.settle_failed("u", 1, "diverted");
        let last = view.notices("s", 0, 100).pop().expect("a notice");
        assert_eq!(
            (last.kind, last.reason.as_deref(), last.transaction_id.as_str()),
            (NoticeKind::Retracted, Some("diverted"), "u")
        );
        assert_eq!(view.stats("s").retracted, 1);
        // Reading from an offset skips what came before.
        let from = view.notices("s", last.offset - 1, 10);
        assert_eq!(from.len(), 1);
        assert!(view.notices("s", last.offset, 10).is_empty());
    }
}
