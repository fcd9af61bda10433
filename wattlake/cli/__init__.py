"""The ``wattlake`` command line: ``main()`` runs it; one module per command group."""

from __future__ import annotations

import os
import sys

PROCESS_DEFAULTS: dict[str, str] = {
    # numpy advises the kernel to back arrays of 4 MB and more with transparent huge pages.
    # A command allocates its big arrays once (a year of readings is about 2 GB of series), and
    # a huge page's first touch can cost several times a small page's: the kernel may compact
    # memory for it, and a virtual machine whose free memory goes back to its host (free page
    # reporting) faults each one in again. Measured in docs/lake.md; NUMPY_MADVISE_HUGEPAGE=1
    # turns the advice back on.
    "NUMPY_MADVISE_HUGEPAGE": "0",
    # Arrow's allocator (mimalloc) hands memory it has not used for 10 ms back to the kernel;
    # a long read frees and takes again a few hundred MB per group of files, so each group
    # faulted its pages in afresh. After a second unused it still goes back.
    "MIMALLOC_PURGE_DELAY": "1000",
}
"""Environment variables a ``wattlake`` process sets for itself before it imports numpy or
pyarrow (which read them once), unless already set."""


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: a user's mistake is one sentence and exit code 2, never a traceback."""
    for name, value in PROCESS_DEFAULTS.items():
        os.environ.setdefault(name, value)
    from wattlake.cli.errors import (
        INTERRUPTED,
        exit_code_for,
        is_closed_pipe,
        log,
        message_for,
        quiet_closed_pipe,
        stdout_reader_gone,
    )
    from wattlake.cli.output import (
        configure_logging,
        discard_held_logs,
        release_held_logs,
        say,
    )

    configure_logging()
    try:
        from wattlake.cli.app import app

        code = app(args=argv, prog_name="wattlake", standalone_mode=False)
        if code == INTERRUPTED:
            raise KeyboardInterrupt
        if isinstance(code, int) and code:
            release_held_logs()
            _flush_stdout()
            sys.exit(code)
    except KeyboardInterrupt:
        discard_held_logs()
        say("Interrupted.")
        sys.exit(INTERRUPTED)
    except BaseException as exc:
        if isinstance(exc, SystemExit):
            if exc.code == 1 and stdout_reader_gone():  # click's own exit on EPIPE
                quiet_closed_pipe()
                sys.exit(0)
            release_held_logs()
            raise
        if is_closed_pipe(exc):
            quiet_closed_pipe()
            sys.exit(0)
        if os.environ.get("WATTLAKE_DEBUG"):
            raise
        discard_held_logs()
        if _is_abort(exc):  # click turns Ctrl-C into Abort
            say("Interrupted.")
            sys.exit(INTERRUPTED)
        usage = _click_usage_error(exc)
        if usage is not None:
            say(usage)
            sys.exit(exit_code_for_usage())
        if not _is_ours(exc):
            log.debug("unexpected error", exc_info=exc)
        say(f"Error: {message_for(exc)}")
        sys.exit(exit_code_for(exc))
    release_held_logs()
    _flush_stdout()


def _click_usage_error(exc: BaseException) -> str | None:
    """Return click's own one-line message for a bad command line, else None."""
    from click import exceptions as click_exceptions

    if isinstance(exc, click_exceptions.NoArgsIsHelpError):
        return exc.format_message().rstrip("\n")
    if isinstance(exc, click_exceptions.ClickException):
        hint = ""
        ctx = getattr(exc, "ctx", None)
        if ctx is not None and isinstance(exc, click_exceptions.UsageError):
            hint = f" (see: wattlake {' '.join(ctx.command_path.split()[1:])} --help)".replace(
                "wattlake  --help", "wattlake --help"
            )
        text = " ".join(exc.format_message().split()).replace("Value error, ", "")
        return f"Error: {text}{hint}"
    return None


def _is_abort(exc: BaseException) -> bool:
    import typer

    return isinstance(exc, typer.Abort)


def exit_code_for_usage() -> int:
    """Return the exit code of a bad command line (the user's input)."""
    from wattlake.cli.errors import USER_ERROR

    return USER_ERROR


def _flush_stdout() -> None:
    """Flush stdout now, so that a reader that went away ends the command quietly."""
    from wattlake.cli.errors import is_closed_pipe, quiet_closed_pipe

    try:
        sys.stdout.flush()
    except BaseException as exc:
        if not is_closed_pipe(exc):
            raise
        quiet_closed_pipe()


def _is_ours(exc: BaseException) -> bool:
    from wattlake.errors import WattlakeError

    return isinstance(exc, WattlakeError)
