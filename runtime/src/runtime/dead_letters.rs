//! What becomes of a transaction that failed on every path: its
//! compensation, its dead letter, and its replay; and of one that was in
//! flight when the process stopped.

use super::idempotency::{Fingerprint, input_hash};
use super::{ExecuteError, Purpose, Runtime, TransactionRun, choose_path, unix_millis};
use crate::instance::module::Module;
use crate::policy::Policy;
use crate::store::{Compensation, DeadLetter, Fence, History, StoreError, TransactionOutcome, TransactionRecord};
use crate::transaction::{DeadLetterFilter, TxReport, TxRequest, history};
use crate::vocab::{Failure, FailureKind};
use std::sync::Arc;

/// How a compensation's transaction id ends: the compensated transaction's
/// id, then this.
const COMPENSATION_SUFFIX: &str = ".compensation";

/// What a replay's transaction id has between the letter's id and a
/// random tail, when the replay continues the letter's effect journal.
const REPLAY_INFIX: &str = ".replay-";

/// The id of the transaction the compensation `id` compensates, if it is one.
pub(super) fn compensated(id: &str) -> Option<&str> {
    id.strip_suffix(COMPENSATION_SUFFIX)
}

/// The request of the compensation of `run`: the compensation `path` on
/// the transaction's input, as `ID.compensation`, written under `fence`.
fn compensation_request(run: &TransactionRun, path: &str, input: &[u8], fence: Option<Fence>) -> TxRequest {
    TxRequest {
        transaction_id: Some(format!("{}{COMPENSATION_SUFFIX}", run.id)),
        path: Some(path.to_string()),
        input: input.to_vec(),
        idempotency_key: None,
        caller: Some(run.caller.clone()),
        profile: None,
        fence,
        // A compensation undoes: it is not the caller's to stop.
        cancel: None,
        notify: run.notify.clone(),
    }
}

/// The id of the dead letter whose journal the replay `id` continues, if
/// it does. Asked only of replays: a caller's own id of that shape is no
/// replay, and reads no other transaction's journal.
pub(super) fn replayed(id: &str) -> Option<&str> {
    id.rsplit_once(REPLAY_INFIX).map(|(letter, _)| letter)
}

impl Runtime {
    /// Runs the compensation path, if any, and builds the dead letter of a
    /// transaction that failed on every path.
    pub(super) async fn compensate_and_dead_letter(
        &self,
        module: &Module,
        policy: &Arc<Policy>,
        request: &TxRequest,
        requested: &str,
        run: &TransactionRun,
        failure: &Failure,
    ) -> Result<DeadLetter, ExecuteError> {
        let input = &request.input;
        // A compensation that fails is dead-lettered without compensating
        // again: that way lies a loop.
        let compensation = match &policy.compensation_path {
            Some(path) if run.purpose == Purpose::Request => {
                // Written under the lease of the transaction it compensates.
                let request = compensation_request(run, path, input, run.fence.clone());
                let report = Box::pin(self.execute_once(module, policy, request, None, Purpose::Compensation)).await?;
                Some(Compensation {
                    path: path.clone(),
                    transaction_id: report.transaction_id,
                    outcome: report.outcome,
                })
            }
            _ => None,
        };
        Ok(DeadLetter {
            transaction_id: run.id.clone(),
            module: module.hash().to_string(),
            path: requested.to_string(),
            input: input.to_vec(),
            failure: failure.clone(),
            attempts: history::encode(&run.reports),
            compensation,
            dead_lettered_unix_ms: unix_millis(self.inner.clock.now()),
            idempotency_key: request.idempotency_key.clone(),
        })
    }

    /// Runs the compensation path, if any, for a transaction its caller
    /// cancelled after one of its attempts sent an unsafe call that may have
    /// acted. The compensation is told those calls (see
    /// `EffectJournal::sent`) and runs under the transaction's lease, which
    /// holds until its record is written. A compensation that fails is
    /// dead-lettered as its own transaction (`ID.compensation`).
    pub(super) async fn compensate_cancelled(
        &self,
        module: &Module,
        policy: &Arc<Policy>,
        run: &TransactionRun,
        input: &[u8],
    ) -> Result<Option<Compensation>, ExecuteError> {
        let Some(path) = &policy.compensation_path else { return Ok(None) };
        if run.purpose != Purpose::Request || !run.reports.iter().any(|a| super::may_have_acted(&a.primary)) {
            return Ok(None);
        }
        let request = compensation_request(run, path, input, run.fence.clone());
        let report = Box::pin(self.execute_once(module, policy, request, None, Purpose::Compensation)).await?;
        Ok(Some(Compensation { path: path.clone(), transaction_id: report.transaction_id, outcome: report.outcome }))
    }

