//! Accepted transactions and their leases on PostgreSQL (see
//! `store/inbox.rs`).
//!
//! `txm_inbox` holds one row per transaction in flight: its idempotency
//! key (unique), the request, its sequence, and its lease (holder, epoch,
//! expiry). `txm_submissions` keeps every acceptance's sequence and id.
//! Lease times are the database's clock ([`NOW_MS`]), never a node's.
//!
//! A takeover picks lapsed rows with `FOR UPDATE SKIP LOCKED` (two nodes
//! taking over at once share the work, neither waits for the other) and
//! re-checks the lapse in the `UPDATE` that raises the epoch. A commit
//! under a fence locks its transaction's row (`FOR UPDATE`) and, if it
//! writes the transaction's own record, deletes it, in its SQL
//! transaction: a takeover either comes before (and the commit is refused)
//! or after (and finds nothing to take).

use super::super::{AcceptRequest, Acceptance, Accepted, Fence, Lease, StoreError};
use super::cached;
use super::database::{int, storage, uint};
use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::Row;

/// The migration that adds the tables (schema version 2).
pub(super) const MIGRATION: &str = r#"
    CREATE TABLE txm_inbox (
        transaction_id TEXT COLLATE "C" PRIMARY KEY,
        idempotency_key TEXT UNIQUE,
        request BYTEA NOT NULL,
        sequence BIGINT NOT NULL UNIQUE,
        holder TEXT NOT NULL,
        epoch BIGINT NOT NULL,
        expires_unix_ms BIGINT NOT NULL
    );
    CREATE INDEX txm_inbox_by_holder ON txm_inbox (holder);
    CREATE INDEX txm_inbox_by_expiry ON txm_inbox (expires_unix_ms);
    CREATE TABLE txm_submissions (sequence BIGINT PRIMARY KEY, transaction_id TEXT COLLATE "C" NOT NULL);
    CREATE SEQUENCE txm_submission_sequence;
"#;

/// Now on the database's clock, in milliseconds since the Unix epoch.
const NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

const COLUMNS: &str = "transaction_id, idempotency_key, request, sequence, holder, epoch, expires_unix_ms";

fn accepted(row: &Row) -> Accepted {
    Accepted {
        transaction_id: row.get(0),
        idempotency_key: row.get(1),
        request: row.get(2),
        sequence: uint(row.get(3)),
        lease: Lease { holder: row.get(4), epoch: uint(row.get(5)), expires_unix_ms: uint(row.get(6)) },
    }
}

/// Inside a commit's SQL transaction: refuses it unless `fence` is still
/// its transaction's lease. Changes nothing, but locks the row until the
/// commit ends, so that a takeover cannot slip in between this check and
/// the commit (it skips the locked row, and finds it gone or re-checks it).
pub(super) async fn check_fence(client: &impl GenericClient, fence: &Fence) -> Result<(), StoreError> {
    let row = client
        .query_opt("SELECT epoch FROM txm_inbox WHERE transaction_id = $1 FOR UPDATE", &[&fence.transaction_id])
        .await
        .map_err(storage)?;
    fence.check(row.map(|row| uint(row.get(0))))
}

/// Locks the rows of the accepted transactions `ids` until the commit ends;
/// their epochs, for those in flight.
pub(super) async fn lock_epochs(client: &impl GenericClient, ids: &[&str]) -> Result<Vec<(String, u64)>, StoreError> {
    let statement =
        cached(client, "SELECT transaction_id, epoch FROM txm_inbox WHERE transaction_id = ANY($1) FOR UPDATE").await?;
    let rows = client.query(&statement, &[&ids]).await.map_err(storage)?;
    Ok(rows.iter().map(|row| (row.get(0), uint(row.get(1)))).collect())
}

/// Ends the accepted transactions `ids`, whose rows the commit has locked
/// and checked.
pub(super) async fn end(client: &impl GenericClient, ids: &[String]) -> Result<(), StoreError> {
    let statement = cached(client, "DELETE FROM txm_inbox WHERE transaction_id = ANY($1)").await?;
    client.execute(&statement, &[&ids]).await.map_err(storage)?;
    Ok(())
}

