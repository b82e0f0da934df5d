//! Hedging: an alternative path runs beside a primary the predictor doubts,
//! and exactly one of the two takes effect.
//!
//! The two attempts of a race each hold a [`HedgeSeat`]. Before anything
//! that cannot be undone (an unsafe outbound call, or the commit) an attempt
//! takes the race's token: the first to ask gets it and keeps it until its
//! attempt ends; the other waits at that point. When the holder is ready to
//! commit, it wins: the other is cancelled (its wait ends in a refusal, and
//! its instances trap at their next epoch tick) and commits nothing. When
//! the holder fails instead, it hands the token back, and the other goes on.
//! So the loser never sends an unsafe call, and the winner's effects are the
//! only ones.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

#[derive(Debug, Default)]
struct RaceState {
    /// The seat holding the token.
    holder: Option<usize>,
    /// The seat that won.
    winner: Option<usize>,
    /// Whether the hedge was asked for.
    requested: bool,
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
        drop(state);
        self.race.changed.notify_waiters();
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
}
