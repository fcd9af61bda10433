"""``wattlake import``: history into the lake through the same validation as live data."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from wattlake.cli.output import ConfigOption, DataDirOption, load_settings, say
from wattlake.errors import BadInputError, UsageError
from wattlake.gateway.files import FileFormat


def register(app: typer.Typer) -> None:
    """Add ``import`` to ``app``."""
    app.command("import")(import_file)


def import_file(
    path: Annotated[
        Path, typer.Argument(help="CSV, JSONL or Parquet file, or a Shelly CSV export.")
    ],
    file_format: Annotated[
        FileFormat | None,
        typer.Option("--format", help="File format (default: from the file name)."),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="Device id for every row (needed for shelly-csv).")
    ] = None,
    channel: Annotated[int, typer.Option(help="Channel of a shelly-csv export.", min=0)] = 0,
    period: Annotated[
        float, typer.Option(help="Seconds per row of a shelly-csv export.", min=1)
    ] = 60.0,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Import history into the lake through the same validation as live data."""
    from wattlake.gateway.files import FileRows, guess_format
    from wattlake.lake.storage import Lake
    from wattlake.stream.delivery import stream_from_settings

    if not path.is_file():
        raise UsageError(f"{path} is not a file.")
    chosen = file_format or guess_format(path)
    settings = load_settings(data_dir, config, **{"stream.name": "import"})
    lake = Lake.from_settings(settings)
    stream = stream_from_settings(settings, lake)
    rows = FileRows(path, chosen, device_id=device, channel=channel, period_s=period)
    batch = []
    for message in rows.messages(received_at_ms=time.time_ns() // 1_000_000):
        batch.append(message)
        if len(batch) >= IMPORT_BATCH:
            stream.accept(batch)
            batch = []
            if stream.flush_wanted():  # the buffer's byte and row limits bound memory
                stream.flush()
    stream.accept(batch)
    stream.flush()
    stats = stream.stats
    say(
        f"imported {stats.readings} reading(s) from {stats.messages} row(s) of {path.name} "
        f"into {lake.url}"
    )
    if stats.dead_letters:
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(stats.dead_letters_by_reason.items()))
        say(
            f"{stats.dead_letters} row(s) could not be used ({reasons}); they are kept in "
            f'errors/ under the lake: wattlake query "SELECT * FROM dead_letters"'
        )
        if stats.readings == 0:
            raise BadInputError(f"No row of {path.name} could be imported.")


IMPORT_BATCH = 10_000
