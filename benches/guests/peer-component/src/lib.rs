//! The peer comparison's logic as a plain component of its own small world
//! (`wit/peer.wit`), for raw wasmtime: no txmirror, no SDK.

use peer_logic::Accounts;

wit_bindgen::generate!({ world: "peer", path: "wit" });

struct Balances;

impl Accounts for Balances {
    fn balance(&mut self, account: &str) -> Result<Option<u64>, String> {
        Ok(balances::get(account))
    }

    fn set_balance(&mut self, account: &str, balance: u64) -> Result<(), String> {
        balances::set(account, balance);
        Ok(())
    }
}

struct Peer;

impl Guest for Peer {
    fn run(path: String, input: Vec<u8>) -> Result<Vec<u8>, String> {
        let json = |e: serde_json::Error| e.to_string();
        match path.as_str() {
            "transfer" => {
                let done = peer_logic::transfer(&mut Balances, serde_json::from_slice(&input).map_err(json)?)?;
                serde_json::to_vec(&done).map_err(json)
            }
            "normalise" => {
                let order = peer_logic::normalise(serde_json::from_slice(&input).map_err(json)?)?;
                serde_json::to_vec(&order).map_err(json)
            }
            other => Err(format!("unknown path `{other}`")),
        }
    }
}

export!(Peer);