/// Once every check of a write under `fence` passed: if the write is the
/// transaction's own record, ends its acceptance in the same transaction.
pub(super) async fn end_if_own(client: &impl GenericClient, fence: &Fence, record_id: &str) -> Result<(), StoreError> {
    if fence.ends_with(record_id) {
        client
            .execute(
                "DELETE FROM txm_inbox WHERE transaction_id = $1 AND epoch = $2",
                &[&fence.transaction_id, &int(fence.epoch)],
            )
            .await
            .map_err(storage)?;
    }
    Ok(())
}

/// Why an acceptance's `INSERT` was refused: one of the rows it would
/// duplicate, found again.
async fn refusal(client: &impl GenericClient, request: &AcceptRequest) -> Result<Option<Acceptance>, StoreError> {
    let id = &request.transaction_id;
    let recorded = client.query_opt("SELECT 1 FROM txm_transactions WHERE id = $1", &[id]).await.map_err(storage)?;
    let in_flight =
        client.query_opt("SELECT 1 FROM txm_inbox WHERE transaction_id = $1", &[id]).await.map_err(storage)?;
    if recorded.is_some() || in_flight.is_some() {
        return Ok(Some(Acceptance::IdTaken));
    }
    let Some(key) = &request.idempotency_key else { return Ok(None) };
    // The inbox first: a holder that commits between the two reads has
    // left the inbox for the idempotency table, and is found there.
    let holder = client
        .query_opt("SELECT transaction_id FROM txm_inbox WHERE idempotency_key = $1", &[key])
        .await
        .map_err(storage)?;
    if let Some(row) = holder {
        return Ok(Some(Acceptance::KeyHeld { transaction_id: row.get(0) }));
    }
    let claimed = client
        .query_opt(
            "SELECT transaction_id FROM txm_idempotency WHERE key = $1 AND expires_unix_ms > $2",
            &[key, &int(request.now_unix_ms)],
        )
        .await
        .map_err(storage)?;
    Ok(claimed.map(|row| Acceptance::KeyHeld { transaction_id: row.get(0) }))
}

pub(super) async fn accept(pool: Pool, request: AcceptRequest) -> Result<Acceptance, StoreError> {
    let mut client = pool.get().await.map_err(storage)?;
    if let Some(refused) = refusal(&client, &request).await? {
        return Ok(refused);
    }
    let txn = client.transaction().await.map_err(storage)?;
    let inserted = txn
        .query_one(
            &format!(
                "INSERT INTO txm_inbox ({COLUMNS}) VALUES ($1, $2, $3, nextval('txm_submission_sequence'), $4, 1, {NOW_MS} + $5)
                 RETURNING {COLUMNS}"
            ),
            &[
                &request.transaction_id,
                &request.idempotency_key,
                &request.request,
                &request.holder,
                &int(request.lease_ms),
            ],
        )
        .await;
    let row = match inserted {
        Ok(row) => row,
        Err(error) if error.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            // Another node accepted the same id or key since the check.
            drop(txn);
            return Ok(refusal(&client, &request).await?.unwrap_or(Acceptance::IdTaken));
        }
        Err(error) => return Err(storage(error)),
    };
    let accepted = accepted(&row);
    txn.execute(
        "INSERT INTO txm_submissions (sequence, transaction_id) VALUES ($1, $2)",
        &[&int(accepted.sequence), &accepted.transaction_id],
    )
    .await
    .map_err(storage)?;
    // A transaction recorded between the check and here (its id given by
    // a client twice, on two nodes) keeps its record; this one is refused.
    let recorded = txn
        .query_opt("SELECT 1 FROM txm_transactions WHERE id = $1", &[&accepted.transaction_id])
        .await
        .map_err(storage)?;
    if recorded.is_some() {
        return Ok(Acceptance::IdTaken);
    }
    // Likewise for the key: a holder that was accepted and committed
    // between the check and the insert left the inbox (so the insert met no
    // unique key) for the idempotency table, in one SQL transaction. This
    // statement reads after the insert, on a snapshot of its own, so it
    // sees that commit if the insert did not meet the holder's row.
    if let Some(key) = &request.idempotency_key {
        let claimed = txn
            .query_opt(
                "SELECT transaction_id FROM txm_idempotency WHERE key = $1 AND expires_unix_ms > $2",
                &[key, &int(request.now_unix_ms)],
            )
            .await
            .map_err(storage)?;
        if let Some(row) = claimed {
            return Ok(Acceptance::KeyHeld { transaction_id: row.get(0) });
        }
    }
    txn.commit().await.map_err(storage)?;
    Ok(Acceptance::Accepted { sequence: accepted.sequence, lease: accepted.lease })
}

