//! The peer comparison's Extism plugin, on the Extism host.

use txmirror_tests::guests::PEER_EXTISM;
use txmirror_tests::peers::ExtismPeer;

#[test]
fn reused_and_fresh_plugins_behave_as_the_shared_logic() {
    for reuse in [true, false] {
        super::peers::assert_behaves_as_the_shared_logic(&mut ExtismPeer::new(PEER_EXTISM, reuse));
    }
}
