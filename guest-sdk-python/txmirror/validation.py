"""Reporting invalid input as soon as it is found.

Each issue is recorded in the trace at once, so the runtime's predictor
sees a validation failure before the path returns::

    v = validation.Validator()
    v.check(input["amount"] > 0, "amount", "must be positive")
    v.finish()  # raises Error if any check failed
"""

from wit_world.imports import txmirror_transaction_types as types
from wit_world.imports import validation as host

from .errors import Error, Issue


def report(issue: Issue) -> None:
    """Records one issue in the trace now."""
    host.report(types.ValidationIssue(issue.field, issue.message))


class Validator:
    """Collects issues, reporting each one as it is found."""

    def __init__(self):
        self.issues = []

    def check(self, ok: bool, field: str, message: str) -> "Validator":
        """Adds an issue unless ``ok``."""
        if not ok:
            self.push(Issue(field, message))
        return self

    def push(self, issue: Issue) -> "Validator":
        report(issue)
        self.issues.append(issue)
        return self

    def is_ok(self) -> bool:
        return not self.issues

    def finish(self) -> None:
        """Raises ``Error`` with every issue found, if any."""
        if self.issues:
            issues, self.issues = self.issues, []
            raise Error.validation(issues)
