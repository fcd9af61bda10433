"""One exception base for wattlake, with subclasses that say whether retrying can help."""

from __future__ import annotations


class WattlakeError(Exception):
    """Base of every error wattlake raises on purpose.

    ``exit_code`` is what the CLI exits with; ``retryable`` says whether trying again later
    (without changing anything) can succeed.
    """

    exit_code = 1
    retryable = False


class UsageError(WattlakeError):
    """The user asked for something malformed: a bad argument, option or config value."""

    exit_code = 2


class BadInputError(WattlakeError):
    """Input data (a file, a payload) cannot be understood."""

    exit_code = 2


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


class DecodeError(BadInputError):
    """A device payload cannot be decoded into readings.

    ``reason`` is a short machine-readable code (``invalid-json``, ``bad-type`` …) used as the
    dead-letter folder name.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
