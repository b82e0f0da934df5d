//! Integration tests: real guests built from source, a real store on disk,
//! real HTTP servers on 127.0.0.1.
//!
//! One test binary, one module per guest. `foreach_guest!` below makes a
//! guest without a test module a compile error.

#![allow(clippy::unwrap_used, reason = "tests")]

mod bank_transfer;
mod bank_transfer_python;
mod breakers;
mod cancel;
mod contract_0_1_0;
mod crash_safety;
mod effects;
mod foreign_world;
mod hostile;
mod idempotency;
mod journal;
mod learning;
mod model;
mod module_cache;
mod order_import;
mod path_order;
mod payment;
mod peer_component;
#[cfg(feature = "extism")]
mod peer_extism;
mod peer_txmirror;
mod peers;
mod predicted_stream;
mod python_tour;
mod runaway;
mod split;
mod store;

/// Fails to compile unless a module named after the guest exists here.
macro_rules! assert_guest_has_tests {
    ($name:ident) => {
        #[allow(unused_imports, reason = "only its existence is checked")]
        use self::$name as _;
    };
}
txmirror_tests::foreach_guest!(assert_guest_has_tests);
