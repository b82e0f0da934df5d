//! Imports orders from several e-commerce platforms into one schema.
//!
//! Path `import` takes `{ "platform": …, "store": …, "payload": … }` where the
//! payload is the platform's own order document (`shopify`, `woocommerce` or
//! `amazon`). It normalises the order, reports every validation problem it
//! finds, and stores the order in the `orders` namespace under its
//! idempotency key `platform:store:order_id`. Importing the same order twice
//! stores it once: the second import answers `duplicate`.
//!
//! The `init` function builds the currency table once at upload time, so
//! transactions start with it already in memory.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::OnceLock;
use txmirror_guest::validation::Validator;
use txmirror_guest::{Error, Issue, events, kv};

const ORDERS: &str = "orders";

/// Minor units per currency, built by `init`.
static CURRENCIES: OnceLock<BTreeMap<&'static str, u32>> = OnceLock::new();

fn init() {
    currencies();
}

fn currencies() -> &'static BTreeMap<&'static str, u32> {
    CURRENCIES.get_or_init(|| {
        [("EUR", 2), ("USD", 2), ("GBP", 2), ("CHF", 2), ("JPY", 0), ("SEK", 2), ("CAD", 2)].into_iter().collect()
    })
}

#[derive(Deserialize)]
struct ImportRequest {
    platform: String,
    store: String,
    payload: Value,
}

/// The one schema every platform's order becomes.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Order {
    idempotency_key: String,
    platform: String,
    store: String,
    order_id: String,
    currency: String,
    total_minor: u64,
    customer_email: String,
    lines: Vec<Line>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Line {
    sku: String,
    quantity: u32,
    unit_price_minor: u64,
}

#[derive(Serialize)]
struct ImportOutcome {
    status: &'static str,
    order: Order,
}

fn import(request: ImportRequest) -> Result<ImportOutcome, Error> {
    let mut v = Validator::new();
    v.check(!request.store.trim().is_empty(), "store", "must not be empty");
    let draft = match request.platform.as_str() {
        "shopify" => shopify(&request.payload, &mut v),
        "woocommerce" => woocommerce(&request.payload, &mut v),
        "amazon" => amazon(&request.payload, &mut v),
        other => {
            v.push(Issue::new(
                "platform",
                format!("unknown platform `{other}`; expected shopify, woocommerce or amazon"),
            ));
            Draft::default()
        }
    };
    let order = draft.finish(&request.platform, request.store.trim(), &mut v);
    v.finish()?;

    if let Some(existing) = kv::get::<Order>(ORDERS, &order.idempotency_key)? {
        return Ok(ImportOutcome { status: "duplicate", order: existing });
    }
    kv::put(ORDERS, &order.idempotency_key, &order)?;
    events::emit(
        "orders.imported",
        &serde_json::json!({ "key": order.idempotency_key, "total_minor": order.total_minor }),
    )?;
    Ok(ImportOutcome { status: "imported", order })
}

/// The fields gathered from a platform payload, before the checks that apply to all.
#[derive(Default)]
struct Draft {
    order_id: String,
    currency: String,
    total: Option<String>,
    email: String,
    lines: Vec<(String, u64, Option<String>)>,
}

impl Draft {
    fn finish(self, platform: &str, store: &str, v: &mut Validator) -> Order {
        v.check(!self.order_id.is_empty(), "payload.id", "the order has no id");
        let digits = currencies().get(self.currency.as_str()).copied();
        if digits.is_none() {
            v.push(Issue::new("payload.currency", format!("unsupported currency `{}`", self.currency)));
        }
        let digits = digits.unwrap_or(2);
        let email_ok =
            self.email.split_once('@').is_some_and(|(user, domain)| !user.is_empty() && domain.contains('.'));
        v.check(email_ok, "payload.email", "is not an email address");
        v.check(!self.lines.is_empty(), "payload.lines", "the order has no lines");

        let mut lines = Vec::new();
        let mut sum: u64 = 0;
        for (index, (sku, quantity, price)) in self.lines.into_iter().enumerate() {
            v.check(!sku.is_empty(), &format!("lines.{index}.sku"), "must not be empty");
            let quantity = u32::try_from(quantity).unwrap_or(0);
            v.check(quantity > 0, &format!("lines.{index}.quantity"), "must be a positive whole number");
            let unit = match price.as_deref().map(|p| parse_money(p, digits)) {
                Some(Some(unit)) => unit,
                _ => {
                    v.push(Issue::new(format!("lines.{index}.price"), "is not an amount of money"));
                    0
                }
            };
            sum = sum.saturating_add(unit.saturating_mul(u64::from(quantity)));
            lines.push(Line { sku, quantity, unit_price_minor: unit });
        }
        let total = match self.total.as_deref().map(|t| parse_money(t, digits)) {
            Some(Some(total)) => total,
            _ => {
                v.push(Issue::new("payload.total", "is not an amount of money"));
                0
            }
        };
        if v.is_ok() && total != sum {
            v.push(Issue::new("payload.total", format!("is {total} but the lines add up to {sum}")));
        }
        Order {
            idempotency_key: format!("{platform}:{store}:{}", self.order_id),
            platform: platform.to_string(),
            store: store.to_string(),
            order_id: self.order_id,
            currency: self.currency,
            total_minor: total,
            customer_email: self.email.to_ascii_lowercase(),
            lines,
        }
    }
}

