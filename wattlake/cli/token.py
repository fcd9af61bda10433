"""``wattlake token create|list|revoke``: scoped API tokens, stored only as hashes."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Annotated

import typer

from wattlake.cli.output import (
    ConfigOption,
    DataDirOption,
    FormatOption,
    OutputFormat,
    emit_rows,
    load_settings,
    say,
)


class Scope(enum.StrEnum):
    """What a token may do."""

    read = "read"
    ingest = "ingest"
    admin = "admin"


def register(app: typer.Typer) -> None:
    """Add ``token`` to ``app``."""
    tokens = typer.Typer(
        name="token",
        help="API tokens for the dashboard, the API, /metrics and HTTP publishing.",
        no_args_is_help=True,
    )
    tokens.command("create")(create)
    tokens.command("list")(list_tokens)
    tokens.command("revoke")(revoke)
    app.add_typer(tokens)


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def create(
    scope: Annotated[Scope, typer.Option("--scope", help="read, ingest or admin (all three).")],
    expires: Annotated[
        str | None,
        typer.Option("--expires", help="A duration (30m, 12h, 90d) or an ISO 8601 time."),
    ] = None,
    name: Annotated[str, typer.Option("--name", help="A note: who or what uses it.")] = "",
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Create a token and print it once (only its hash is kept)."""
    from wattlake.gateway.tokens import TokenStore, parse_expiry_s

    settings = load_settings(data_dir, config)
    expires_at = parse_expiry_s(expires) if expires else None
    store = TokenStore.from_settings(settings)
    token, record = store.create(scope.value, expires_at_s=expires_at, name=name)
    print(token)
    say(
        f"Token {record.id} ({record.scope}, expires {_when(record.expires_at_s)}) created; it is "
        f"shown only now. Send it as 'Authorization: Bearer <token>'. Stored as a hash in "
        f"{store.path}."
    )


def list_tokens(
    fmt: FormatOption = OutputFormat.table,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """List tokens: id, scope, name, created, expires (never the tokens themselves)."""
    from wattlake.gateway.tokens import TokenStore

    settings = load_settings(data_dir, config)
    rows = [
        {
            "id": r.id,
            "scope": r.scope,
            "name": r.name,
            "created": _when(r.created_at_s),
            "expires": _when(r.expires_at_s),
            "expired": r.expired(),
        }
        for r in TokenStore.from_settings(settings).records()
    ]
    emit_rows(
        rows,
        fmt,
        columns=["id", "scope", "name", "created", "expires", "expired"],
        title="API tokens",
    )


def revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id, from `wattlake token list`.")],
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Revoke a token: it (and every session it signed in) stops working at once."""
    from wattlake.gateway.tokens import TokenStore

    settings = load_settings(data_dir, config)
    record = TokenStore.from_settings(settings).revoke(token_id)
    say(f"Token {record.id} ({record.scope}) revoked.")
