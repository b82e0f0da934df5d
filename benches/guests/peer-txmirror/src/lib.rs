//! The peer comparison's logic as a txmirror guest: balances live in the
//! `accounts` namespace of the runtime's transactional key-value store.

use peer_logic::{Accounts, NormalisedOrder, Order, Transfer, TransferDone};
use txmirror_guest::{Error, kv};

struct Store;

impl Accounts for Store {
    fn balance(&mut self, account: &str) -> Result<Option<u64>, String> {
        kv::get("accounts", account).map_err(|e| e.to_string())
    }

    fn set_balance(&mut self, account: &str, balance: u64) -> Result<(), String> {
        kv::put("accounts", account, &balance).map_err(|e| e.to_string())
    }
}

fn transfer(input: Transfer) -> Result<TransferDone, Error> {
    peer_logic::transfer(&mut Store, input).map_err(Error::rejected)
}

fn normalise(input: Order) -> Result<NormalisedOrder, Error> {
    peer_logic::normalise(input).map_err(Error::rejected)
}

txmirror_guest::transaction_module! {
    paths: {
        "transfer" => transfer,
        "normalise" => normalise,
    }
}
