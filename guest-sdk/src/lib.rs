//! Write [txmirror](https://example.invalid/txmirror) transaction modules in Rust.
//!
//! A transaction module is a Wasm component that exports named *paths*. Each
//! path is an ordinary function from a JSON input to a JSON output:
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use txmirror_guest::{kv, Error};
//!
//! #[derive(Deserialize)]
//! struct Deposit { account: String, amount: u64 }
//!
//! #[derive(Serialize)]
//! struct Balance { account: String, balance: u64 }
//!
//! fn deposit(input: Deposit) -> Result<Balance, Error> {
//!     let old: u64 = kv::get("accounts", &input.account)?.unwrap_or(0);
//!     let balance = old.checked_add(input.amount).ok_or_else(|| Error::rejected("overflow"))?;
//!     kv::put("accounts", &input.account, &balance)?;
//!     Ok(Balance { account: input.account, balance })
//! }
//!
//! txmirror_guest::transaction_module! {
//!     paths: { "deposit" => deposit }
//! }
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2 --release` and hand the
//! resulting `.wasm` file to `txmirror run`.
//!
//! # Capabilities
//!
//! Each module of this crate is one capability of the host. The module's
//! policy decides which of them a transaction really gets:
//!
//! - [`kv`]: transactional key-value state, in namespaces the policy grants.
//! - [`events`]: events committed together with the state.
//! - [`http`]: outbound HTTP requests to hosts the policy grants.
//! - [`validation`]: report invalid input early, so the runtime can fail fast.
//! - [`config`]: operator-provided settings.
//! - [`context`]: the transaction's id and the idempotency keys of its
//!   unsafe calls, the same in every attempt and rerun.
//! - [`log`], [`random`], [`clock`]: diagnostics and deterministic inputs.
//!
//! When the runtime mirrors a transaction, the same code runs a second time
//! in a read-only twin: the twin's writes are discarded and its unsafe HTTP
//! requests are answered by a stub. Code written with this crate does not
//! need to know which of the two it runs in.

extern crate self as txmirror_guest;

pub mod clock;
pub mod config;
pub mod context;
mod error;
pub mod events;
pub mod http;
pub mod kv;
pub mod log;
pub mod random;
pub mod validation;

pub use error::{Error, Issue};

/// The generated bindings of the `txmirror:transaction` world.
///
/// They are an implementation detail: use the wrappers of this crate instead.
#[doc(hidden)]
pub mod wit {
    #![allow(missing_docs, clippy::all)]
    wit_bindgen::generate!({
        world: "transaction-with-init",
        path: "../wit",
        generate_all,
        pub_export_macro: true,
        default_bindings_module: "::txmirror_guest::wit",
        runtime_path: "::txmirror_guest::__private::wit_bindgen::rt",
    });
}

/// Items the [`transaction_module!`] macro needs; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    use crate::wit::txmirror::transaction::types::TxError;

    /// Decodes the input, calls the path and encodes its output.
    pub fn dispatch<I, O>(input: &[u8], path: impl FnOnce(I) -> Result<O, crate::Error>) -> Result<Vec<u8>, TxError>
    where
        I: serde::de::DeserializeOwned,
        O: serde::Serialize,
    {
        let input: I = serde_json::from_slice(input).map_err(|err| {
            let issue = crate::Issue::new("input", format!("not a valid input document: {err}"));
            crate::validation::report(&issue);
            TxError::from(crate::Error::Validation(vec![issue]))
        })?;
        let output = path(input).map_err(TxError::from)?;
        serde_json::to_vec(&output)
            .map_err(|err| TxError::from(crate::Error::rejected(format!("output could not be encoded: {err}"))))
    }
}

/// Declares the paths of a transaction module and exports them.
///
/// Each path is a function `fn(I) -> Result<O, Error>` where `I` is
/// deserialisable and `O` serialisable with serde. Inputs and outputs travel
/// as JSON. The first path listed is the default path.
///
/// An optional `init` function runs once when the module is uploaded; the
/// memory it leaves behind is snapshotted and every transaction starts from
/// it. Use it to build lookup tables or parse embedded data.
///
/// ```no_run
/// # use txmirror_guest::Error;
/// fn charge(input: serde_json::Value) -> Result<serde_json::Value, Error> { Ok(input) }
/// fn refund(input: serde_json::Value) -> Result<serde_json::Value, Error> { Ok(input) }
/// fn warm_up() {}
///
/// txmirror_guest::transaction_module! {
///     init: warm_up,
///     paths: {
///         "charge" => charge,
///         "refund" => refund,
///     }
/// }
/// ```
#[macro_export]
macro_rules! transaction_module {
    (
        $(init: $init:path,)?
        paths: { $( $name:literal => $func:path ),+ $(,)? } $(,)?
    ) => {
        struct __TxmirrorModule;

        impl $crate::wit::Guest for __TxmirrorModule {
            fn paths() -> ::std::vec::Vec<::std::string::String> {
                ::std::vec![$( ::std::string::String::from($name) ),+]
            }

            fn run(
                path: ::std::string::String,
                input: ::std::vec::Vec<u8>,
            ) -> ::std::result::Result<
                ::std::vec::Vec<u8>,
                $crate::wit::txmirror::transaction::types::TxError,
            > {
                match path.as_str() {
                    $( $name => $crate::__private::dispatch(&input, $func), )+
                    other => ::std::result::Result::Err(
                        $crate::wit::txmirror::transaction::types::TxError::UnknownPath(
                            ::std::string::String::from(other),
                        ),
                    ),
                }
            }

            fn init() {
                $( $init(); )?
            }
        }

        $crate::wit::export!(__TxmirrorModule);
    };
}
