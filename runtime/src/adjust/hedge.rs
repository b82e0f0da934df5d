//! Hedging: an alternative path runs beside a primary that is slow or that
//! the predictor doubts, and exactly one of the two takes effect.
//!
//! The hedge starts when the primary has run longer than the policy's delay
//! (fixed, or a percentile of the path's recent committed attempts: see
//! [`HedgeDelays`]), or when the primary's gate asks for it. Both then run.
//! Before anything that cannot be undone (an unsafe outbound call, or the
//! commit) an attempt takes the race's token: the first to ask gets it and
//! keeps it until its attempt ends; the other waits at that point. The
//! first ready to commit wins: the other is cancelled (its wait ends in a
//! refusal, and its instances trap at their next epoch tick) and commits
//! nothing. When the holder fails instead, it hands the token back, and the
//! other goes on; what the failed holder sent is compensated once the
//! transaction commits (see `runtime::compensate_abandoned`).
//!
//! A primary whose gate asked for the hedge does not take the token at
//! once: it yields, for the policy's `yield_ms` at most, so that the hedge
//! can reach its own first unsafe call first. Otherwise the primary, already
//! at its call, would always win, and the hedge would be a mere standby.

use crate::policy::{HedgeSettings, MAX_HEDGE_SAMPLES};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Debug, Default)]
struct RaceState {
    /// The seat holding the token.
    holder: Option<usize>,
    /// The seat that won.
    winner: Option<usize>,
    /// Whether the hedge was asked for.
    requested: bool,
    /// Seats whose attempt ended without winning.
    ended: [bool; 2],
}

/// The race of one primary attempt and its hedge.
#[derive(Debug, Default)]
pub(crate) struct HedgeRace {
    state: Mutex<RaceState>,
    changed: Notify,
    /// Set for a seat when the other won: its instances stop.
    cancelled: [Arc<AtomicBool>; 2],
}

/// One attempt's place in a race: 0 for the primary attempt, 1 for the hedge.
#[derive(Debug, Clone)]
pub(crate) struct HedgeSeat {
    race: Arc<HedgeRace>,
    seat: usize,
}

/// The other attempt won the race.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lost;

