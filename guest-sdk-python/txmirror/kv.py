"""Transactional key-value state.

Reads see one snapshot taken when the transaction started, plus its own
writes; writes become visible to others when it commits. Every key lives in
a namespace the policy must grant. Values are JSON (``get``/``put``) or raw
bytes (``get_bytes``/``put_bytes``). A refusal raises ``Error``
(``unavailable``), naming the reason.
"""

import json

from componentize_py_types import Err
from wit_world.imports import kv as host

from .errors import Error, host_error


def get_bytes(namespace: str, key: str):
    """The raw value of ``key``, or ``None``."""
    try:
        return host.get(namespace, key)
    except Err as error:
        raise host_error("key-value store", error) from None


def put_bytes(namespace: str, key: str, value: bytes) -> None:
    try:
        host.put(namespace, key, bytes(value))
    except Err as error:
        raise host_error("key-value store", error) from None


def get(namespace: str, key: str):
    """The value of ``key`` decoded from JSON, or ``None``."""
    raw = get_bytes(namespace, key)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError as error:
        raise Error.unavailable(f"key-value store: {namespace}/{key} is not JSON: {error}") from None


def put(namespace: str, key: str, value) -> None:
    """Writes ``value`` encoded as JSON."""
    put_bytes(namespace, key, json.dumps(value, separators=(",", ":")).encode())


def delete(namespace: str, key: str) -> None:
    try:
        host.delete(namespace, key)
    except Err as error:
        raise host_error("key-value store", error) from None


def scan(namespace: str, prefix: str, limit: int):
    """Up to ``limit`` ``(key, value)`` pairs whose key starts with
    ``prefix``, in key order, values decoded from JSON."""
    try:
        entries = host.scan(namespace, prefix, limit)
    except Err as error:
        raise host_error("key-value store", error) from None
    return [(key, json.loads(value)) for key, value in entries]
