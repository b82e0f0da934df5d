//! Host bindings of the `txmirror:transaction` world (`wit/transaction.wit`).
//!
//! This is the one `bindgen!` of the host. WASI interfaces are mapped to the
//! implementations of `wasmtime-wasi` and `wasmtime-wasi-http`.

wasmtime::component::bindgen!({
    world: "transaction",
    path: "../wit",
    // A key's read may wait for a networked store: it is awaited, not
    // blocked on, so that the worker thread runs other instances meanwhile.
    imports: {
        "txmirror:transaction/kv.get": async | trappable,
        // So may the journal's read.
        "txmirror:transaction/context.sent-effects": async | trappable,
        default: trappable,
    },
    exports: { default: async },
    with: {
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        "wasi:random": wasmtime_wasi::p2::bindings::random,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        "wasi:io": wasmtime_wasi::p2::bindings::io,
    },
});
