//! The peer comparison's logic as an Extism plugin: balances come from the
//! host functions `balance_get` and `balance_set`, as Extism hosts provide
//! state to plugins.

use extism_pdk::{FnResult, WithReturnCode, host_fn, plugin_fn};
use peer_logic::Accounts;

#[host_fn]
extern "ExtismHost" {
    /// The balance of an account, or -1 if there is none.
    fn balance_get(account: String) -> i64;
    fn balance_set(account: String, balance: i64);
}

struct Balances;

impl Accounts for Balances {
    fn balance(&mut self, account: &str) -> Result<Option<u64>, String> {
        #[allow(unsafe_code, reason = "Extism's host calls are unsafe by construction")]
        let balance = unsafe { balance_get(account.to_string()) }.map_err(|e| e.to_string())?;
        Ok(u64::try_from(balance).ok())
    }

    fn set_balance(&mut self, account: &str, balance: u64) -> Result<(), String> {
        let balance = i64::try_from(balance).map_err(|_| "balance out of range".to_string())?;
        #[allow(unsafe_code, reason = "Extism's host calls are unsafe by construction")]
        unsafe { balance_set(account.to_string(), balance) }.map_err(|e| e.to_string())
    }
}

/// Fails the call with `message`, as Extism plugins report errors.
fn refuse<T>(message: String) -> FnResult<T> {
    Err(WithReturnCode::new(extism_pdk::Error::msg(message), 1))
}

#[plugin_fn]
pub fn transfer(input: Vec<u8>) -> FnResult<Vec<u8>> {
    let request = serde_json::from_slice(&input)?;
    match peer_logic::transfer(&mut Balances, request) {
        Ok(done) => Ok(serde_json::to_vec(&done)?),
        Err(message) => refuse(message),
    }
}

#[plugin_fn]
pub fn normalise(input: Vec<u8>) -> FnResult<Vec<u8>> {
    let order = serde_json::from_slice(&input)?;
    match peer_logic::normalise(order) {
        Ok(order) => Ok(serde_json::to_vec(&order)?),
        Err(message) => refuse(message),
    }
}
