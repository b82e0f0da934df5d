"""Read-only settings the operator gives the module in its policy."""

from wit_world.imports import config as host

from .errors import Error


def get(key: str):
    """The setting, or ``None``."""
    return host.get(key)


def require(key: str) -> str:
    """The setting; ``Error`` (``unavailable``) if the policy does not set it."""
    value = host.get(key)
    if value is None:
        raise Error.unavailable(f"config `{key}` is not set in the policy")
    return value
