"""Ports: a port the user named that is taken is an error naming it; a taken default moves
with a note that says where; a recent run's TIME-WAIT connections do not make a port taken."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from wattlake.config import Settings
from wattlake.gateway.broker import port_is_free
from wattlake.stack import PortChoice, PortTakenError, Stack, choose_port


def test_a_port_in_time_wait_is_free() -> None:
    """A server that closed its side of a connection first leaves it in TIME-WAIT for a
    minute; the next run binds the port (SO_REUSEADDR), so the probe must not call it taken."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        served, _ = listener.accept()
        served.close()  # the server closes first: its end (on ``port``) goes to TIME-WAIT
        assert client.recv(1) == b""
        client.close()
    assert port_is_free("127.0.0.1", port)


def test_a_listening_port_is_taken() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert not port_is_free("127.0.0.1", listener.getsockname()[1])


@pytest.fixture
def busy_port() -> int:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    yield listener.getsockname()[1]
    listener.close()


def test_a_taken_port_the_user_named_is_an_error_naming_it(busy_port: int) -> None:
    with pytest.raises(PortTakenError) as raised:
        choose_port(
            "127.0.0.1", busy_port, what="the dashboard", setting="web.port",
            origin="WATTLAKE_WEB__PORT",
        )  # fmt: skip
    assert str(raised.value) == (
        f"Port {busy_port} on 127.0.0.1 for the dashboard (web.port, set by the environment, "
        "WATTLAKE_WEB__PORT) is taken; stop what listens there or choose another port."
    )


def test_a_taken_default_port_moves_with_a_note(busy_port: int) -> None:
    choice = choose_port(
        "127.0.0.1", busy_port, what="the dashboard", setting="web.port", origin="default"
    )
    assert choice == PortChoice(0, busy_port)
    assert choice.note("the dashboard", "web.port", 40001) == (
        f"Port {busy_port} (the default of web.port) is taken; the dashboard listens on port "
        "40001 instead."
    )


def test_the_stack_says_where_its_dashboard_went_when_the_default_was_taken(
    busy_port: int, tmp_path: Path
) -> None:
    loaded = Settings.load(overrides={"data_dir": str(tmp_path / "lake")}, environ={})
    values = {name: loaded[name] for name in loaded}
    values["web.port"] = busy_port  # as if it were the default, and taken
    origins = {**loaded.origins, "web.port": "default"}
    stack = Stack(
        Settings(values, origins, tables=loaded.tables),
        simulate=False,
        web=True,
        broker_port=0,
        job_periods_s={},
    )
    stack.start()
    try:
        assert stack.web is not None
        assert stack.web.port != busy_port
        assert stack.notes == [
            f"Port {busy_port} (the default of web.port) is taken; the dashboard listens on "
            f"port {stack.web.port} instead."
        ]
    finally:
        stack.stop()


def test_the_stack_refuses_a_taken_broker_port_it_was_given(busy_port: int, tmp_path: Path) -> None:
    settings = Settings.load(overrides={"data_dir": str(tmp_path / "lake")}, environ={})
    stack = Stack(settings, simulate=True, broker_port=busy_port, job_periods_s={})
    with pytest.raises(PortTakenError, match=f"Port {busy_port} on 127.0.0.1 for the MQTT broker"):
        stack.start()
    assert not (tmp_path / "lake").exists()  # refused before anything started
