"""The check each compatibility module makes at import: wattlake patches or reads the internals
of a few libraries (amqtt, paho-mqtt, pyiceberg), each in one module of its own
(:mod:`wattlake.gateway.amqtt_compat`, :mod:`wattlake.gateway.paho_compat`,
:mod:`wattlake.lake.pyiceberg_compat`), written for one release series; a different release
fails at import with one sentence instead of misbehaving later. See docs/compat.md.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from wattlake.errors import LibraryVersionError


def require_series(distribution: str, series: str, module: str) -> str:
    """Return the installed version of ``distribution`` when it starts with ``series``
    (``"0.12."``).

    Raises:
        LibraryVersionError: another release (or none) is installed.
    """
    try:
        installed = version(distribution)
    except PackageNotFoundError:
        installed = "none"
    if not installed.startswith(series):
        raise LibraryVersionError(
            f"{module} was written for {distribution} {series}x, but {distribution} {installed} "
            f"is installed; install wattlake's pinned dependencies again "
            f"(pip install '{distribution}=={series}*')."
        )
    return installed
