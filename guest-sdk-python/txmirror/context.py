"""What the guest may know of the transaction it runs in."""

import json
from dataclasses import dataclass
from typing import Optional

from wit_world.imports import context as host

from .errors import Error


def transaction_id() -> str:
    """The transaction's id: the same in every attempt and rerun of it, on
    any node, for both twins. Empty in a dry run."""
    return host.transaction_id()


def effect_key(ordinal: int) -> str:
    """The idempotency key the runtime puts on the path's ``ordinal``-th
    unsafe outbound call (from 1), for an endpoint that wants it in the
    body. Empty in a dry run."""
    return host.effect_key(ordinal)


@dataclass(frozen=True)
class SentEffect:
    """An unsafe outbound call the transaction sent, from its journal."""

    path: str
    ordinal: int
    method: str
    url: str
    key: str
    sends: int
    #: ``None`` while in doubt: sent, and the answer never came.
    status: Optional[int]
    body: bytes

    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def may_have_acted(self) -> bool:
        """Answered 2xx, or never answered."""
        return self.status is None or self.succeeded()

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as error:
            raise Error.unavailable(f"the answer to {self.method} {self.url} is not JSON: {error}") from None


def sent_effects():
    """The unsafe calls the transaction has sent so far; in a compensation,
    those of the transaction it compensates. Empty in a dry run."""
    return [
        SentEffect(e.path, e.ordinal, e.method, e.url, e.key, e.sends, e.status, bytes(e.body))
        for e in host.sent_effects()
    ]
