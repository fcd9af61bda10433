"""The fault-injection seam: every crash step the code can stop at is listed in
wattlake.faults, and only wattlake.faults reads the crash variable."""

from __future__ import annotations

import re
from pathlib import Path

import wattlake
from wattlake import faults

SOURCES = sorted(Path(wattlake.__file__).parent.rglob("*.py"))


def test_every_crash_step_is_listed_in_the_seam() -> None:
    used = {
        step
        for path in SOURCES
        for step in re.findall(r'faults\.(?:crash_point|armed)\("([a-z-]+)"\)', path.read_text())
    }
    assert used  # the pattern still finds them
    assert {step for step in used if f"``{step}``" not in (faults.__doc__ or "")} == set()


def test_only_the_seam_reads_the_crash_variable() -> None:
    readers = [p.name for p in SOURCES if faults.CRASH_ENV in p.read_text()]
    assert readers == ["faults.py"]