fn text(value: &Value, pointer: &str) -> String {
    match value.pointer(pointer) {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn money_text(value: &Value, pointer: &str) -> Option<String> {
    match value.pointer(pointer) {
        Some(Value::String(s)) => Some(s.trim().to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

fn lines<'a>(value: &'a Value, pointer: &str, v: &mut Validator) -> Vec<&'a Value> {
    match value.pointer(pointer) {
        Some(Value::Array(items)) => items.iter().collect(),
        _ => {
            v.push(Issue::new("payload.lines", format!("expected an array at `{pointer}`")));
            Vec::new()
        }
    }
}

fn quantity(value: &Value, pointer: &str) -> u64 {
    value.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

/// Shopify: `{ id, currency, total_price: "12.50", email, line_items: [{ sku, quantity, price }] }`.
fn shopify(p: &Value, v: &mut Validator) -> Draft {
    Draft {
        order_id: text(p, "/id"),
        currency: text(p, "/currency"),
        total: money_text(p, "/total_price"),
        email: text(p, "/email"),
        lines: lines(p, "/line_items", v)
            .into_iter()
            .map(|l| (text(l, "/sku"), quantity(l, "/quantity"), money_text(l, "/price")))
            .collect(),
    }
}

/// WooCommerce: `{ id: 123, currency, total, billing: { email }, line_items: [{ sku, quantity, price }] }`.
fn woocommerce(p: &Value, v: &mut Validator) -> Draft {
    Draft {
        order_id: text(p, "/id"),
        currency: text(p, "/currency"),
        total: money_text(p, "/total"),
        email: text(p, "/billing/email"),
        lines: lines(p, "/line_items", v)
            .into_iter()
            .map(|l| (text(l, "/sku"), quantity(l, "/quantity"), money_text(l, "/price")))
            .collect(),
    }
}

/// Amazon SP-API: `{ AmazonOrderId, OrderTotal: { CurrencyCode, Amount }, BuyerInfo: { BuyerEmail },
/// OrderItems: [{ SellerSKU, QuantityOrdered, ItemPrice: { Amount } }] }`.
///
/// Amazon's `ItemPrice` is the price of the whole line, not of one unit.
fn amazon(p: &Value, v: &mut Validator) -> Draft {
    let currency = text(p, "/OrderTotal/CurrencyCode");
    let digits = currencies().get(currency.as_str()).copied().unwrap_or(2);
    Draft {
        order_id: text(p, "/AmazonOrderId"),
        total: money_text(p, "/OrderTotal/Amount"),
        email: text(p, "/BuyerInfo/BuyerEmail"),
        lines: lines(p, "/OrderItems", v)
            .into_iter()
            .map(|l| {
                let quantity = quantity(l, "/QuantityOrdered");
                let unit = money_text(l, "/ItemPrice/Amount").and_then(|line_total| {
                    let line_total = parse_money(&line_total, digits)?;
                    (quantity > 0 && line_total % quantity == 0).then(|| format_money(line_total / quantity, digits))
                });
                (text(l, "/SellerSKU"), quantity, unit)
            })
            .collect(),
        currency,
    }
}

/// Parses a decimal amount such as `12.5` into minor units, without floats.
fn parse_money(text: &str, digits: u32) -> Option<u64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = digits as usize;
    if fraction.len() > digits && fraction[digits..].bytes().any(|b| b != b'0') {
        return None;
    }
    let mut fraction: String = fraction.chars().take(digits).collect();
    while fraction.len() < digits {
        fraction.push('0');
    }
    let scale = 10u64.checked_pow(digits as u32)?;
    let fraction: u64 = if fraction.is_empty() { 0 } else { fraction.parse().ok()? };
    whole.parse::<u64>().ok()?.checked_mul(scale)?.checked_add(fraction)
}

fn format_money(minor: u64, digits: u32) -> String {
    if digits == 0 {
        return minor.to_string();
    }
    let scale = 10u64.pow(digits);
    format!("{}.{:0width$}", minor / scale, minor % scale, width = digits as usize)
}

txmirror_guest::transaction_module! {
    init: init,
    paths: {
        "import" => import,
    }
}
