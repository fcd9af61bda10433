"""The pyiceberg compatibility module accepts the installed release and refuses another one
with one sentence naming the module and both versions."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from wattlake import compat
from wattlake.errors import LibraryVersionError
from wattlake.lake import pyiceberg_compat


def test_the_check_accepts_the_installed_release() -> None:
    assert pyiceberg_compat.check_version() == version("pyiceberg")


@pytest.mark.parametrize("other", ["0.13.0", "0.11.1", "1.0.0"])
def test_the_check_refuses_another_release_in_one_sentence(
    other: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compat, "version", lambda name: other)
    with pytest.raises(LibraryVersionError) as caught:
        pyiceberg_compat.check_version()
    text = str(caught.value)
    assert "wattlake.lake.pyiceberg_compat" in text
    assert f"pyiceberg {other} is installed" in text and "pyiceberg 0.12.x" in text
    assert "\n" not in text
