"""The ``wattlake`` command line: ``main()`` runs it; one module per command group."""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: a user's mistake is one sentence and exit code 2, never a traceback."""
    from wattlake.cli.errors import (
        INTERRUPTED,
        exit_code_for,
        is_closed_pipe,
        log,
        message_for,
        quiet_closed_pipe,
    )
    from wattlake.cli.output import configure_logging, say

    configure_logging()
    try:
        from wattlake.cli.app import app

        app(args=argv, prog_name="wattlake", standalone_mode=True)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        say("Interrupted.")
        sys.exit(INTERRUPTED)
    except BaseException as exc:
        if is_closed_pipe(exc):
            quiet_closed_pipe()
            sys.exit(0)
        if os.environ.get("WATTLAKE_DEBUG"):
            raise
        if not _is_ours(exc):
            log.debug("unexpected error", exc_info=exc)
        say(f"Error: {message_for(exc)}")
        sys.exit(exit_code_for(exc))


def _is_ours(exc: BaseException) -> bool:
    from wattlake.errors import WattlakeError

    return isinstance(exc, WattlakeError)
