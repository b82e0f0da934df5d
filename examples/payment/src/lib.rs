//! Charges an order through an outbound HTTP payment gateway.
//!
//! Paths:
//! - `charge` (default): through the gateway named by the `primary_gateway`
//!   config value;
//! - `charge-backup`: the alternative path, through `backup_gateway`;
//! - `refund`: the compensation path. Run as the compensation of a failed
//!   charge, it refunds exactly the charges the runtime's effect journal
//!   says were sent, by any attempt on either path, answered or not; asked
//!   for directly, it refunds the recorded charge.
//!
//! Before charging, the path checks the gateway's `/health` (a safe GET,
//! which lets the runtime measure the gateway from the mirror).
//!
//! Every charge carries the order id as its `idempotency-key`, so a gateway
//! that honours it never charges an order twice. The charge is recorded in
//! the `payments` namespace and announced on the `payments` stream.

use serde::{Deserialize, Serialize};
use txmirror_guest::context::{self, SentEffect};
use txmirror_guest::http::Request;
use txmirror_guest::validation::Validator;
use txmirror_guest::{Error, config, events, kv, log};

const PAYMENTS: &str = "payments";

#[derive(Deserialize)]
struct Charge {
    order_id: String,
    amount_cents: u64,
    currency: String,
}

#[derive(Serialize, Deserialize)]
struct ChargeRecord {
    order_id: String,
    charge_id: String,
    gateway: String,
    amount_cents: u64,
    currency: String,
    refunded: bool,
}

#[derive(Deserialize)]
struct GatewayCharge {
    charge_id: String,
}

fn charge(input: Charge) -> Result<ChargeRecord, Error> {
    charge_via("primary_gateway", input)
}

fn charge_backup(input: Charge) -> Result<ChargeRecord, Error> {
    charge_via("backup_gateway", input)
}

fn charge_via(gateway: &str, input: Charge) -> Result<ChargeRecord, Error> {
    let mut v = Validator::new();
    v.check(!input.order_id.is_empty(), "order_id", "must not be empty");
    v.check(input.amount_cents > 0, "amount_cents", "must be positive");
    v.check(
        input.currency.len() == 3 && input.currency.bytes().all(|b| b.is_ascii_uppercase()),
        "currency",
        "must be an ISO 4217 code such as EUR",
    );
    v.finish()?;

    if let Some(existing) = kv::get::<ChargeRecord>(PAYMENTS, &input.order_id)? {
        log::info(&format!("order {} was already charged as {}", existing.order_id, existing.charge_id));
        return Ok(existing);
    }

    let base = config::require(gateway)?;
    // Ask the gateway how it is first. This is a safe request, which the
    // runtime's mirror sends too: the gateway is measured before anything
    // is charged, and a slow or failing gateway can be avoided. The check
    // is advisory; the charge is what counts.
    match Request::get(&format!("{base}/health")).send() {
        Ok(response) if response.is_success() => {}
        Ok(response) => log::warn(&format!("{gateway} health check answered {}", response.status)),
        Err(error) => log::warn(&format!("{gateway} health check failed: {error}")),
    }
    log::info(&format!("charging order {} through {gateway}", input.order_id));
    let response = Request::post(&format!("{base}/charges"))
        .header("idempotency-key", &input.order_id)
        .json(&serde_json::json!({
            "order_id": input.order_id,
            "amount_cents": input.amount_cents,
            "currency": input.currency,
        }))?
        .send()?;
    match response.status {
        200..=299 => {}
        402 => return Err(Error::rejected(format!("card declined by {gateway}"))),
        status => return Err(Error::unavailable(format!("{gateway} answered {status}"))),
    }
    let GatewayCharge { charge_id } = response.json()?;

    let record = ChargeRecord {
        order_id: input.order_id,
        charge_id,
        gateway: gateway.to_string(),
        amount_cents: input.amount_cents,
        currency: input.currency,
        refunded: false,
    };
    kv::put(PAYMENTS, &record.order_id, &record)?;
    events::emit("payments", &serde_json::json!({ "charged": record.order_id, "charge_id": record.charge_id }))?;
    Ok(record)
}

#[derive(Deserialize)]
struct Refund {
    order_id: String,
}

#[derive(Serialize)]
struct RefundDone {
    order_id: String,
    refunded: bool,
}

fn refund(input: Refund) -> Result<RefundDone, Error> {
    // As a compensation, the runtime tells which charges were sent, by any
    // attempt on any path, answered or not: those are what to undo, even
    // when no attempt lived to record its charge.
    let sent: Vec<SentEffect> = context::sent_effects()
        .into_iter()
        .filter(|effect| effect.method == "POST" && effect.url.ends_with("/charges") && effect.may_have_acted())
        .collect();
    if !sent.is_empty() {
        return refund_sent(input, &sent);
    }
    let Some(mut record) = kv::get::<ChargeRecord>(PAYMENTS, &input.order_id)? else {
        log::info(&format!("order {} has no charge to refund", input.order_id));
        return Ok(RefundDone { order_id: input.order_id, refunded: false });
    };
    if record.refunded {
        return Ok(RefundDone { order_id: input.order_id, refunded: true });
    }
    let base = config::require(&record.gateway)?;
    let response = Request::post(&format!("{base}/refunds"))
        .header("idempotency-key", &format!("refund-{}", record.order_id))
        .json(&serde_json::json!({ "charge_id": record.charge_id }))?
        .send()?;
    if !response.is_success() {
        return Err(Error::unavailable(format!("refund answered {}", response.status)));
    }
    record.refunded = true;
    kv::put(PAYMENTS, &record.order_id, &record)?;
    events::emit("payments", &serde_json::json!({ "refunded": record.order_id }))?;
    Ok(RefundDone { order_id: input.order_id, refunded: true })
}

/// Refunds each charge in `sent` at the gateway that took it: by its
/// charge id where its answer gave one, else (an answer that never came)
/// by the idempotency key it was sent under. Each refund goes without a
/// key of its own, so the runtime keys it: a compensation run again refunds
/// nothing twice.
fn refund_sent(input: Refund, sent: &[SentEffect]) -> Result<RefundDone, Error> {
    let mut refunded = Vec::new();
    for charge in sent {
        let base = charge.url.trim_end_matches("/charges");
        let body = match charge.json::<GatewayCharge>() {
            Ok(GatewayCharge { charge_id }) => {
                let body = serde_json::json!({ "charge_id": charge_id });
                refunded.push((base.to_string(), charge_id));
                body
            }
            Err(_) => serde_json::json!({ "idempotency_key": charge.key }),
        };
        let response = Request::post(&format!("{base}/refunds")).json(&body)?.send()?;
        if !response.is_success() {
            return Err(Error::unavailable(format!("refund of {} answered {}", charge.url, response.status)));
        }
    }
    // The order's record is marked only if its own charge was refunded: a
    // compensation after a commit refunds the charges of abandoned paths
    // (a hedge that lost), and the committed charge stands.
    if let Some(mut record) = kv::get::<ChargeRecord>(PAYMENTS, &input.order_id)?
        && refunded.contains(&(config::require(&record.gateway)?, record.charge_id.clone()))
    {
        record.refunded = true;
        kv::put(PAYMENTS, &record.order_id, &record)?;
    }
    events::emit("payments", &serde_json::json!({ "refunded": input.order_id, "charges": sent.len() }))?;
    Ok(RefundDone { order_id: input.order_id, refunded: true })
}

txmirror_guest::transaction_module! {
    paths: {
        "charge" => charge,
        "charge-backup" => charge_backup,
        "refund" => refund,
    }
}
