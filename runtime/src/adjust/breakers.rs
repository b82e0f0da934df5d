//! The circuit breakers of the hosts guests call, one per host and port,
//! on this node: a primary's call to a host whose breaker is open is not
//! sent (it fails at once, traced as short-circuited), and the mirror's
//! call fails the same way, so the predictor sees it before the primary
//! tries. A policy gives the thresholds (`[breaker]`); a host no rule
//! names has no breaker.
//!
//! Breakers are per node, not shared through the store: a breaker must
//! answer in the time of a function call, on every outbound call, and a
//! node learns that a host is down from its own calls within
//! `failures` of them. Shared state would cost a database round trip per
//! call and fail when the database does.

use super::breaker::{Breaker, BreakerRule, BreakerState};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How many hosts' breakers are kept; beyond it, the closed ones go.
const MAX_HOSTS: usize = 4096;

/// A breaker as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerView {
    /// The host and port.
    pub host: String,
    /// Its state now.
    pub state: BreakerState,
    /// Failures in a row while closed.
    pub failures_in_a_row: u32,
    /// While open, how long until a trial call goes.
    pub opens_in: Option<Duration>,
}

/// Why a call was not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShortCircuit {
    /// How long until a trial call goes (zero while a trial is out).
    pub(crate) opens_in: Duration,
}

#[derive(Debug, Default)]
struct Entry {
    breaker: Breaker,
    /// The host's concurrency limit and its slots, if a policy sets one.
    slots: Option<(u32, Arc<Semaphore>)>,
}

/// Every breaker of a runtime.
#[derive(Debug, Default)]
pub(crate) struct Breakers {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Breakers {
    fn with<T>(&self, host: &str, work: impl FnOnce(&mut Entry) -> T) -> T {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_HOSTS && !entries.contains_key(host) {
            let now = Instant::now();
            entries.retain(|_, entry| entry.breaker.state(now) != BreakerState::Closed || entry.slots.is_some());
        }
        work(entries.entry(host.to_string()).or_default())
    }

    /// Whether a call to `host` may go now. A primary's call takes the
    /// trial of a half-open breaker; the mirror only looks (`peek`): it is
    /// refused while the breaker is open, and takes nothing.
    pub(crate) fn admit(&self, host: &str, peek: bool, now: Instant) -> Result<(), ShortCircuit> {
        self.with(host, |entry| {
            let open = |breaker: &Breaker| ShortCircuit {
                opens_in: breaker.opens_again_at().map_or(Duration::ZERO, |at| at.saturating_duration_since(now)),
            };
            if peek {
                return if entry.breaker.state(now) == BreakerState::Open { Err(open(&entry.breaker)) } else { Ok(()) };
            }
            if entry.breaker.permit(now) { Ok(()) } else { Err(open(&entry.breaker)) }
        })
    }

    /// A call admitted to `host` was not made: it leaves the trial, if it
    /// was one, to the next call.
    pub(crate) fn abandon(&self, host: &str) {
        self.with(host, |entry| entry.breaker.abandon_trial());
    }

    /// The slots of `host` for at most `max` calls at once.
    pub(crate) fn slots(&self, host: &str, max: u32) -> Arc<Semaphore> {
        self.with(host, |entry| match &entry.slots {
            Some((limit, slots)) if *limit == max => slots.clone(),
            _ => {
                let slots = Arc::new(Semaphore::new(usize::try_from(max).unwrap_or(usize::MAX)));
                entry.slots = Some((max, slots.clone()));
                slots
            }
        })
    }

    /// What a call to `host` met: `well` unless it failed, timed out or
    /// was answered `5xx`.
    pub(crate) fn report(&self, host: &str, rule: BreakerRule, well: bool, now: Instant) {
        self.with(host, |entry| if well { entry.breaker.succeeded() } else { entry.breaker.failed(now, rule) });
    }

    /// The state of the breaker of the host an endpoint names (`METHOD
    /// scheme://host:port/path`, see `predict::endpoint_key`), as the
    /// predictor reads it: 0 closed or none, 0.5 half-open, 1 open.
    pub(crate) fn state_of_endpoint(&self, endpoint: &str, now: Instant) -> f32 {
        let Some(host) = endpoint.split_once("://").and_then(|(_, rest)| rest.split('/').next()) else { return 0.0 };
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(host).map(|entry| entry.breaker.state(now)) {
            Some(BreakerState::Open) => 1.0,
            Some(BreakerState::HalfOpen) => 0.5,
            Some(BreakerState::Closed) | None => 0.0,
        }
    }

    /// Every breaker, by host.
    pub(crate) fn views(&self, now: Instant) -> Vec<BreakerView> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let mut views: Vec<BreakerView> = entries
            .iter()
            .map(|(host, entry)| BreakerView {
                host: host.clone(),
                state: entry.breaker.state(now),
                failures_in_a_row: entry.breaker.failures_in_a_row(),
                opens_in: entry
                    .breaker
                    .opens_again_at()
                    .filter(|at| *at > now)
                    .map(|at| at.saturating_duration_since(now)),
            })
            .collect();
        views.sort_by(|a, b| a.host.cmp(&b.host));
        views
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_predictor_reads_the_state_of_an_endpoints_host() {
        let breakers = Breakers::default();
        let rule = BreakerRule { failures: 2, open_for: Duration::from_millis(100) };
        let start = Instant::now();
        let charge = "POST http://h:443/charges";
        assert_eq!(breakers.state_of_endpoint(charge, start), 0.0, "no breaker yet");
        breakers.report("h:443", rule, false, start);
        assert_eq!(breakers.state_of_endpoint(charge, start), 0.0, "closed, one failure short");
        breakers.report("h:443", rule, false, start);
        assert_eq!(breakers.state_of_endpoint(charge, start), 1.0, "open");
        assert_eq!(breakers.state_of_endpoint("GET http://h:443/health", start), 1.0, "the host's, any path");
        assert_eq!(breakers.state_of_endpoint("POST http://other:443/charges", start), 0.0);
        let later = start + Duration::from_millis(100);
        assert_eq!(breakers.state_of_endpoint(charge, later), 0.5, "half-open: a trial is due");
        assert_eq!(breakers.state_of_endpoint("not an endpoint", later), 0.0);
    }

    #[test]
    fn the_mirror_looks_the_primary_takes_the_trial() {
        let breakers = Breakers::default();
        let rule = BreakerRule { failures: 1, open_for: Duration::from_millis(100) };
        let start = Instant::now();
        breakers.report("h:443", rule, false, start);
        assert_eq!(breakers.admit("h:443", true, start), Err(ShortCircuit { opens_in: Duration::from_millis(100) }));
        assert!(breakers.admit("h:443", false, start).is_err());
        let later = start + Duration::from_millis(100);
        assert!(breakers.admit("h:443", true, later).is_ok(), "the mirror may look");
        assert!(breakers.admit("h:443", true, later).is_ok(), "and takes nothing");
        assert!(breakers.admit("h:443", false, later).is_ok(), "the primary's trial");
        assert!(breakers.admit("h:443", false, later).is_err(), "one trial at a time");
        breakers.report("h:443", rule, true, later);
        assert!(breakers.admit("h:443", false, later).is_ok());
        assert!(breakers.admit("other:443", false, later).is_ok(), "each host its own");
        let views = breakers.views(later);
        assert_eq!(
            views.iter().map(|v| (v.host.as_str(), v.state)).collect::<Vec<_>>(),
            [("h:443", BreakerState::Closed), ("other:443", BreakerState::Closed)]
        );
    }
}
