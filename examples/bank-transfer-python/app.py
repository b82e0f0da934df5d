"""Moves money between accounts kept in the `accounts` key-value namespace:
the bank-transfer example (`examples/bank-transfer`), written in Python.

Paths: `transfer` (default), `deposit`, `balance`. Every successful transfer
emits an event on the `transfers` stream. Build it with componentize-py (see
`guest-sdk-python/README.md`); it runs under the same policy as the Rust one.
"""

from txmirror import Error, WitWorld, events, kv, path  # noqa: F401 (WitWorld is the export)
from txmirror.validation import Validator

ACCOUNTS = "accounts"


@path("transfer")
def transfer(input):
    v = Validator()
    source, target, amount = input.get("from", ""), input.get("to", ""), input.get("amount")
    v.check(isinstance(source, str) and source != "", "from", "must name an account")
    v.check(isinstance(target, str) and target != "", "to", "must name an account")
    v.check(source != target, "to", "must differ from `from`")
    v.check(isinstance(amount, int) and amount > 0, "amount", "must be positive")
    v.finish()

    from_balance = kv.get(ACCOUNTS, source)
    if from_balance is None:
        raise Error.rejected(f"no account `{source}`")
    to_balance = kv.get(ACCOUNTS, target)
    if to_balance is None:
        raise Error.rejected(f"no account `{target}`")
    if from_balance < amount:
        raise Error.rejected(f"insufficient funds in `{source}`")
    from_balance, to_balance = from_balance - amount, to_balance + amount

    kv.put(ACCOUNTS, source, from_balance)
    kv.put(ACCOUNTS, target, to_balance)
    events.emit("transfers", {"from": source, "to": target, "amount": amount})
    return {"from_balance": from_balance, "to_balance": to_balance}


@path("deposit")
def deposit(input):
    account, amount = input.get("account", ""), input.get("amount")
    if not isinstance(account, str) or account == "":
        raise Error.invalid("account", "must name an account")
    if not isinstance(amount, int) or amount < 0:
        raise Error.invalid("amount", "must be a whole number of at least 0")
    balance = (kv.get(ACCOUNTS, account) or 0) + amount
    kv.put(ACCOUNTS, account, balance)
    return {"account": account, "balance": balance}


@path("balance")
def balance(input):
    account = input.get("account", "")
    found = kv.get(ACCOUNTS, account)
    if found is None:
        raise Error.rejected(f"no account `{account}`")
    return {"account": account, "balance": found}
