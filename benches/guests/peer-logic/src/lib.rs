//! The transaction logic of the peer comparison, shared by the txmirror
//! guest, the plain component and the Extism plugin so that they differ
//! only in how they reach their host.
//!
//! - [`transfer`] moves money between two accounts kept in a key-value map
//!   that the host provides.
//! - [`normalise`] cleans up an imported order: trims and folds names,
//!   merges the lines of one SKU, sorts them and adds up the totals.
//!
//! Inputs and outputs are JSON: each peer decodes and encodes them itself,
//! as its framework does.

use serde::{Deserialize, Serialize};

/// The host's key-value map of account balances.
pub trait Accounts {
    /// The balance of an account, if it exists.
    fn balance(&mut self, account: &str) -> Result<Option<u64>, String>;
    /// Sets the balance of an account.
    fn set_balance(&mut self, account: &str, balance: u64) -> Result<(), String>;
}

/// A transfer request.
#[derive(Debug, Deserialize)]
pub struct Transfer {
    /// The account debited.
    pub from: String,
    /// The account credited.
    pub to: String,
    /// The amount, in cents.
    pub amount: u64,
}

/// A transfer done: the new balances.
#[derive(Debug, Serialize)]
pub struct TransferDone {
    /// The debited account's balance.
    pub from_balance: u64,
    /// The credited account's balance.
    pub to_balance: u64,
}

/// Moves `amount` from one account to another, or says why not.
pub fn transfer(accounts: &mut impl Accounts, input: Transfer) -> Result<TransferDone, String> {
    if input.from.is_empty() || input.to.is_empty() || input.from == input.to || input.amount == 0 {
        return Err("a transfer needs two different accounts and a positive amount".into());
    }
    let from_balance = accounts.balance(&input.from)?.ok_or_else(|| format!("no account `{}`", input.from))?;
    let to_balance = accounts.balance(&input.to)?.ok_or_else(|| format!("no account `{}`", input.to))?;
    let from_balance =
        from_balance.checked_sub(input.amount).ok_or_else(|| format!("insufficient funds in `{}`", input.from))?;
    let to_balance = to_balance.checked_add(input.amount).ok_or("balance would overflow")?;
    accounts.set_balance(&input.from, from_balance)?;
    accounts.set_balance(&input.to, to_balance)?;
    Ok(TransferDone { from_balance, to_balance })
}

/// An order as a partner sends it.
#[derive(Debug, Deserialize)]
pub struct Order {
    /// The partner's order id.
    pub id: String,
    /// The customer's e-mail address.
    pub customer: String,
    /// An ISO 4217 code, any case.
    pub currency: String,
    /// The lines, in any order, a SKU possibly on several.
    pub lines: Vec<OrderLine>,
}

/// A line of an [`Order`].
#[derive(Debug, Deserialize)]
pub struct OrderLine {
    /// The SKU, any case, `_` or `-`.
    pub sku: String,
    /// How many.
    pub quantity: u32,
    /// The unit price, in cents.
    pub unit_price_cents: u64,
}

/// An order, normalised.
#[derive(Debug, Serialize)]
pub struct NormalisedOrder {
    /// The id, trimmed.
    pub id: String,
    /// The e-mail address, trimmed and lower-case.
    pub customer: String,
    /// The currency code, upper-case.
    pub currency: String,
    /// One line per SKU, sorted by SKU.
    pub lines: Vec<NormalisedLine>,
    /// The order's total, in cents.
    pub total_cents: u64,
}

/// A line of a [`NormalisedOrder`].
#[derive(Debug, Serialize)]
pub struct NormalisedLine {
    /// The SKU, upper-case, with `-`.
    pub sku: String,
    /// The quantity of all the order's lines of this SKU.
    pub quantity: u32,
    /// The unit price, in cents.
    pub unit_price_cents: u64,
    /// `quantity × unit_price_cents`.
    pub line_total_cents: u64,
}

/// Normalises an order, or says what is wrong with it.
pub fn normalise(order: Order) -> Result<NormalisedOrder, String> {
    let id = order.id.trim().to_string();
    let customer = order.customer.trim().to_lowercase();
    let currency = order.currency.trim().to_uppercase();
    if id.is_empty() {
        return Err("the order has no id".into());
    }
    if !customer.contains('@') {
        return Err(format!("`{customer}` is not an e-mail address"));
    }
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!("`{currency}` is not a currency code"));
    }
    let mut lines: Vec<NormalisedLine> = Vec::with_capacity(order.lines.len());
    for (index, line) in order.lines.into_iter().enumerate() {
        let sku = line.sku.trim().to_uppercase().replace('_', "-");
        if sku.is_empty() || line.quantity == 0 {
            return Err(format!("line {index} needs a SKU and a positive quantity"));
        }
        match lines.iter_mut().find(|l| l.sku == sku) {
            Some(same) if same.unit_price_cents != line.unit_price_cents => {
                return Err(format!("SKU {sku} has two prices"));
            }
            Some(same) => same.quantity = same.quantity.checked_add(line.quantity).ok_or("quantity overflows")?,
            None => lines.push(NormalisedLine {
                sku,
                quantity: line.quantity,
                unit_price_cents: line.unit_price_cents,
                line_total_cents: 0,
            }),
        }
    }
    lines.sort_by(|a, b| a.sku.cmp(&b.sku));
    let mut total_cents: u64 = 0;
    for line in &mut lines {
        line.line_total_cents =
            u64::from(line.quantity).checked_mul(line.unit_price_cents).ok_or("a line total overflows")?;
        total_cents = total_cents.checked_add(line.line_total_cents).ok_or("the total overflows")?;
    }
    Ok(NormalisedOrder { id, customer, currency, lines, total_cents })
}
