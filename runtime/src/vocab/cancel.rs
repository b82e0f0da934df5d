//! A caller's request to stop its transaction: one flag, shared by whoever
//! asks (the service's cancel endpoint) and every place the runtime looks
//! at it.
//!
//! Stopping is cooperative: the runtime looks at the flag only where
//! stopping is safe — before each attempt, while the guest computes (its
//! instances are interrupted at their next epoch tick), before each unsafe
//! call, while a safe call waits for its answer, and before the commit. It
//! never abandons an unsafe call in flight, whose answer the effect
//! journal must learn, nor a commit under way: a cancel that comes as the
//! commit is made is too late, and the transaction's record says so.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;

/// A transaction's cancel flag. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<Flag>);

#[derive(Debug, Default)]
struct Flag {
    set: AtomicBool,
    /// Wakes those waiting in [`CancelToken::cancelled`].
    notify: Notify,
}

impl CancelToken {
    /// A token nobody has cancelled yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the transaction to stop. Idempotent.
    pub fn cancel(&self) {
        self.0.set.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    /// Whether the transaction was asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.0.set.load(Ordering::SeqCst)
    }

    /// Waits until the transaction is asked to stop (at once if it was).
    pub async fn cancelled(&self) {
        let notified = self.0.notify.notified();
        let mut notified = std::pin::pin!(notified);
        // Registered before the flag is read, so that a cancel between the
        // two is not missed.
        notified.as_mut().enable();
        if self.is_cancelled() {
            return;
        }
        notified.await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn clones_share_one_flag() {
        let token = CancelToken::new();
        let held = token.clone();
        assert!(!held.is_cancelled());
        token.cancel();
        token.cancel();
        assert!(held.is_cancelled());
    }

    #[tokio::test]
    async fn a_waiter_wakes_when_cancelled_and_a_late_one_at_once() {
        let token = CancelToken::new();
        let waiter = tokio::spawn({
            let token = token.clone();
            async move { token.cancelled().await }
        });
        tokio::task::yield_now().await;
        token.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.unwrap().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), token.cancelled()).await.unwrap();
    }
}