impl HedgeRace {
    /// A race and its two seats.
    pub(crate) fn start() -> (HedgeSeat, HedgeSeat) {
        let race = Arc::new(Self::default());
        (HedgeSeat { race: race.clone(), seat: 0 }, HedgeSeat { race, seat: 1 })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RaceState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl HedgeSeat {
    /// The flag that stops this seat's instances when the other seat wins.
    pub(crate) fn cancelled(&self) -> Arc<AtomicBool> {
        self.race.cancelled[self.seat].clone()
    }

    /// Whether this is the primary attempt's seat (which may ask for a hedge).
    pub(crate) fn is_primary(&self) -> bool {
        self.seat == 0
    }

    /// Asks for the hedge to start (the primary's gate does, once).
    pub(crate) fn request_hedge(&self) {
        self.race.lock().requested = true;
        self.race.changed.notify_waiters();
    }

    /// Waits until the hedge is asked for.
    pub(crate) async fn hedge_requested(&self) {
        loop {
            let changed = self.race.changed.notified();
            if self.race.lock().requested {
                return;
            }
            changed.await;
        }
    }

    /// Takes the token, waiting while the other seat holds it.
    pub(crate) async fn claim(&self) -> Result<(), Lost> {
        loop {
            let changed = self.race.changed.notified();
            {
                let mut state = self.race.lock();
                match (state.winner, state.holder) {
                    (Some(winner), _) if winner != self.seat => return Err(Lost),
                    (_, None) => {
                        state.holder = Some(self.seat);
                        return Ok(());
                    }
                    (_, Some(holder)) if holder == self.seat => return Ok(()),
                    _ => {}
                }
            }
            changed.await;
        }
    }

    /// Takes the token, but first lets the other seat take it, for up to
    /// `window`: until the other seat holds it, ends or wins, or the window
    /// passes, whichever comes first.
    pub(crate) async fn claim_yielding(&self, window: Duration) -> Result<(), Lost> {
        let deadline = tokio::time::Instant::now() + window;
        loop {
            let changed = self.race.changed.notified();
            {
                let state = self.race.lock();
                if state.holder.is_some() || state.winner.is_some() || state.ended[1 - self.seat] {
                    break;
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                break;
            }
        }
        self.claim().await
    }

    /// Takes the token and wins: the other seat is cancelled.
    pub(crate) async fn win(&self) -> Result<(), Lost> {
        self.claim().await?;
        self.race.lock().winner = Some(self.seat);
        self.race.cancelled[1 - self.seat].store(true, Ordering::SeqCst);
        self.race.changed.notify_waiters();
        Ok(())
    }

    /// Ends this seat's part without winning: the token goes back.
    pub(crate) fn release(&self) {
        let mut state = self.race.lock();
        if state.holder == Some(self.seat) {
            state.holder = None;
        }
        state.ended[self.seat] = true;
        drop(state);
        self.race.changed.notify_waiters();
    }
}

/// The recent durations of each path's committed attempts, on this node:
/// what a hedge's percentile delay is taken over.
#[derive(Debug, Default)]
pub(crate) struct HedgeDelays {
    /// By module hash, then path: the newest durations (µs), oldest first.
    /// Nested, so that a commit looks its path up without allocating.
    paths: Mutex<HashMap<String, HashMap<String, VecDeque<u64>>>>,
}

impl HedgeDelays {
    /// Remembers how long a committed attempt of the path took.
    pub(crate) fn record(&self, module: &str, path: &str, micros: u64) {
        let mut paths = self.paths.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !paths.get(module).is_some_and(|of_module| of_module.contains_key(path)) {
            paths.entry(module.to_string()).or_default().insert(path.to_string(), VecDeque::new());
        }
        let Some(durations) = paths.get_mut(module).and_then(|of_module| of_module.get_mut(path)) else { return };
        if durations.len() == MAX_HEDGE_SAMPLES {
            durations.pop_front();
        }
        durations.push_back(micros);
    }

    /// How long the primary runs before its hedge starts, if the policy
    /// starts hedges by time: the percentile of the path's durations once
    /// there are enough of them, else the fixed delay.
    pub(crate) fn delay(&self, module: &str, path: &str, settings: &HedgeSettings) -> Option<Duration> {
        let fixed = settings.after_ms.map(Duration::from_millis);
        let Some(percentile) = settings.after_percentile else { return fixed };
        let paths = self.paths.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(durations) = paths.get(module).and_then(|of_module| of_module.get(path)) else { return fixed };
        if durations.len() < settings.min_samples {
            return fixed;
        }
        let mut sorted: Vec<u64> = durations.iter().copied().collect();
        drop(paths);
        sorted.sort_unstable();
        // The nearest rank: the smallest duration at or above which lies
        // `percentile` percent of the samples.
        let rank = ((percentile / 100.0) * sorted.len() as f64).ceil() as usize;
        let micros = sorted[rank.clamp(1, sorted.len()) - 1];
        Some(Duration::from_micros(micros))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_claim_holds_until_it_wins_or_fails() {
        let (primary, hedge) = HedgeRace::start();
        primary.claim().await.expect("free");
        let waiting = tokio::spawn({
            let hedge = hedge.clone();
            async move { hedge.claim().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the hedge waits while the primary holds the token");
        primary.win().await.expect("the holder wins");
        assert_eq!(waiting.await.expect("joins"), Err(Lost));
        assert!(hedge.cancelled().load(Ordering::SeqCst));
        assert!(!primary.cancelled().load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_failed_holder_hands_the_token_on() {
        let (primary, hedge) = HedgeRace::start();
        primary.claim().await.expect("free");
        let waiting = tokio::spawn({
            let hedge = hedge.clone();
            async move { hedge.win().await }
        });
        tokio::task::yield_now().await;
        primary.release();
        assert_eq!(waiting.await.expect("joins"), Ok(()));
        assert!(primary.cancelled().load(Ordering::SeqCst));
        assert_eq!(primary.claim().await, Err(Lost));
    }

    #[tokio::test]
    async fn a_yielding_claim_lets_the_other_seat_take_the_token_first() {
        let (primary, hedge) = HedgeRace::start();
        let yielding = tokio::spawn({
            let primary = primary.clone();
            async move { primary.claim_yielding(Duration::from_secs(30)).await }
        });
        tokio::task::yield_now().await;
        assert!(!yielding.is_finished(), "the primary waits for its hedge");
        hedge.claim().await.expect("the hedge takes the token first");
        hedge.win().await.expect("and wins");
        assert_eq!(yielding.await.expect("joins"), Err(Lost), "the primary lost without sending anything");
    }

    #[tokio::test]
    async fn a_yielding_claim_stops_yielding_when_the_other_seat_ends_or_the_window_passes() {
        let (primary, hedge) = HedgeRace::start();
        let yielding = tokio::spawn({
            let primary = primary.clone();
            async move { primary.claim_yielding(Duration::from_secs(30)).await }
        });
        tokio::task::yield_now().await;
        hedge.release();
        assert_eq!(yielding.await.expect("joins"), Ok(()), "the hedge ended: the primary goes on");

        let (primary, _hedge) = HedgeRace::start();
        let claimed = primary.claim_yielding(Duration::from_millis(10)).await;
        assert_eq!(claimed, Ok(()), "a hedge that never comes is waited for only the window");
    }

    #[test]
    fn the_delay_is_the_percentile_once_the_path_has_enough_samples() {
        let delays = HedgeDelays::default();
        let settings =
            HedgeSettings { after_ms: Some(250), after_percentile: Some(90.0), min_samples: 10, ..Default::default() };
        for micros in 1..=9 {
            delays.record("m", "p", micros * 1_000);
        }
        assert_eq!(delays.delay("m", "p", &settings), Some(Duration::from_millis(250)), "too few: the fixed delay");
        delays.record("m", "p", 100_000);
        assert_eq!(delays.delay("m", "p", &settings), Some(Duration::from_millis(9)), "the 9th of 10");
        assert_eq!(delays.delay("m", "other", &settings), Some(Duration::from_millis(250)), "per path");
        let untimed = HedgeSettings::default();
        assert_eq!(delays.delay("m", "p", &untimed), None, "no timed hedge unless the policy asks");
        for _ in 0..MAX_HEDGE_SAMPLES {
            delays.record("m", "p", 7_000);
        }
        assert_eq!(delays.delay("m", "p", &settings), Some(Duration::from_millis(7)), "only the newest are kept");
    }
}
