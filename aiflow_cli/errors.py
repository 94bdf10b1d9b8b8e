"""One error hierarchy for the whole tool.

Every error a user can cause by what they typed or the files they passed is an
:class:`AiflowError`. The CLI maps it to one line on stderr (message plus hint) and
exit code 2 (3 for a pair that does not reproduce its reference, 4 for a remote peer that failed or
misbehaved); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "AiflowError",
    "ConfigError",
    "ModelSourceError",
    "InputError",
    "OutputError",
    "VerificationError",
    "PeerError",
    "SessionLostError",
]


class AiflowError(Exception):
    """Bad input the user can fix. ``hint`` names the next action."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """Message and hint on one line: control characters that came from a file are escaped."""
        text = f"{self.message} ({self.hint})" if self.hint else self.message
        return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)

    def __str__(self) -> str:
        return self.one_line()


class ConfigError(AiflowError):
    """A YAML/JSON file is missing, malformed, or has a wrong or missing field."""


class ModelSourceError(AiflowError):
    """A ``--model`` value names no loadable model."""


class InputError(AiflowError):
    """An option value is out of range or inconsistent (``--seq-len 0``, unknown cut, ...)."""


class OutputError(AiflowError):
    """An output path cannot be written."""


class VerificationError(AiflowError):
    """An exported pair does not reproduce its reference: not a usage error, so its own exit code."""

    exit_code = 3


class PeerError(AiflowError):
    """A remote peer (a server, a link) failed or answered what it should not: the user's input was
    fine, so not exit 2. ``status`` is the HTTP status when there was one."""

    exit_code = 4

    def __init__(self, message: str, hint: str | None = None, status: int | None = None) -> None:
        super().__init__(message, hint)
        self.status = status


class SessionLostError(PeerError):
    """The server no longer holds the session (evicted or restarted: a 409): resend the prefix."""
