//! The peer comparison: one transaction logic (`benches/guests/peer-logic`)
//! behind each host, one call per iteration (see `txmirror_tests::peers`
//! for what each does, and `cargo xtask bench` for p50/p99 and ratios).
//!
//! Run with `cargo bench -p txmirror-benches --bench peers`.

#![allow(clippy::unwrap_used, reason = "benchmark")]

use criterion::{Criterion, criterion_group, criterion_main};
use txmirror_tests::guests;
use txmirror_tests::peers::{ComponentPeer, EngineSetup, ORDER, Peer, TRANSFER, TxmirrorPeer};

fn peers(c: &mut Criterion) {
    #[allow(unused_mut, reason = "the Extism rows are behind a feature")]
    let mut peers: Vec<(&str, Box<dyn Peer>)> = vec![
        ("raw_wasmtime_tuned", Box::new(ComponentPeer::new(guests::PEER_COMPONENT, EngineSetup::TunedPooling))),
        (
            "raw_wasmtime_tuned_metered",
            Box::new(ComponentPeer::new(guests::PEER_COMPONENT, EngineSetup::TunedPoolingMetered)),
        ),
        ("raw_wasmtime_default", Box::new(ComponentPeer::new(guests::PEER_COMPONENT, EngineSetup::Default))),
        ("txmirror_primary_only", Box::new(TxmirrorPeer::new(guests::PEER_TXMIRROR, false))),
        ("txmirror_mirrored", Box::new(TxmirrorPeer::new(guests::PEER_TXMIRROR, true))),
    ];
    #[cfg(feature = "extism")]
    {
        use txmirror_tests::peers::ExtismPeer;
        peers.push(("extism_reused", Box::new(ExtismPeer::new(guests::PEER_EXTISM, true))));
        peers.push(("extism_fresh", Box::new(ExtismPeer::new(guests::PEER_EXTISM, false))));
    }
    let mut group = c.benchmark_group("peers");
    for (name, mut peer) in peers {
        for (path, input) in [("transfer", TRANSFER), ("normalise", ORDER)] {
            group.bench_function(format!("{name}/{path}"), |b| b.iter(|| peer.call(path, input).unwrap()));
        }
    }
    group.finish();
}

criterion_group!(benches, peers);
criterion_main!(benches);
