"""The table of device formats: one :class:`~wattlake.devices.descriptor.DeviceFormat` each.

Adding a format is one module that defines its ``FORMAT`` (see :mod:`wattlake.devices.descriptor`)
and one line here; the router, the identity rule, the broker ACLs (embedded and Mosquitto), the
device registry and provisioning read this table and name no format themselves.
"""

from __future__ import annotations

from typing import Final

from wattlake.devices import csv_lines, generic, shelly_gen1, shelly_gen2
from wattlake.devices.descriptor import DeviceFormat, Route

# Name -> format. The order is the order of lists shown to people (the default first).
FORMATS: Final[dict[str, DeviceFormat]] = {
    fmt.name: fmt
    for fmt in (shelly_gen2.FORMAT, shelly_gen1.FORMAT, generic.FORMAT, csv_lines.FORMAT)
}
DEFAULT_FORMAT: Final = shelly_gen2.FORMAT.name


def routes() -> tuple[tuple[Route, str], ...]:
    """Return every format's routes with its name, in the order to try them.

    Routes whose first level is a literal (``shellies/…``, ``wattlake/…``) come before those
    whose first level is any device's id (``+/…``), so a topic under a root is never taken for
    a device named like the root; otherwise table order.
    """
    pairs = [(route, fmt.name) for fmt in FORMATS.values() for route in fmt.routes]
    return tuple(sorted(pairs, key=lambda pair: pair[0].levels[0] == "+"))


def get(name: str) -> DeviceFormat | None:
    """Return the format called ``name``, None if there is none."""
    return FORMATS.get(name)
