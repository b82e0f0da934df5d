//! The peer comparison's plain component, on raw wasmtime.

use txmirror_tests::guests::PEER_COMPONENT;
use txmirror_tests::peers::{ComponentPeer, EngineSetup};

#[test]
fn every_engine_setup_behaves_as_the_shared_logic() {
    for setup in [EngineSetup::Default, EngineSetup::TunedPooling, EngineSetup::TunedPoolingMetered] {
        super::peers::assert_behaves_as_the_shared_logic(&mut ComponentPeer::new(PEER_COMPONENT, setup));
    }
}
