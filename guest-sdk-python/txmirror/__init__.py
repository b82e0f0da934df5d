"""Write txmirror transaction modules in Python.

A transaction module is a Wasm component that exports named *paths*. Each
path is an ordinary function from a JSON input to a JSON output::

    from txmirror import Error, WitWorld, kv, path

    @path("deposit")
    def deposit(input):
        old = kv.get("accounts", input["account"]) or 0
        kv.put("accounts", input["account"], old + input["amount"])
        return {"account": input["account"], "balance": old + input["amount"]}

The module that componentize-py builds must name ``WitWorld``: importing it
from this package, as above, exports every path declared with ``@path``.
The first path declared is the default.

Each submodule is one capability of the host; the module's policy decides
which of them a transaction really gets:

- ``kv``: transactional key-value state, in namespaces the policy grants.
- ``events``: events committed together with the state.
- ``http``: outbound HTTP requests to hosts the policy grants.
- ``validation``: report invalid input early, so the runtime can fail fast.
- ``config``: operator-provided settings.
- ``context``: the transaction's id and the idempotency keys of its unsafe
  calls, the same in every attempt and rerun.
- ``log``, ``random``, ``clock``: diagnostics and deterministic inputs.

When the runtime mirrors a transaction, the same code runs a second time in
a read-only twin: its writes are discarded and its unsafe HTTP requests are
answered by a stub. Code written with this package does not need to know
which of the two it runs in.
"""

from ._paths import WitWorld, path
from .errors import Error, Issue

__all__ = ["Error", "Issue", "WitWorld", "path"]
