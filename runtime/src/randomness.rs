//! Where the runtime's randomness comes from, behind a seam: the operating
//! system's in production, and a seeded generator in a test that needs to
//! know what is drawn.
//!
//! Everything random the runtime chooses comes from here: transaction ids,
//! the seeds of the guests' `wasi:random`, and the jitter of retry delays.

use rand::distr::{Distribution, StandardUniform};
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use std::sync::{Arc, Mutex, PoisonError};

/// A source of random numbers for the runtime. Cheap to clone; clones draw
/// from the same source.
#[derive(Debug, Clone, Default)]
pub struct Randomness {
    /// `None` draws from the thread's generator, seeded by the operating
    /// system: no lock on the hot path.
    seeded: Option<Arc<Mutex<StdRng>>>,
}

impl Randomness {
    /// Randomness seeded by the operating system (the default).
    pub fn from_system() -> Self {
        Self::default()
    }

    /// A generator that draws the same numbers for the same seed, for tests.
    /// Not for production: generated transaction ids repeat from one run
    /// to the next, and a repeated id is refused at the commit.
    pub fn seeded(seed: u64) -> Self {
        Self { seeded: Some(Arc::new(Mutex::new(StdRng::seed_from_u64(seed)))) }
    }

    /// A random value: any `u64`, or an `f64` in `[0, 1)`.
    pub(crate) fn draw<T>(&self) -> T
    where
        StandardUniform: Distribution<T>,
    {
        match &self.seeded {
            None => rand::random(),
            Some(rng) => rng.lock().unwrap_or_else(PoisonError::into_inner).random(),
        }
    }

    /// A random `u64`.
    pub(crate) fn next_u64(&self) -> u64 {
        self.draw()
    }

    /// A new transaction id: 128 random bits, in hex.
    pub(crate) fn transaction_id(&self) -> String {
        let bits = (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64());
        format!("{bits:032x}")
    }
}

#[cfg(test)]
mod tests {
    use super::Randomness;

    #[test]
    fn a_seed_draws_the_same_numbers_and_ids_have_128_bits() {
        let (a, b) = (Randomness::seeded(7), Randomness::seeded(7));
        let drawn: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        assert_eq!(drawn, (0..4).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(drawn[0], drawn[1], "a generator, not a constant");
        let id = Randomness::seeded(7).transaction_id();
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        assert_ne!(Randomness::from_system().transaction_id(), Randomness::from_system().transaction_id());
    }
}