pub(super) async fn find(pool: Pool, transaction_id: String) -> Result<Option<Accepted>, StoreError> {
    let client = pool.get().await.map_err(storage)?;
    let row = client
        .query_opt(&format!("SELECT {COLUMNS} FROM txm_inbox WHERE transaction_id = $1"), &[&transaction_id])
        .await
        .map_err(storage)?;
    Ok(row.as_ref().map(accepted))
}

pub(super) async fn in_flight(pool: Pool, limit: usize) -> Result<Vec<Accepted>, StoreError> {
    let client = pool.get().await.map_err(storage)?;
    let rows = client
        .query(&format!("SELECT {COLUMNS} FROM txm_inbox ORDER BY sequence LIMIT $1"), &[&int(limit as u64)])
        .await
        .map_err(storage)?;
    Ok(rows.iter().map(accepted).collect())
}

pub(super) async fn submissions(
    pool: Pool,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<(u64, String)>, StoreError> {
    let client = pool.get().await.map_err(storage)?;
    let rows = client
        .query(
            "SELECT sequence, transaction_id FROM txm_submissions WHERE sequence < $1 ORDER BY sequence DESC LIMIT $2",
            &[&int(before.unwrap_or(u64::MAX)), &int(limit as u64)],
        )
        .await
        .map_err(storage)?;
    Ok(rows.iter().map(|row| (uint(row.get(0)), row.get(1))).collect())
}

pub(super) async fn finish(pool: Pool, fence: Fence) -> Result<bool, StoreError> {
    let client = pool.get().await.map_err(storage)?;
    let ended = client
        .execute(
            "DELETE FROM txm_inbox WHERE transaction_id = $1 AND epoch = $2",
            &[&fence.transaction_id, &int(fence.epoch)],
        )
        .await
        .map_err(storage)?;
    Ok(ended == 1)
}

pub(super) async fn renew(pool: Pool, holder: String, lease_ms: u64) -> Result<usize, StoreError> {
    let client = pool.get().await.map_err(storage)?;
    let renewed = client
        .execute(
            &format!("UPDATE txm_inbox SET expires_unix_ms = {NOW_MS} + $2 WHERE holder = $1"),
            &[&holder, &int(lease_ms)],
        )
        .await
        .map_err(storage)?;
    Ok(usize::try_from(renewed).unwrap_or(usize::MAX))
}

pub(super) async fn take_over(
    pool: Pool,
    holder: String,
    lease_ms: u64,
    limit: usize,
) -> Result<Vec<Accepted>, StoreError> {
    let mut client = pool.get().await.map_err(storage)?;
    let txn = client.transaction().await.map_err(storage)?;
    let rows = txn
        .query(
            &format!(
                "WITH lapsed AS (
                     SELECT transaction_id FROM txm_inbox
                     WHERE expires_unix_ms < {NOW_MS} AND holder <> $1
                     ORDER BY sequence LIMIT $3
                     FOR UPDATE SKIP LOCKED
                 )
                 UPDATE txm_inbox AS i SET holder = $1, epoch = i.epoch + 1, expires_unix_ms = {NOW_MS} + $2
                 FROM lapsed
                 WHERE i.transaction_id = lapsed.transaction_id AND i.expires_unix_ms < {NOW_MS} AND i.holder <> $1
                 RETURNING i.transaction_id, i.idempotency_key, i.request, i.sequence, i.holder, i.epoch,
                     i.expires_unix_ms"
            ),
            &[&holder, &int(lease_ms), &int(limit as u64)],
        )
        .await
        .map_err(storage)?;
    txn.commit().await.map_err(storage)?;
    let mut taken: Vec<Accepted> = rows.iter().map(accepted).collect();
    taken.sort_by_key(|accepted| accepted.sequence);
    Ok(taken)
}

pub(super) async fn release(pool: Pool, holder: String) -> Result<usize, StoreError> {
    let client = pool.get().await.map_err(storage)?;
    let released = client
        .execute("UPDATE txm_inbox SET expires_unix_ms = 0 WHERE holder = $1", &[&holder])
        .await
        .map_err(storage)?;
    Ok(usize::try_from(released).unwrap_or(usize::MAX))
}
