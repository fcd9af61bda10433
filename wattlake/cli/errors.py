"""The one place that turns errors into a sentence on stderr and an exit code.

Exit codes: 2 for the user's input (a bad argument, option, setting or file), 1 for a failure of
the system (broker down, lake unwritable, a bug), 130 for an interrupt, 0 when the reader of our
output went away (``… | head``).
"""

from __future__ import annotations

import errno
import logging
import os
import sys

from wattlake.errors import BadInputError, UsageError, WattlakeError

USER_ERROR = 2
SYSTEM_ERROR = 1
INTERRUPTED = 130

log = logging.getLogger("wattlake")


def exit_code_for(exc: BaseException) -> int:
    """Return the exit code for ``exc``: 2 when the user can fix their input, else 1."""
    if isinstance(exc, UsageError | BadInputError):
        return USER_ERROR
    return SYSTEM_ERROR


def message_for(exc: BaseException) -> str:
    """Return one line that says what went wrong (and, for our own errors, what to do)."""
    if isinstance(exc, WattlakeError):
        text = str(exc)
    elif isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        text = f"{exc.strerror}{where}."
    else:
        text = f"Unexpected error ({type(exc).__name__}: {exc}); please report it."
    return " ".join(text.split()) if "\n" not in text.strip() else text.strip().splitlines()[0]


def is_closed_pipe(exc: BaseException) -> bool:
    """Return True when ``exc`` means the reader of stdout went away."""
    return isinstance(exc, BrokenPipeError) or (
        isinstance(exc, OSError) and exc.errno == errno.EPIPE
    )


def stdout_reader_gone() -> bool:
    """Return True when stdout is a pipe whose reader has closed it (``… | head``)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def quiet_closed_pipe() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
