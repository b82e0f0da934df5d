//! The peer comparison's txmirror guest, with and without its mirror.

use txmirror_tests::guests::PEER_TXMIRROR;
use txmirror_tests::peers::TxmirrorPeer;

#[test]
fn mirrored_transactions_behave_as_the_shared_logic() {
    super::peers::assert_behaves_as_the_shared_logic(&mut TxmirrorPeer::new(PEER_TXMIRROR, true));
}

#[test]
fn primary_only_transactions_behave_as_the_shared_logic() {
    super::peers::assert_behaves_as_the_shared_logic(&mut TxmirrorPeer::new(PEER_TXMIRROR, false));
}
