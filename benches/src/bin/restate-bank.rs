//! The bank transfer as a Restate service, for the durable engines'
//! comparison (`bench-report engines`, `docs/benchmarks.md`): the peer of
//! `examples/bank-transfer` with its state kept by Restate.
//!
//! One virtual object per account (`Account/{id}`), as Restate has it: a
//! transfer is the handler `transfer` of the account it debits, which
//! holds that account's lock, refuses an overdraft, and sends the deposit
//! to the other account as a one-way durable call. The deposit is in the
//! debit's journal, so it happens exactly once, but after the debit's
//! answer (a call awaited from one account to another could deadlock two
//! opposite transfers). An account that was never written holds the
//! benchmark's seed, as the txmirror store is seeded.
//!
//! `restate-bank PORT` serves the endpoint on 127.0.0.1:PORT (HTTP/2)
//! until it is killed.

#![allow(clippy::print_stdout, reason = "a benchmark fixture")]

use restate_sdk::prelude::*;
use serde::{Deserialize, Serialize};

/// Every account's balance before the first transfer.
const SEED: u64 = 1_000_000_000;
const BALANCE: &str = "balance";

#[derive(Debug, Serialize, Deserialize)]
struct Transfer {
    to: String,
    amount: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Debited {
    from_balance: u64,
}

struct Account;

#[object]
impl Account {
    /// Debits this account and sends `amount` to `to`.
    #[handler]
    async fn transfer(
        &self,
        ctx: ObjectContext<'_>,
        Json(transfer): Json<Transfer>,
    ) -> Result<Json<Debited>, HandlerError> {
        if transfer.amount == 0 || transfer.to == ctx.key() {
            return Err(
                TerminalError::new_with_code(400, "a transfer moves a positive amount to another account").into()
            );
        }
        let balance = ctx.get::<u64>(BALANCE).await?.unwrap_or(SEED);
        let Some(from_balance) = balance.checked_sub(transfer.amount) else {
            return Err(TerminalError::new_with_code(409, format!("insufficient funds in `{}`", ctx.key())).into());
        };
        ctx.set(BALANCE, from_balance);
        ctx.object_client::<AccountClient<'_>>(transfer.to).deposit(transfer.amount).send();
        Ok(Json(Debited { from_balance }))
    }

    /// Credits this account.
    #[handler]
    async fn deposit(&self, ctx: ObjectContext<'_>, amount: u64) -> Result<u64, HandlerError> {
        let balance = ctx.get::<u64>(BALANCE).await?.unwrap_or(SEED);
        let balance = balance.checked_add(amount).ok_or_else(|| TerminalError::new("balance would overflow"))?;
        ctx.set(BALANCE, balance);
        Ok(balance)
    }

    /// This account's balance.
    #[handler]
    async fn balance(&self, ctx: SharedObjectContext<'_>) -> Result<u64, HandlerError> {
        Ok(ctx.get::<u64>(BALANCE).await?.unwrap_or(SEED))
    }
}

#[tokio::main]
async fn main() {
    let port: u16 = match std::env::args().nth(1).map(|port| port.parse()) {
        Some(Ok(port)) => port,
        _ => {
            eprintln!("usage: restate-bank PORT");
            std::process::exit(2);
        }
    };
    HttpServer::new(Endpoint::builder().bind(Account).build())
        .listen_and_serve(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .await;
}
