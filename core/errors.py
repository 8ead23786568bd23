"""User-facing errors.

Anything a user can cause (a bad name, a missing folder, a malformed file) raises :class:`BenchError`. The CLI
prints its message on one line and exits with status 2; nothing else in the project prints tracebacks for user
mistakes.
"""

from __future__ import annotations


class BenchError(Exception):
    """An error caused by input the user can fix. The message says what is wrong and how to fix it."""


class UnknownNameError(BenchError, KeyError):
    """A name that is not in a registry."""

    def __init__(self, kind: str, name: str, valid: list[str]):
        self.kind, self.name, self.valid = kind, name, valid
        super().__init__(f"unknown {kind} '{name}'; valid {kind}s: {', '.join(valid) or '(none registered)'}")

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0]


class DatasetMissingError(BenchError):
    """A dataset folder that does not exist or is incomplete."""
