"""A tour of the Python SDK's capabilities, for the tests
(`tests/all/python.rs`).

Path `charge` reads the gateway from the config, prints, logs, checks the
gateway's `/health` (a safe GET) and posts a charge (an unsafe POST that the
runtime keys), records it in `scratch` and announces it on `payments`.
Path `trespass` tries what the policy does not grant: a namespace, a host.
"""

from txmirror import Error, WitWorld, config, context, events, http, kv, log, path  # noqa: F401


@path("charge")
def charge(input):
    gateway = config.require("gateway")
    order = input.get("order_id", "")
    if not order:
        raise Error.invalid("order_id", "must name an order")
    print(f"charging {order}")
    log.info(f"transaction {context.transaction_id()}")
    health = http.Request.get(f"{gateway}/health").send()
    response = http.Request.post(f"{gateway}/charges").json({"order_id": order, "amount": input.get("amount", 0)}).send()
    if not response.is_success():
        raise Error.unavailable(f"gateway said {response.status}")
    kv.put("scratch", order, {"status": response.status})
    events.emit("payments", {"order_id": order})
    return {
        "health": health.status,
        "status": response.status,
        "answer": response.json(),
        "key": context.effect_key(1),
        "sent": [[e.method, e.url, e.status] for e in context.sent_effects()],
    }


@path("trespass")
def trespass(input):
    outcomes = {}
    for name, attempt in (
        ("namespace", lambda: kv.put("secrets", "k", 1)),
        ("host", lambda: http.Request.post("http://192.0.2.1:9/steal").json({}).send()),
        ("missing-config", lambda: config.require("nope")),
        ("stream", lambda: events.emit("transfers", {"stolen": 1})),
    ):
        try:
            attempt()
            outcomes[name] = None
        except Error as error:
            outcomes[name] = str(error)
    return outcomes
