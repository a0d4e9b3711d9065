"""The ``outbox`` command: thin glue between click and the :class:`~outbox.Outbox` facade.

Errors from the library become one line on stderr and an exit code from :data:`EXIT_CODES`.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click

from . import errors
from .config import Config, load_config
from .models import Entry, Event, State
from .outbox import Outbox

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_DATAERR = 65
EXIT_TEMPFAIL = 75
EXIT_NOPERM = 77
EXIT_CONFIG = 78

#: Most specific first: the first matching class decides the exit code.
EXIT_CODES: tuple[tuple[type[errors.OutboxError], int], ...] = (
    (errors.ConfigError, EXIT_CONFIG),
    (errors.NotAJournal, EXIT_CONFIG),
    (errors.JournalTooNew, EXIT_CONFIG),
    (errors.AuthError, EXIT_NOPERM),
    (errors.EntryBusy, EXIT_TEMPFAIL),
    (errors.JournalBusy, EXIT_TEMPFAIL),
    (errors.JournalFull, EXIT_TEMPFAIL),
    (errors.TransientError, EXIT_TEMPFAIL),
    (errors.InvalidArgument, EXIT_DATAERR),
    (errors.EntryNotFound, EXIT_DATAERR),
    (errors.IllegalTransition, EXIT_DATAERR),
    (errors.PermanentError, EXIT_DATAERR),
)


def exit_code_for(exc: errors.OutboxError) -> int:
    for kind, code in EXIT_CODES:
        if isinstance(exc, kind):
            return code
    return EXIT_UNEXPECTED


class _Group(click.Group):
    """Turns library errors into a message and an exit code instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except errors.OutboxError as exc:
            click.echo(f"outbox: {exc}", err=True)
            ctx.exit(exit_code_for(exc))


class _State:
    """What the group options resolved to; opens the journal on first use."""

    def __init__(self, flags: dict[str, Any]) -> None:
        self.flags = flags
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(**self.flags)
        return self._config

    @contextmanager
    def outbox(self) -> Iterator[Outbox]:
        config = self.config
        with Outbox(
            config.db,
            api_key=config.api_key,
            base_url=config.base_url,
            downloads=config.downloads,
        ) as ob:
            yield ob


