"""devhost's error hierarchy: each error knows the HTTP status it maps to and reads as a sentence."""
from __future__ import annotations


class DevhostError(Exception):
    """Root of everything devhost reports to a person or an HTTP client."""

    status = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(DevhostError):
    status = 400


class NotFound(DevhostError):
    status = 404


class Gone(DevhostError):
    """The instance exists but is in a state that refuses the operation (extension: 410)."""

    status = 410


class Conflict(DevhostError):
    status = 409


class Unauthorized(DevhostError):
    status = 401


class InvalidOperation(DevhostError):
    """The extension's client throws InvalidOperationException (suspend a suspended instance,
    resume a running one) and its webhook answers 500 with that exception's text."""

    status = 500


class AppLoadError(DevhostError):
    """The Function app could not be imported or indexed."""


class DatabaseError(DevhostError):
    """The task hub database is unreadable, corrupt or from a newer devhost."""


class ConfigError(DevhostError):
    """host.json or local.settings.json is malformed."""


class ListenError(DevhostError):
    """The HTTP port is taken or the address is not ours."""
