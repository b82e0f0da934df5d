//! Orders from three platforms become one schema, once each, and invalid
//! orders are refused with every problem named.

use serde_json::{Value, json};
use tempfile::tempdir;
use txmirror_runtime::Action;
use txmirror_runtime::trace::HostCall;
use txmirror_runtime::{FailureKind, TxRequest};
use txmirror_tests::{guests, load, policy, runtime};

const POLICY: &str = "[capabilities]\nkv = { orders = \"read-write\" }\nstreams = [\"orders.imported\"]\n";

fn import(platform: &str, store: &str, payload: Value) -> TxRequest {
    let input = json!({ "platform": platform, "store": store, "payload": payload });
    TxRequest { path: Some("import".into()), input: input.to_string().into_bytes(), ..Default::default() }
}

fn shopify() -> Value {
    json!({
        "id": 1001, "currency": "EUR", "total_price": "25.50", "email": "Ann@Example.com",
        "line_items": [{ "sku": "MUG", "quantity": 2, "price": "10.00" }, { "sku": "TEA", "quantity": 1, "price": "5.5" }]
    })
}

fn woocommerce() -> Value {
    json!({
        "id": 1001, "currency": "EUR", "total": "25.50", "billing": { "email": "ann@example.com" },
        "line_items": [{ "sku": "MUG", "quantity": 2, "price": 10 }, { "sku": "TEA", "quantity": 1, "price": 5.5 }]
    })
}

fn amazon() -> Value {
    json!({
        "AmazonOrderId": "1001",
        "OrderTotal": { "CurrencyCode": "EUR", "Amount": "25.50" },
        "BuyerInfo": { "BuyerEmail": "ann@example.com" },
        "OrderItems": [
            { "SellerSKU": "MUG", "QuantityOrdered": 2, "ItemPrice": { "Amount": "20.00" } },
            { "SellerSKU": "TEA", "QuantityOrdered": 1, "ItemPrice": { "Amount": "5.50" } }
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_platforms_normalise_to_one_schema_once() {
    let dir = tempdir().unwrap();
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::ORDER_IMPORT).await;
    assert!(module.is_preinitialized(), "order-import exports init and is snapshotted at load");
    let policy = policy(POLICY);

    let mut orders = Vec::new();
    for (platform, payload) in [("shopify", shopify()), ("woocommerce", woocommerce()), ("amazon", amazon())] {
        let report = runtime.execute(&module, &policy, import(platform, "berlin", payload)).await.unwrap();
        let output = report.output_json().unwrap_or_else(|| panic!("{platform}: {report:#?}"));
        assert_eq!(output["status"], "imported", "{platform}");
        let prediction = report.attempts[0].prediction.as_ref().unwrap();
        assert_eq!(prediction.failure_probability, 0.0, "{platform}: {prediction:?}");
        orders.push(output["order"].clone());
    }
    for (order, platform) in orders.iter().zip(["shopify", "woocommerce", "amazon"]) {
        assert_eq!(order["idempotency_key"], format!("{platform}:berlin:1001"));
        assert_eq!(order["total_minor"], 2550);
        assert_eq!(order["currency"], "EUR");
        assert_eq!(order["customer_email"], "ann@example.com");
        assert_eq!(
            order["lines"],
            json!([
                { "sku": "MUG", "quantity": 2, "unit_price_minor": 1000 },
                { "sku": "TEA", "quantity": 1, "unit_price_minor": 550 }
            ])
        );
    }

    // The same order again is stored once.
    let again = runtime.execute(&module, &policy, import("shopify", "berlin", shopify())).await.unwrap();
    assert_eq!(again.output_json().unwrap()["status"], "duplicate");
    assert_eq!(runtime.events("orders.imported", 0, 100).unwrap().len(), 3);
    let stored = runtime.snapshot().unwrap().scan("orders", "", 100).unwrap();
    assert_eq!(stored.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_orders_name_every_problem_and_write_nothing() {
    let dir = tempdir().unwrap();
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::ORDER_IMPORT).await;
    let policy = policy(POLICY);
    let bad = json!({
        "AmazonOrderId": "", "OrderTotal": { "CurrencyCode": "XXX", "Amount": "abc" },
        "BuyerInfo": { "BuyerEmail": "nobody" },
        "OrderItems": [{ "SellerSKU": "", "QuantityOrdered": 0, "ItemPrice": { "Amount": "1.00" } }]
    });
    let report = runtime.execute(&module, &policy, import("amazon", "berlin", bad)).await.unwrap();
    let failure = report.failure.as_ref().unwrap();
    assert_eq!(failure.kind, FailureKind::Validation);
    for field in ["payload.id", "payload.currency", "payload.email", "lines.0.sku", "lines.0.quantity", "payload.total"]
    {
        assert!(failure.message.contains(field), "{field} missing from: {}", failure.message);
    }
    assert_eq!(runtime.snapshot().unwrap().version(), 0, "nothing written");
    // The mirror reported the issues as it found them, so a predictor sees them early.
    let mirror = report.attempts[0].mirror.as_ref().unwrap();
    let reported = mirror.events.iter().filter(|e| matches!(e.call, HostCall::Validation { .. })).count();
    assert!(reported >= 6, "{mirror:#?}");
    // ...and the default rules read it as a certain failure to stop early.
    let prediction = report.attempts[0].prediction.as_ref().unwrap();
    assert_eq!(prediction.features.validation_errors, reported as f32);
    assert_eq!(prediction.reasons[0].rule, "validation");
    assert_eq!(prediction.reasons[0].action, Action::FailFast);
    assert!(prediction.failure_probability >= 0.4);

    let unknown = runtime.execute(&module, &policy, import("ebay", "berlin", json!({}))).await.unwrap();
    assert!(unknown.failure.unwrap().message.contains("unknown platform `ebay`"));

    let garbage = TxRequest { path: Some("import".into()), input: b"{not json".to_vec(), ..Default::default() };
    let report = runtime.execute(&module, &policy, garbage).await.unwrap();
    let failure = report.failure.unwrap();
    assert_eq!(failure.kind, FailureKind::Validation);
    assert!(failure.message.starts_with("input: not a valid input document"), "{}", failure.message);
}
