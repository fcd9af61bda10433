"""One retry policy for every reconnect and restart: exponential backoff with jitter.

The MQTT sources and the web's live view reconnecting to the broker, the ingest restarting its
lake writer or retrying the write-ahead log, and the gap refill asking a meter again all wait
:meth:`RetryPolicy.delay_s` between attempts: ``first_s`` doubling per attempt up to ``max_s``,
of which a random part (``jitter``) is left out, so that many clients that lost the same broker
at the same moment do not all come back at the same moment ("equal jitter").
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

# Jitter: the share of each delay drawn at random (the wait lies in [(1 - jitter) d, d]).
JITTER: Final = 0.5


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter: ``first_s`` [s], times ``multiplier`` per attempt, at
    most ``max_s`` [s]; ``jitter`` is the random share of each delay (0: none)."""

    first_s: float = 0.5
    max_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = JITTER

    def ceiling_s(self, attempt: int) -> float:
        """Return the longest wait before retry ``attempt`` (1, 2, …) [s]."""
        exponent = min(max(attempt, 1) - 1, 64)  # no float overflow after many failures
        return min(self.max_s, self.first_s * self.multiplier**exponent)

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """Return the wait before retry ``attempt`` (1, 2, …) [s], jittered."""
        draw = (rng or random).random()
        return self.ceiling_s(attempt) * (1.0 - self.jitter * draw)


@dataclass(slots=True)
class Backoff:
    """The state of a retried operation under a :class:`RetryPolicy` (not thread-safe)."""

    policy: RetryPolicy = field(default_factory=RetryPolicy)
    failures: int = 0
    delay_s: float = 0.0
    next_at: float = 0.0

    def failed(self) -> float:
        """Record a failure and return the wait before the next attempt [s]."""
        self.failures += 1
        self.delay_s = self.policy.delay_s(self.failures)
        self.next_at = time.monotonic() + self.delay_s
        return self.delay_s

    def due(self) -> bool:
        """Return True when the next attempt may start."""
        return time.monotonic() >= self.next_at

    def reset(self) -> None:
        """Forget earlier failures (the operation succeeded)."""
        self.failures, self.delay_s, self.next_at = 0, 0.0, 0.0


def reconnect_with(client: mqtt.Client, policy: RetryPolicy) -> None:
    """Make paho's automatic reconnects (``loop_start``) wait as ``policy`` says.

    paho doubles its own delay without jitter; here each lost connection or failed attempt
    sets the next wait from the policy (through paho's public ``reconnect_delay_set``), and a
    successful connection starts again from the first delay. Callbacks already set on
    ``client`` keep running (set them before calling this).
    """
    backoff = Backoff(policy)

    def schedule() -> None:
        wait = policy.delay_s(backoff.failures + 1)
        backoff.failures += 1
        delay = max(wait, 0.001)  # paho annotates int but adds the delay to a float time
        client.reconnect_delay_set(min_delay=delay, max_delay=delay)  # type: ignore[arg-type]

    on_connect, on_disconnect, on_fail = (
        client.on_connect,
        client.on_disconnect,
        client.on_connect_fail,
    )

    def connected(*args: Any) -> None:
        rc = args[3] if len(args) > 3 else None
        if not getattr(rc, "is_failure", False):
            backoff.reset()
        if on_connect is not None:
            on_connect(*args)

    def disconnected(*args: Any) -> None:
        schedule()
        if on_disconnect is not None:
            on_disconnect(*args)

    def failed(*args: Any) -> None:
        schedule()
        if on_fail is not None:
            on_fail(*args)

    schedule()
    backoff.failures = 0
    client.on_connect = connected
    client.on_disconnect = disconnected
    client.on_connect_fail = failed
