//! The server's connections as the metrics and the operator page show
//! them: open now, and those it closed for a limit since it started.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counts kept by the server and read at each scrape.
#[derive(Debug, Default)]
pub struct Connections {
    open: AtomicU64,
    refused: AtomicU64,
    timed_out: AtomicU64,
    idle: AtomicU64,
}

/// What [`Connections`] holds at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ConnectionCounts {
    /// Open now.
    pub open: u64,
    /// Closed at once because `max_connections` were open.
    pub refused: u64,
    /// Closed because a request's head or body was late.
    pub timed_out: u64,
    /// Closed because they moved nothing for the idle timeout.
    pub idle: u64,
}

impl Connections {
    pub(crate) fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// One more refused; how many so far.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn timed_out(&self) {
        self.timed_out.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn idle(&self) {
        self.idle.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn counts(&self) -> ConnectionCounts {
        ConnectionCounts {
            open: self.open.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            idle: self.idle.load(Ordering::Relaxed),
        }
    }
}
