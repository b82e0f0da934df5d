"""Log lines in the transaction's trace (``print`` goes there too, as
standard output)."""

from wit_world.imports import log as host


def debug(message: str) -> None:
    host.log(host.Level.DEBUG, str(message))


def info(message: str) -> None:
    host.log(host.Level.INFO, str(message))


def warn(message: str) -> None:
    host.log(host.Level.WARN, str(message))


def error(message: str) -> None:
    host.log(host.Level.ERROR, str(message))
