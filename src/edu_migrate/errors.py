"""The one domain error of edu-migrate, printed as one line at the CLI boundary."""

from __future__ import annotations


class MigrationError(Exception):
    """Something the user can fix: the message says what is wrong, the hint what to do."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message


class ConnectionFailed(MigrationError):
    exit_code = 3


class PreconditionFailed(MigrationError):
    exit_code = 4


class ValidationFailed(MigrationError):
    exit_code = 1


class MappingError(PreconditionFailed):
    """The legacy mapping does not fit the source: a missing table or column, an expression that
    fails, a value that does not cast, a TODO left in it."""


class StillWritable(PreconditionFailed):
    """A frozen database can still be written (a prepared transaction, a session in a write
    transaction, a role's own setting), or was written after the window's last delta. The hint
    says what to do; the window that raised it adds that it is to be run again then."""
