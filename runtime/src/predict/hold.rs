//! Whether an endpoint's calls, or those of its calls that carry one input
//! condition, are being held back by the predictor, and when to let one
//! through to measure it again: the memory of a half-open circuit breaker.
//!
//! The predictor keeps one for each endpoint and one for each input
//! condition an endpoint has answered under. Per condition matters: while
//! a gateway declines euro charges and takes all others, the endpoint as a
//! whole keeps answering, so a hold kept only for the endpoint would never
//! see that euro charges are being held back, never probe them, and keep
//! diverting them long after the outage ended.

use super::history::Evidence;
use std::time::Instant;

/// The first probe waits this share of the probe interval; each probe that
/// fails doubles the wait, up to the interval. At low traffic, an outage
/// that ends soon is found soon, and one that lasts costs a request per
/// interval.
const FIRST_PROBE_SHARE: u32 = 16;
/// A probe also goes after this many calls were held back since the last
/// try, however many probes failed: under heavy traffic a recovery is found
/// after a few held calls, not after a time that many calls were diverted
/// in. (Doubling this count too, as the wait is, made a long outage cheaper
/// by a few wasted calls, and after its end kept diverting calls that would
/// have gone through for up to four times as long: on the shop workload,
/// false diversions fell from about 5% to 3% without it, and wasted calls
/// stayed as they were.)
const PROBE_AFTER_HELD: u32 = 4;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Hold {
    /// When an answer last arrived (or a failure to get one).
    heard: Instant,
    /// When a mirror last asked for the endpoint with an unsafe call that
    /// was stubbed. Later than `heard`, the calls are wanted and not sent:
    /// they are held back (diverted or stopped at the gate).
    asked: Option<Instant>,
    /// When a probe was last let through.
    probed: Option<Instant>,
    /// Probes that failed since the last good answer.
    failed_probes: u32,
    /// Calls asked for and held back since the last probe or answer.
    held_asks: u32,
}

impl Hold {
    /// A hold whose first answer came at `now`.
    pub(crate) fn new(now: Instant) -> Self {
        Self { heard: now, asked: None, probed: None, failed_probes: 0, held_asks: 0 }
    }

    /// Whether the calls are being held back.
    pub(crate) fn held(&self) -> bool {
        self.asked.is_some_and(|asked| asked > self.heard)
    }

    /// Whether calls were held back before the one just asked for: the
    /// hold is more than the moment between a mirror's ask and its
    /// primary's call.
    pub(crate) fn holding_back(&self) -> bool {
        self.held() && self.held_asks > 0
    }

    /// When what is known starts to fade: from the last answer, or while
    /// the calls are held back, from the last time one was asked for, so
    /// that an outage the gate keeps away from stays visible.
    pub(crate) fn fresh_until(&self) -> Instant {
        self.asked.map_or(self.heard, |asked| asked.max(self.heard))
    }

    /// Records that a call was asked for at `now` (a mirror's stubbed
    /// unsafe call): unless an answer follows, it is being held back.
    pub(crate) fn ask(&mut self, now: Instant) {
        if self.held() {
            self.held_asks = self.held_asks.saturating_add(1);
        }
        self.asked = Some(now);
    }

    /// Whether a held call should go as a probe at `now`: a wait after the
    /// last try, doubled by every failed probe unless `fresh_start` (the
    /// call is of a kind failed probes say nothing of), or a number of held
    /// calls (see [`FIRST_PROBE_SHARE`] and [`PROBE_AFTER_HELD`]).
    pub(crate) fn probe_due(&self, fresh_start: bool, evidence: &Evidence, now: Instant) -> bool {
        if !self.held() {
            return false;
        }
        let failed_probes = if fresh_start { 0 } else { self.failed_probes };
        let doubled = 1_u32 << failed_probes.min(FIRST_PROBE_SHARE.trailing_zeros());
        let wait = (evidence.probe_interval * doubled / FIRST_PROBE_SHARE).min(evidence.probe_interval);
        let last_try = self.probed.map_or(self.heard, |probed| probed.max(self.heard));
        now.saturating_duration_since(last_try) >= wait || self.held_asks >= PROBE_AFTER_HELD
    }

    /// Records that a call was let through as a probe at `now`.
    pub(crate) fn probe(&mut self, now: Instant) {
        self.probed = Some(now);
        self.held_asks = 0;
    }

    /// Records an answer at `now`, `taken` or not (failed, refused or
    /// rate limited). Returns whether it recovered: the first answer since
    /// a probe was let through came back well, so what was known of the
    /// outage is over.
    pub(crate) fn answer(&mut self, taken: bool, now: Instant) -> bool {
        let probing = self.probed.is_some_and(|probed| probed > self.heard);
        self.held_asks = 0;
        self.failed_probes = match (taken, probing) {
            (true, _) => 0,
            (false, true) => self.failed_probes.saturating_add(1),
            (false, false) => self.failed_probes,
        };
        self.heard = now;
        taken && probing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn evidence() -> Evidence {
        Evidence { half_life: Duration::from_secs(30), probe_interval: Duration::from_millis(1_600) }
    }

    #[test]
    fn a_probe_goes_after_a_share_of_the_interval_or_a_few_held_calls_and_failures_double_the_wait() {
        let start = Instant::now();
        let mut hold = Hold::new(start);
        assert!(!hold.probe_due(false, &evidence(), start + Duration::from_secs(60)), "not held: no probe");
        hold.ask(start + Duration::from_millis(1));
        assert!(hold.held());
        assert!(!hold.probe_due(false, &evidence(), start + Duration::from_millis(50)));
        assert!(hold.probe_due(false, &evidence(), start + Duration::from_millis(100)), "a sixteenth of 1.6 s");
        for ms in 2..6 {
            hold.ask(start + Duration::from_millis(ms));
        }
        assert!(hold.probe_due(false, &evidence(), start + Duration::from_millis(6)), "four held calls");
        hold.probe(start + Duration::from_millis(6));
        assert!(!hold.answer(false, start + Duration::from_millis(8)), "a failed probe recovers nothing");
        hold.ask(start + Duration::from_millis(9));
        let after_failure = start + Duration::from_millis(8 + 150);
        assert!(!hold.probe_due(false, &evidence(), after_failure), "the wait doubled to 200 ms");
        assert!(hold.probe_due(true, &evidence(), after_failure), "unless failed probes say nothing of this call");
        assert!(hold.probe_due(false, &evidence(), start + Duration::from_millis(8 + 200)));
        for ms in 10..14 {
            hold.ask(start + Duration::from_millis(ms));
        }
        assert!(hold.probe_due(false, &evidence(), start + Duration::from_millis(14)), "four held calls still do");
        hold.probe(start + Duration::from_millis(210));
        assert!(hold.answer(true, start + Duration::from_millis(212)), "a taken probe recovers");
        assert!(!hold.held());
        assert!(!hold.probe_due(false, &evidence(), start + Duration::from_secs(60)));
    }

    #[test]
    fn an_answer_that_was_no_probe_recovers_nothing() {
        let start = Instant::now();
        let mut hold = Hold::new(start);
        hold.ask(start + Duration::from_millis(1));
        assert!(!hold.answer(true, start + Duration::from_millis(2)));
        assert!(!hold.held(), "an answer ends the hold");
    }
}
