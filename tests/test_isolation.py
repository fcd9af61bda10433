"""The suite runs under pytest-xdist: each worker's test servers draw from their own ports, and
each test has its own home folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import quiet_ports, xdist_worker


def ports_of_worker(monkeypatch: pytest.MonkeyPatch, worker: int, workers: int) -> set[int]:
    """Return the ports (and gRPC ports P + 10000) worker ``worker`` of ``workers`` picks."""
    monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{worker}")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", str(workers))
    ports = quiet_ports(40, grpc=True)
    return set(ports) | {p + 10_000 for p in ports}


@pytest.mark.parametrize("workers", [2, 3, 7])
def test_two_workers_never_pick_the_same_port(
    monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    chosen = [ports_of_worker(monkeypatch, worker, workers) for worker in range(workers)]
    for worker, ports in enumerate(chosen):
        assert len(ports) == 80
        # Each worker's ports, gRPC ports included, are its own share: no other worker's.
        assert all(p % 10_000 % workers == worker for p in ports)
        assert not any(ports & other for other in chosen[worker + 1 :])


def test_without_xdist_every_port_is_a_candidate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    assert xdist_worker() == (0, 1)
    residues = {p % 2 for p in quiet_ports(60)}
    assert residues == {0, 1}


def test_each_test_has_its_own_empty_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    # ~/.local/state/wattlake holds an S3 lake's catalog, WAL and tokens, and the default CA.
    assert Path.home().is_relative_to(tmp_path_factory.getbasetemp())
    assert list(Path.home().iterdir()) == []
