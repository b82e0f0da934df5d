//! What every peer of the benchmarks' comparison must do alike: the same
//! outputs, errors and balances for the same calls. The comparison in
//! `docs/benchmarks.md` means something only if this holds.

use serde_json::json;
use txmirror_tests::peers::{ORDER, Peer, TRANSFER};

/// Runs the shared script on `peer` and checks every answer and balance.
pub fn assert_behaves_as_the_shared_logic(peer: &mut impl Peer) {
    let normalised: serde_json::Value = serde_json::from_slice(&peer.call("normalise", ORDER).unwrap()).unwrap();
    assert_eq!(
        normalised,
        json!({
            "id": "ord-1042",
            "customer": "ada.lovelace@example.com",
            "currency": "EUR",
            "lines": [
                { "sku": "CUP-BLUE", "quantity": 1, "unit_price_cents": 1200, "line_total_cents": 1200 },
                { "sku": "SAUCER-WHITE", "quantity": 4, "unit_price_cents": 300, "line_total_cents": 1200 },
                { "sku": "TEA-GREEN", "quantity": 3, "unit_price_cents": 450, "line_total_cents": 1350 },
            ],
            "total_cents": 3750,
        })
    );

    let done: serde_json::Value = serde_json::from_slice(&peer.call("transfer", TRANSFER).unwrap()).unwrap();
    assert_eq!(done, json!({ "from_balance": 999_999_999u64, "to_balance": 1_000_000_001u64 }));
    assert_eq!((peer.balance("alice"), peer.balance("bob")), (Some(999_999_999), Some(1_000_000_001)));

    let refused = peer.call("transfer", br#"{"from":"alice","to":"bob","amount":5000000000}"#).unwrap_err();
    assert!(refused.contains("insufficient funds in `alice`"), "{refused}");
    let unknown = peer.call("transfer", br#"{"from":"carol","to":"bob","amount":1}"#).unwrap_err();
    assert!(unknown.contains("no account `carol`"), "{unknown}");
    let bad_order = peer.call("normalise", br#"{"id":"1","customer":"nobody","currency":"EUR","lines":[]}"#);
    assert!(bad_order.unwrap_err().contains("`nobody` is not an e-mail address"));
    assert_eq!(
        (peer.balance("alice"), peer.balance("bob")),
        (Some(999_999_999), Some(1_000_000_001)),
        "refused transfers change nothing"
    );
}
