"""Ctrl-C twice is two stop requests, even when both arrive while the main thread is busy."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from wattlake.stack import StopRequests


def test_two_signals_during_one_long_call_are_both_counted() -> None:
    earlier = signal.getsignal(signal.SIGINT)  # SIG_IGN under nohup, say
    requests = StopRequests().install()
    try:
        pid = os.getpid()
        killer = subprocess.Popen(
            ["sh", "-c", f"sleep 0.3; kill -INT {pid}; sleep 0.05; kill -INT {pid}"]
        )
        # One C call that holds the GIL and checks no signal, until both signals were sent:
        # Python's own handler can run only after it, once for both.
        while killer.poll() is None:
            sum(range(20_000_000))
        assert requests.abort.wait(5), "the second signal was lost"
        assert requests.stop.is_set()
    finally:
        requests.uninstall()
    assert signal.getsignal(signal.SIGINT) == earlier
    assert signal.set_wakeup_fd(-1) == -1  # the wakeup fd was given back


def test_one_signal_asks_to_stop_and_not_to_abort() -> None:
    requests = StopRequests().install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert requests.stop.wait(5)
        time.sleep(0.1)
        assert not requests.abort.is_set()
    finally:
        requests.uninstall()
