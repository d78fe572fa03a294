"""The small error hierarchy every layer shares.

Errors cross Ray process boundaries pickled, so every constructor argument is
passed to ``super().__init__`` (DESIGN.md, house style). The API maps each class
to one HTTP status; nothing else needs to know about HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One problem with one input field: where it is and what is wrong."""

    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class ValuxError(Exception):
    """Base class of every error valux raises on purpose."""

    code = "VALUX_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(ValuxError):
    """The caller sent something invalid; ``errors`` says which field and why."""

    code = "INVALID_REQUEST"

    def __init__(self, message: str, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(message)
        self.errors = list(errors)

    def __reduce__(self) -> tuple[type[InvalidRequest], tuple[str, list[FieldError]]]:
        return (type(self), (self.message, self.errors))


class NotFound(ValuxError):
    """The named agent, position, signal or wallet does not exist."""

    code = "NOT_FOUND"


class Conflict(ValuxError):
    """The request clashes with current state (e.g. closing a closed position)."""

    code = "CONFLICT"


class Unavailable(ValuxError):
    """A dependency (database, an actor, a feed) cannot serve the request now."""

    code = "UNAVAILABLE"


class ConfigurationError(ValuxError):
    """Start-up settings are invalid; the message lists every problem and its source."""

    code = "CONFIGURATION_ERROR"


class PortInUseError(ValuxError):
    """A port valux needs is taken; the message names the port, the user and the setting."""

    code = "PORT_IN_USE"
