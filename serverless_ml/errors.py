"""Errors a user can act on.

Every expected failure (bad input, missing data, unreachable service) raises
:class:`SmlError` with a one-line message naming the file, column, row or setting at
fault. The CLI prints the message and exits with :attr:`SmlError.exit_code`; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations


class SmlError(Exception):
    """An expected failure with a one-line, actionable message."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        # Keep the message on one line whatever the caller passed.
        super().__init__(" ".join(str(message).split()))


class DataValidationError(SmlError):
    """Input data does not match the dataset spec."""


class SpecError(SmlError):
    """A dataset spec file is malformed or names an unknown dataset."""


class SchemaMismatchError(SmlError):
    """A frame does not match a feature group's schema."""


class NotFoundError(SmlError):
    """A feature group, feature view, model or source does not exist."""
