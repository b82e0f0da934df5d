"""The ways a path can fail that it chooses to report.

Raise an ``Error`` from a path to end it with that failure. Any other
exception escaping a path is a bug: the instance traps, its traceback goes
to the trace's standard error, and the runtime treats it as it treats a
panic in a Rust module.
"""

from dataclasses import dataclass

from wit_world.imports import txmirror_transaction_types as types


@dataclass(frozen=True)
class Issue:
    """One problem found while validating the input."""

    #: The input field at fault, as a dotted path (``lines.0.sku``).
    field: str
    #: What is wrong with it, for a person to read.
    message: str


class Error(Exception):
    """A failure the path reports: invalid input, a refusal, or a dependency
    that failed. Build one with ``invalid``, ``rejected`` or ``unavailable``."""

    def __init__(self, kind: str, reason: str = "", issues: tuple = ()):
        self.kind = kind
        self.reason = reason
        self.issues = tuple(issues)
        super().__init__(str(self))

    @classmethod
    def invalid(cls, field: str, message: str) -> "Error":
        """The input is invalid; retrying it unchanged cannot succeed."""
        return cls("validation", issues=(Issue(field, message),))

    @classmethod
    def validation(cls, issues) -> "Error":
        """The input is invalid, for each of these reasons."""
        return cls("validation", issues=tuple(issues))

    @classmethod
    def rejected(cls, reason: str) -> "Error":
        """A business rule refused the transaction (insufficient funds, say)."""
        return cls("rejected", reason)

    @classmethod
    def unavailable(cls, reason: str) -> "Error":
        """A dependency failed; a retry or another path may succeed."""
        return cls("unavailable", reason)

    def __str__(self) -> str:
        if self.kind == "validation":
            return "invalid input:" + "".join(f" {i.field}: {i.message};" for i in self.issues)
        return f"{self.kind}: {self.reason}"

    def to_wit(self):
        """The WIT `tx-error` this error stands for."""
        if self.kind == "validation":
            return types.TxError_Validation([types.ValidationIssue(i.field, i.message) for i in self.issues])
        if self.kind == "rejected":
            return types.TxError_Rejected(self.reason)
        return types.TxError_Unavailable(self.reason)


def host_error(capability: str, error) -> Error:
    """A capability's refusal (an `Err` from the host) as an ``unavailable``
    error naming the capability, as the Rust SDK's conversions do."""
    value = getattr(error, "value", error)
    detail = getattr(value, "value", None)
    name = type(value).__name__.split("_", 1)[-1]
    text = f"{name}: {detail}" if detail is not None else name
    return Error.unavailable(f"{capability}: {text}")
