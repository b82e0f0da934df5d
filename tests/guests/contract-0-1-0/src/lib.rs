//! A module built against the `txmirror:transaction@0.1.0` contract, kept
//! as it was released (`wit/transaction.wit` here; the WASI packages are
//! the repository's): the runtime must keep running it after the contract
//! gains imports. Path `hello` returns the policy's `greeting`.

wit_bindgen::generate!({ world: "transaction", path: "wit", generate_all });

use txmirror::transaction::config;

struct Module;

impl Guest for Module {
    fn paths() -> Vec<String> {
        vec!["hello".into()]
    }

    fn run(path: String, _input: Vec<u8>) -> Result<Vec<u8>, TxError> {
        if path != "hello" {
            return Err(TxError::UnknownPath(path));
        }
        let greeting = config::get("greeting").unwrap_or_default();
        Ok(format!("{{\"greeting\":{greeting:?}}}").into_bytes())
    }
}

export!(Module);
