"""One exception base for wattlake, with subclasses that say whether retrying can help."""

from __future__ import annotations


class WattlakeError(Exception):
    """Base of every error wattlake raises on purpose.

    Subclasses say whose mistake it was (the user's input, or the system) and ``retryable`` says
    whether trying again later (without changing anything) can succeed; how an error is shown
    (exit code, HTTP status) is decided by the CLI and the web server, not here.
    """

    retryable = False


class UsageError(WattlakeError):
    """The user asked for something malformed: a bad argument, option or config value."""


class BadInputError(WattlakeError):
    """Input data (a file, a payload) cannot be understood."""


class NoDataError(BadInputError):
    """The lake holds nothing for what was asked (a device, a time range, a table).

    Commands that print data catch it: an empty result is an answer, not a failure.
    """


class ConfigError(UsageError):
    """A setting has a value that cannot be used."""


class StorageError(WattlakeError):
    """The lake or a local buffer could not be read or written."""


class TransientStorageError(StorageError):
    """The lake is unreachable for now (network, disk full); retrying later can help."""

    retryable = True


class BrokerError(WattlakeError):
    """The MQTT broker could not be started or reached."""

    retryable = True


class LibraryVersionError(WattlakeError):
    """An installed library is not the release whose internals wattlake's compatibility
    module for it was written for."""


class DecodeError(BadInputError):
    """A device payload cannot be decoded into readings.

    ``reason`` is a short machine-readable code (``invalid-json``, ``bad-type`` …) used as the
    dead-letter folder name.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
