"""Randomness from the host.

By default both twins and every retry of a transaction read the same
stream, so the mirror predicts what the primary will do; it is not fit for
secrets (see the sandbox contract, ``docs/sandbox.md``). Python's own
``random`` module is seeded when the module is built: use this one.
"""

from wit_world.imports import random as host


def u64() -> int:
    return host.get_random_u64()


def bytes(length: int):  # noqa: A001 (the Rust SDK's name: `random.bytes`)
    """``length`` random bytes."""
    return host.get_random_bytes(length)
