"""The time, frozen at the transaction's start so that both twins and every
retry see the same instant."""

from wit_world.imports import wall_clock


def now_unix_millis() -> int:
    now = wall_clock.now()
    return now.seconds * 1000 + now.nanoseconds // 1_000_000
