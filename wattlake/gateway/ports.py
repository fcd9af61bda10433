"""TCP port probes for the servers wattlake starts (the embedded broker, the web server).

Kept apart from :mod:`wattlake.gateway.broker` so that choosing a port does not import amqtt.
"""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    """Return True when nothing listens on ``host:port``.

    The probe binds with ``SO_REUSEADDR``, as the servers themselves do: connections of a
    recent run that linger in TIME-WAIT do not make the port taken (a listener still does).
    """
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True