    /// Runs the compensation path, if any, for what the transaction's
    /// attempts on other paths than the one that committed may have done:
    /// a hedge that lost after its unsafe call, or a path abandoned for
    /// the next after its charge went through. The compensation is told
    /// only those calls (see `EffectJournal::sent`). It runs after the
    /// commit, which must stand first; how it ends is its own record
    /// (`ID.compensation`), and a failure of it leaves the commit as it is.
    pub(super) async fn compensate_abandoned(
        &self,
        module: &Module,
        policy: &Arc<Policy>,
        run: &TransactionRun,
        (input, report): (&[u8], &TxReport),
    ) {
        let Some(path) = &policy.compensation_path else { return };
        if run.purpose == Purpose::Compensation || report.deduplicated {
            return;
        }
        let abandoned =
            report.attempts.iter().any(|a| a.attempt.path != report.path && super::may_have_acted(&a.primary));
        if !abandoned {
            return;
        }
        // The lease ended with the commit.
        let request = compensation_request(run, path, input, None);
        match Box::pin(self.execute_once(module, policy, request, None, Purpose::Compensation)).await {
            Ok(compensation) if compensation.commit_version().is_some() => {
                tracing::info!(transaction = %run.id, "compensated the calls of attempts on abandoned paths");
            }
            Ok(compensation) => tracing::warn!(
                transaction = %run.id,
                failure = ?compensation.failure,
                "the compensation of abandoned paths failed; it is dead-lettered as {}",
                compensation.transaction_id
            ),
            Err(error) => tracing::warn!(
                transaction = %run.id,
                %error,
                "the compensation of abandoned paths could not run"
            ),
        }
    }

    /// Ends a transaction that was accepted but not recorded when the
    /// process stopped, as its policy's `recovery.in_flight` says: runs it
    /// again from its input (`rerun`), or records it failed with
    /// [`FailureKind::Interrupted`] and dead-letters it (`dead_letter`).
    /// Nothing of it can have been committed, since a transaction's record
    /// and state are written in one atomic step; if its record exists, that
    /// record is its outcome and nothing runs.
    pub async fn recover_interrupted(
        &self,
        module: &Module,
        policy: &Arc<Policy>,
        transaction_id: &str,
        request: TxRequest,
    ) -> Result<TxReport, ExecuteError> {
        if let Some(record) = self.transaction(transaction_id)? {
            return Ok(TxReport::from_record(record));
        }
        let path = choose_path(module, policy, request.path.clone())?;
        // A repeat of a request whose key is bound to another transaction
        // was that transaction: its outcome is this one's, and nothing runs
        // or is dead-lettered (a replay of such a letter would repeat it).
        if let Some((key, _)) = self.key_of(module, policy, &request)? {
            let user_key = request.idempotency_key.clone().unwrap_or_default();
            let fingerprint = Fingerprint::of_request(module, &path, &request.input);
            match self.bound(&user_key, &key, &fingerprint) {
                Ok(Some(report)) => return Ok(report),
                Ok(None) => {}
                // The key went to another request: this one never ran.
                Err(ExecuteError::IdempotencyKeyReused { .. }) => {}
                Err(other) => return Err(other),
            }
        }
        let request = TxRequest { transaction_id: Some(transaction_id.to_string()), ..request };
        if policy.recovery.in_flight == crate::policy::InFlightRecovery::Rerun {
            return self.execute(module, policy, request).await;
        }
        let failure = Failure::new(
            FailureKind::Interrupted,
            "the service stopped while the transaction was in flight; nothing was committed \
             (recovery.in_flight = \"dead_letter\")",
        );
        let outcome = TransactionOutcome::Failed { kind: failure.kind, message: failure.message.clone() };
        let now = unix_millis(self.inner.clock.now());
        let dead_letter = DeadLetter {
            transaction_id: transaction_id.to_string(),
            module: module.hash().to_string(),
            path: path.clone(),
            input: request.input.clone(),
            failure: failure.clone(),
            attempts: History::default(),
            compensation: None,
            dead_lettered_unix_ms: now,
            idempotency_key: request.idempotency_key.clone(),
        };
        let status = self.status_event(&crate::transaction::status::Ended {
            transaction_id,
            status: "failed",
            module: module.hash(),
            path: &path,
            attempts: 0,
            failure: Some(&failure),
            dead_lettered: true,
            notify: request.notify.as_deref(),
        });
        self.inner.store.record_outcome(
            TransactionRecord {
                id: transaction_id.to_string(),
                module: module.hash().to_string(),
                path: path.clone(),
                input_hash: input_hash(&request.input),
                outcome: outcome.clone(),
                attempts: Vec::new(),
                history: History::default(),
            },
            // Dead-lettered: the key stays free (see `execute_once`).
            None,
            Some(dead_letter),
            request.fence.as_ref(),
            status.into_iter().collect(),
        )?;
        Ok(TxReport {
            transaction_id: transaction_id.to_string(),
            module: module.hash().to_string(),
            path,
            outcome,
            failure: Some(failure),
            attempts: Vec::new(),
            deduplicated: false,
        })
    }