pass_state = click.make_pass_decorator(_State)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", metavar="PATH", help="Journal file. [env: OUTBOX_DB]")
@click.option("--downloads", metavar="DIR", help="Where PDFs go. [env: OUTBOX_DOWNLOADS]")
@click.option("--base-url", metavar="URL", help="Craftkit API. [env: CRAFTKIT_BASE_URL]")
@click.option("--config", "config_file", metavar="FILE", help="Config file. [env: OUTBOX_CONFIG]")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="outbox")
@click.pass_context
def cli(
    ctx: click.Context,
    db: str | None,
    downloads: str | None,
    base_url: str | None,
    config_file: str | None,
    verbose: int,
) -> None:
    """Offline-first render queue for the Craftkit PDF API.

    The API key is read from the CRAFTKIT_API_KEY environment variable only.
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = _State(
        {"db": db, "downloads": downloads, "base_url": base_url, "config_file": config_file}
    )


json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


@cli.command()
@click.argument("template")
@click.option(
    "--data",
    "data_arg",
    required=True,
    metavar="JSON|@FILE|-",
    help="The template data: JSON text, @FILE to read a file, or - for stdin.",
)
@click.option("--key", help="Idempotency key (1-200 characters); derive it from the event.")
@click.option("--filename", help="Name of the PDF file (a plain name ending in .pdf).")
@click.option("--version", "version", type=int, help="Pin a published template version.")
@json_option
@pass_state
def enqueue(
    state: _State,
    template: str,
    data_arg: str,
    key: str | None,
    filename: str | None,
    version: int | None,
    as_json: bool,
) -> None:
    """Add a render request to the journal and print its id. Works offline."""
    data = _read_data(data_arg)
    with state.outbox() as ob:
        existing = ob.journal.find_by_key(key) if key else None
        entry = ob.enqueue(template, data, key=key, filename=filename, version=version)
    if existing is not None:
        click.echo(f"note: key {key!r} was already enqueued as entry {entry.id}", err=True)
    click.echo(_dumps(entry.to_public()) if as_json else entry.id)


@cli.command()
@json_option
@pass_state
def status(state: _State, as_json: bool) -> None:
    """Counts per state, and the last connectivity or pause reason."""
    with state.outbox() as ob:
        counts = ob.counts()
        facts = ob.status()
        schema = ob.journal.schema_version
    config = state.config
    if as_json:
        click.echo(
            _dumps(
                {
                    "journal": str(config.db),
                    "downloads": str(config.downloads),
                    "base_url": config.base_url,
                    "counts": {s.value: n for s, n in counts.items()},
                    "status": facts,
                }
            )
        )
        return
    click.echo(f"journal    {config.db} (schema {schema})")
    click.echo(f"downloads  {config.downloads}")
    click.echo(f"api        {config.base_url}")
    click.echo("  ".join(f"{s.value} {n}" for s, n in counts.items()))
    for name, value in facts.items():
        if not name.endswith("_at"):
            click.echo(f"{name}: {value} (at {facts.get(name + '_at')})")


@cli.command(name="list")
@click.option("--state", "state_filter", type=click.Choice([s.value for s in State]))
@click.option("--limit", type=click.IntRange(min=1), help="At most N entries.")
@json_option
@pass_state
def list_(state: _State, state_filter: str | None, limit: int | None, as_json: bool) -> None:
    """Entries, newest first (all of them unless --limit)."""
    with state.outbox() as ob:
        entries = ob.list(state=state_filter, limit=limit)
    if as_json:
        click.echo(_dumps([entry.to_public() for entry in entries]))
        return
    rows = [("ID", "STATE", "TEMPLATE", "KEY", "UPDATED", "DETAIL")]
    rows += [
        (e.id, e.state.value, e.template, _clip(e.key, 32), e.updated_at, _detail(e))
        for e in entries
    ]
    _table(rows)


@cli.command()
@click.argument("entry_id", metavar="ID")
@json_option
@pass_state
def show(state: _State, entry_id: str, as_json: bool) -> None:
    """One entry with its event journal."""
    with state.outbox() as ob:
        entry = ob.get(entry_id)
        events = ob.history(entry.id)
    if as_json:
        click.echo(_dumps({**entry.to_dict(), "events": [e.to_dict() for e in events]}))
        return
    _show_entry(entry, events)


@cli.command()
@click.argument("entry_id", metavar="ID")
@pass_state
def cancel(state: _State, entry_id: str) -> None:
    """Cancel a pending entry."""
    with state.outbox() as ob:
        entry = ob.cancel(entry_id)
    click.echo(f"{entry.id} cancelled")


@cli.command()
@click.argument(
    "folder", metavar="DIR", type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@pass_state
def watch(state: _State, folder: Path) -> None:
    """Turn JSON job files dropped into DIR into entries, until Ctrl-C. Works offline.

    A job file is {"template": "slug", "data": {...}} with optional "key", "filename" and
    "version"; write it as NAME.json.tmp and rename it to NAME.json. Accepted files move to
    DIR/accepted/, invalid ones to DIR/rejected/ beside NAME.error.txt, and
    DIR/results/NAME.result.json appears once the render is done, failed or rejected.
    """
    # Imported here: only this command needs the file watcher and signal handling.
    import signal
    import threading

    from .watcher import DropFolder

    stop = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda _signum, _frame: stop.set())
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        with state.outbox() as ob:
            drop = DropFolder(ob, folder, on_outcome=lambda outcome: click.echo(outcome.describe()))
            click.echo(
                f"watching {drop.folder} (journal {ob.journal.path}); Ctrl-C stops", err=True
            )
            drop.run(stop)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# -- helpers ---------------------------------------------------------------------------


def _read_data(arg: str) -> Any:
    if arg == "-":
        text, origin = sys.stdin.read(), "standard input"
    elif arg.startswith("@"):
        path = Path(arg[1:])
        try:
            text, origin = path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise errors.InvalidArgument(f"cannot read --data file {path}: {exc}") from exc
    else:
        text, origin = arg, "--data"
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise errors.InvalidArgument(f"{origin} is not valid JSON: {exc}") from exc


def _dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _clip(text: str | None, width: int) -> str:
    if text is None:
        return ""
    return text if len(text) <= width else text[: width - 1] + "…"


def _detail(entry: Entry) -> str:
    if entry.error:
        return _clip(entry.error, 60)
    if entry.pdf_path:
        return entry.pdf_path
    return entry.remote_status or ""


def _table(rows: Sequence[Sequence[str]], echo: Callable[[str], None] = click.echo) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _show_entry(entry: Entry, events: list[Event]) -> None:
    fields = entry.to_dict()
    fields.pop("data")
    fields.pop("due_at")
    width = max(len(name) for name in fields)
    for name, value in fields.items():
        if value is None:
            continue
        if name == "field_errors":
            for field_name, messages in value.items():
                click.echo(f"{'field error'.ljust(width)}  {field_name}: {'; '.join(messages)}")
            continue
        click.echo(f"{name.ljust(width)}  {value}")
    click.echo(f"{'data'.ljust(width)}  {json.dumps(entry.data, ensure_ascii=False)}")
    click.echo("")
    rows = [("AT", "FROM", "TO", "ATTEMPT", "HTTP", "CODE", "DETAIL")]
    rows += [
        (
            e.at,
            e.from_state.value if e.from_state else "-",
            e.to_state.value,
            str(e.attempt),
            str(e.http_status or ""),
            e.error_code or "",
            e.detail or "",
        )
        for e in events
    ]
    _table(rows)


def main() -> NoReturn:
    """Console entry point."""
    cli.main(prog_name="outbox")
    raise SystemExit(0)  # pragma: no cover - click exits itself
