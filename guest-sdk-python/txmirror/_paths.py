"""Paths as functions, and the export componentize-py looks for."""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import txmirror_transaction_types as types

from . import validation
from .errors import Error, Issue

# The declared paths, in declaration order: the first is the default.
_PATHS: dict = {}


def path(name: str, input=dict):
    """Declares a function as the path ``name``: it takes the decoded JSON
    input and returns something ``json.dumps`` can encode. An input that is
    not of type ``input`` (a JSON object by default; ``None`` accepts any
    document) is refused as invalid before the function runs."""

    if not name or name in _PATHS:
        raise ValueError(f"path name {name!r} is empty or declared twice")

    def declare(function):
        _PATHS[name] = (function, input)
        return function

    return declare


class WitWorld(wit_world.WitWorld):
    """The exports of the ``txmirror:transaction`` world."""

    def paths(self):
        return list(_PATHS)

    def run(self, path: str, input: bytes) -> bytes:
        declared = _PATHS.get(path)
        if declared is None:
            raise Err(types.TxError_UnknownPath(path))
        function, expected = declared
        try:
            decoded = json.loads(input)
        except ValueError as error:
            raise Err(_invalid_input(f"not a valid input document: {error}"))
        if expected is not None and not isinstance(decoded, expected):
            raise Err(_invalid_input(f"must be a JSON {'object' if expected is dict else expected.__name__}"))
        try:
            output = function(decoded)
        except Error as error:
            raise Err(error.to_wit())
        try:
            return json.dumps(output, separators=(",", ":")).encode()
        except (TypeError, ValueError) as error:
            raise Err(Error.rejected(f"output could not be encoded: {error}").to_wit())


def _invalid_input(message: str):
    issue = Issue("input", message)
    validation.report(issue)
    return Error.validation([issue]).to_wit()
