"""The amqtt and paho-mqtt compatibility modules accept the installed release and refuse
another one with one sentence naming the module and both versions."""

from __future__ import annotations

from importlib.metadata import version
from types import ModuleType

import pytest

from wattlake import compat
from wattlake.errors import LibraryVersionError, WattlakeError
from wattlake.gateway import amqtt_compat, paho_compat


@pytest.mark.parametrize(
    ("module", "distribution"), [(amqtt_compat, "amqtt"), (paho_compat, "paho-mqtt")]
)
def test_the_check_accepts_the_installed_release(module: ModuleType, distribution: str) -> None:
    assert module.check_version() == version(distribution)


@pytest.mark.parametrize(
    ("module", "distribution", "other"),
    [(amqtt_compat, "amqtt", "0.13.0"), (paho_compat, "paho-mqtt", "3.0.0")],
)
def test_the_check_refuses_another_release_in_one_sentence(
    module: ModuleType, distribution: str, other: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compat, "version", lambda name: other if name == distribution else "")
    with pytest.raises(LibraryVersionError) as caught:
        module.check_version()
    text = str(caught.value)
    assert isinstance(caught.value, WattlakeError)
    assert module.__name__ in text and f"{distribution} {other} is installed" in text
    assert text.count(". ") == 0 and "\n" not in text
