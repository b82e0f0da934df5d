//! Moves money between accounts kept in the `accounts` key-value namespace.
//!
//! Paths: `transfer` (default), `deposit`, `balance`. Every successful
//! transfer emits an event on the `transfers` stream. Transfers that touch a
//! few hot accounts contend for the same keys, which is what the runtime's
//! optimistic concurrency and its contention prediction are about.

use serde::{Deserialize, Serialize};
use txmirror_guest::validation::Validator;
use txmirror_guest::{Error, events, kv};

const ACCOUNTS: &str = "accounts";

#[derive(Deserialize)]
struct Transfer {
    from: String,
    to: String,
    amount: u64,
}

#[derive(Serialize)]
struct TransferDone {
    from_balance: u64,
    to_balance: u64,
}

fn transfer(input: Transfer) -> Result<TransferDone, Error> {
    let mut v = Validator::new();
    v.check(!input.from.is_empty(), "from", "must name an account");
    v.check(!input.to.is_empty(), "to", "must name an account");
    v.check(input.from != input.to, "to", "must differ from `from`");
    v.check(input.amount > 0, "amount", "must be positive");
    v.finish()?;

    let from_balance: u64 =
        kv::get(ACCOUNTS, &input.from)?.ok_or_else(|| Error::rejected(format!("no account `{}`", input.from)))?;
    let to_balance: u64 =
        kv::get(ACCOUNTS, &input.to)?.ok_or_else(|| Error::rejected(format!("no account `{}`", input.to)))?;
    let from_balance = from_balance
        .checked_sub(input.amount)
        .ok_or_else(|| Error::rejected(format!("insufficient funds in `{}`", input.from)))?;
    let to_balance = to_balance.checked_add(input.amount).ok_or_else(|| Error::rejected("balance would overflow"))?;

    kv::put(ACCOUNTS, &input.from, &from_balance)?;
    kv::put(ACCOUNTS, &input.to, &to_balance)?;
    events::emit("transfers", &serde_json::json!({ "from": input.from, "to": input.to, "amount": input.amount }))?;
    Ok(TransferDone { from_balance, to_balance })
}

#[derive(Deserialize)]
struct Deposit {
    account: String,
    amount: u64,
}

#[derive(Serialize)]
struct Balance {
    account: String,
    balance: u64,
}

fn deposit(input: Deposit) -> Result<Balance, Error> {
    if input.account.is_empty() {
        return Err(Error::invalid("account", "must name an account"));
    }
    let old: u64 = kv::get(ACCOUNTS, &input.account)?.unwrap_or(0);
    let balance = old.checked_add(input.amount).ok_or_else(|| Error::rejected("balance would overflow"))?;
    kv::put(ACCOUNTS, &input.account, &balance)?;
    Ok(Balance { account: input.account, balance })
}

#[derive(Deserialize)]
struct BalanceQuery {
    account: String,
}

fn balance(input: BalanceQuery) -> Result<Balance, Error> {
    let balance: u64 =
        kv::get(ACCOUNTS, &input.account)?.ok_or_else(|| Error::rejected(format!("no account `{}`", input.account)))?;
    Ok(Balance { account: input.account, balance })
}

txmirror_guest::transaction_module! {
    paths: {
        "transfer" => transfer,
        "deposit" => deposit,
        "balance" => balance,
    }
}