    /// Runs a dead-lettered transaction again. A replay that commits removes
    /// the letter, and a second replay of it answers with that outcome; one
    /// that fails leaves the letter as it was (no letter of its own, no
    /// second compensation), to be replayed again at once.
    pub async fn replay_dead_letter(
        &self,
        module: &Module,
        policy: &Arc<Policy>,
        transaction_id: &str,
    ) -> Result<TxReport, ReplayError> {
        let Some(letter) = self.inner.store.dead_letter(transaction_id)? else {
            return Err(ReplayError::NoSuchDeadLetter(transaction_id.to_string()));
        };
        if letter.module != module.hash() {
            return Err(ReplayError::ModuleMismatch { expected: letter.module, given: module.hash().to_string() });
        }
        // The letter's own key, if it had one: a replay and the client's
        // retry with that key are one request, and only one of them commits.
        let key = letter.idempotency_key.unwrap_or_else(|| format!("replay-of:{transaction_id}"));
        // A letter whose compensation committed was undone: its replay
        // starts afresh, under its own id and keys. Any other replay goes on
        // from the letter's effect journal, as a retry would: a call that
        // succeeded is answered from it, not sent again, and one that
        // failed or is in doubt is sent under its first key.
        let undone = letter
            .compensation
            .as_ref()
            .is_some_and(|compensation| matches!(compensation.outcome, TransactionOutcome::Committed { .. }));
        let replay_id = (!undone).then(|| {
            let tail = self.inner.randomness.transaction_id();
            format!("{transaction_id}{REPLAY_INFIX}{}", &tail[..12])
        });
        let request = TxRequest {
            transaction_id: replay_id,
            path: Some(letter.path),
            input: letter.input,
            idempotency_key: Some(key),
            caller: None,
            profile: None,
            fence: None,
            cancel: None,
            notify: None,
        };
        let report = self.execute_for(module, policy, request, Purpose::Replay).await?;
        if report.commit_version().is_some() {
            self.inner.store.remove_dead_letter(transaction_id)?;
        }
        Ok(report)
    }

    /// Replays the letters of `module` the filter selects, oldest first, at
    /// most `limit`, one after another (each as [`Runtime::replay_dead_letter`]).
    /// A letter that cannot be replayed does not stop the others: its
    /// error is its result.
    pub async fn replay_dead_letters(
        &self,
        module: &Module,
        policy: &Arc<Policy>,
        filter: &DeadLetterFilter,
        limit: usize,
    ) -> Result<Vec<ReplayedLetter>, StoreError> {
        // A filter naming another module selects none of this one's.
        if filter.module.as_deref().is_some_and(|named| named != module.hash()) {
            return Ok(Vec::new());
        }
        let filter = filter.clone().module(module.hash());
        let mut replayed = Vec::new();
        for letter in self.letters_matching(&filter, limit)? {
            let result = self.replay_dead_letter(module, policy, &letter.transaction_id).await;
            replayed.push(ReplayedLetter { transaction_id: letter.transaction_id, result });
        }
        Ok(replayed)
    }
}

/// One letter of a bulk replay, and how its replay went.
#[derive(Debug)]
#[non_exhaustive]
pub struct ReplayedLetter {
    /// The dead letter's transaction id.
    pub transaction_id: String,
    /// The replay's report, or why it could not run.
    pub result: Result<TxReport, ReplayError>,
}

/// Why a dead letter could not be replayed. A replay that runs and fails
/// again is not an error: its [`TxReport`] says how it failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// No dead letter has this transaction id.
    #[error("no dead letter for transaction `{0}`")]
    NoSuchDeadLetter(String),
    /// The replay was given another module than the one that failed.
    #[error("the dead letter is for module {expected}, not {given}")]
    ModuleMismatch {
        /// The module that failed.
        expected: String,
        /// The module given.
        given: String,
    },
    /// The replay could not run (see [`ExecuteError`]).
    #[error(transparent)]
    Execute(#[from] ExecuteError),
    /// The store failed; nothing was replayed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
