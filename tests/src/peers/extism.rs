//! The peer comparison's Extism host: an Extism plugin whose balances live in
//! the host, reached through two host functions.

use super::{Peer, seeded_accounts};
use std::collections::HashMap;

extism::host_fn!(balance_get(balances: HashMap<String, u64>; account: String) -> i64 {
    let balances = balances.get()?;
    let balance = balances.lock().map_err(|_| extism::Error::msg("poisoned"))?.get(&account).copied();
    Ok(balance.and_then(|b| i64::try_from(b).ok()).unwrap_or(-1))
});

extism::host_fn!(balance_set(balances: HashMap<String, u64>; account: String, balance: i64) {
    let balance = u64::try_from(balance)?;
    balances.get()?.lock().map_err(|_| extism::Error::msg("poisoned"))?.insert(account, balance);
    Ok(())
});

/// An Extism plugin with the host functions `balance_get` and
/// `balance_set` over a map in the host.
#[allow(missing_debug_implementations, reason = "a benchmark fixture")]
pub struct ExtismPeer {
    compiled: extism::CompiledPlugin,
    /// The plugin reused across calls, or `None` for a fresh one per call.
    reused: Option<extism::Plugin>,
    balances: extism::UserData<HashMap<String, u64>>,
}

impl ExtismPeer {
    /// Compiles the plugin at `wasm`; `reuse` keeps one instance for every
    /// call, as Extism hosts usually do.
    pub fn new(wasm: &str, reuse: bool) -> Self {
        use extism::PTR;
        let balances = extism::UserData::new(seeded_accounts());
        let functions = [
            extism::Function::new("balance_get", [PTR], [PTR], balances.clone(), balance_get),
            extism::Function::new("balance_set", [PTR, PTR], [], balances.clone(), balance_set),
        ];
        let wasm = std::fs::read(wasm).unwrap();
        let builder =
            extism::PluginBuilder::new(extism::Manifest::new([extism::Wasm::data(wasm)])).with_functions(functions);
        let compiled = extism::CompiledPlugin::new(builder).unwrap();
        let reused = reuse.then(|| extism::Plugin::new_from_compiled(&compiled).unwrap());
        Self { compiled, reused, balances }
    }
}

impl Peer for ExtismPeer {
    fn call(&mut self, path: &str, input: &[u8]) -> Result<Vec<u8>, String> {
        let mut fresh;
        let plugin = match &mut self.reused {
            Some(plugin) => plugin,
            None => {
                fresh = extism::Plugin::new_from_compiled(&self.compiled).map_err(|e| e.to_string())?;
                &mut fresh
            }
        };
        plugin.call::<&[u8], Vec<u8>>(path, input).map_err(|e| e.to_string())
    }

    fn balance(&self, account: &str) -> Option<u64> {
        self.balances.get().unwrap().lock().unwrap().get(account).copied()
    }
}
