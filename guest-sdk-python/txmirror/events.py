"""Events on named streams, committed atomically with the state: an event
of a transaction that does not commit is never seen."""

import json

from componentize_py_types import Err
from wit_world.imports import events as host

from .errors import host_error


def emit(stream: str, payload) -> None:
    """Emits ``payload`` encoded as JSON (bytes are sent as they are)."""
    data = bytes(payload) if isinstance(payload, (bytes, bytearray)) else json.dumps(payload).encode()
    try:
        host.emit(stream, data)
    except Err as error:
        raise host_error("events", error) from None
