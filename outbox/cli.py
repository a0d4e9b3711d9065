"""The ``outbox`` command: thin glue between click and the :class:`~outbox.Outbox` facade.

Errors from the library become one line on stderr and an :class:`~outbox.exit_codes.ExitCode`.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click

from . import errors
from .config import ENV_API_KEY, Config, load_config
from .engine import FlushReport
from .exit_codes import exit_code_for
from .models import Entry, Event, RenderRequest, State
from .outbox import Outbox
from .sandbox.cli import sandbox as sandbox_command
from .templates import CachedTemplate
from .validation import VALIDATION_MODES, DataCheck, ValidationMode
from .watcher import DropFolder


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
            settings=config.settings,
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
    # httpx logs every URL at INFO, and a PDF's public downloadUrl is not for the logs.
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))
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
@click.option(
    "--validate",
    type=click.Choice(VALIDATION_MODES),
    default="reject",
    show_default=True,
    help="Check the data against the cached template (outbox templates sync) first: "
    "refuse bad data (exit 65), warn and queue it anyway, or skip the check.",
)
@json_option
@pass_state
def enqueue(
    state: _State,
    template: str,
    data_arg: str,
    key: str | None,
    filename: str | None,
    version: int | None,
    validate: ValidationMode,
    as_json: bool,
) -> None:
    """Add a render request to the journal and print its id. Works offline."""
    data = _read_data(data_arg)
    with state.outbox() as ob:
        existing = ob.journal.find_by_key(key) if key else None
        request = ob.prepare(
            template, data, key=key, filename=filename, version=version, validation="off"
        )
        check = _check_data(ob, request, validate) if existing is None else None
        entry = ob.enqueue_many([request])[0]
    if check is not None and check.message():
        click.echo(f"{'note' if check.passed else 'warning'}: {check.message()}", err=True)
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
    for line in _network_lines(facts):
        click.echo(line)


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
@click.option(
    "--timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds to work before leaving the rest for next time.",
)
@json_option
@pass_state
def flush(state: _State, timeout: float, as_json: bool) -> None:
    """Submit everything pending, follow the renders, download the PDFs.

    Exit codes: 0 drained; 65 drained but something failed or was rejected in this run;
    75 work remains (offline, server trouble, rate limited, or still rendering at --timeout);
    77 the API key was refused; 78 configuration error.
    """
    _require_api_key(state.config)
    with state.outbox() as ob, _on_signals(lambda: ob.stop(timeout=0)):
        live = sys.stderr.isatty() and not as_json
        report = ob.flush(timeout, progress=_progress_line if live else None)
    if live:
        click.echo("", err=True)
    if as_json:
        click.echo(_dumps(_report_json(report)))
    else:
        click.echo(_counts_line(report.counts))
        for line in report.problems:
            click.echo(line.replace("fix the API key", f"fix {ENV_API_KEY}"), err=True)
    raise SystemExit(report.exit_code)


@cli.command()
@click.option(
    "--watch",
    "watch_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also ingest JSON job files dropped into this folder.",
)
@pass_state
def run(state: _State, watch_dir: Path | None) -> None:
    """Keep working until stopped (SIGINT/SIGTERM): submit, poll, download."""
    _require_api_key(state.config)
    with state.outbox() as ob, _on_signals(lambda: ob.stop(timeout=0)):
        stop_watching = threading.Event()
        watcher = None
        if watch_dir is not None:
            drop = DropFolder(
                ob, watch_dir, on_outcome=lambda outcome: click.echo(outcome.describe())
            )
            watcher = threading.Thread(
                target=drop.run, args=(stop_watching,), name="drop-folder", daemon=True
            )
            watcher.start()
        click.echo(f"outbox running on {state.config.db}; stop with Ctrl-C", err=True)
        try:
            ob.run()
        finally:
            stop_watching.set()
            if watcher is not None:
                watcher.join(timeout=30)
    click.echo("stopped; unfinished work stays in the journal", err=True)


@cli.command()
@click.argument("entry_id", metavar="ID")
@pass_state
def retry(state: _State, entry_id: str) -> None:
    """Put a failed or rejected entry back to pending (a new key for failed ones)."""
    with state.outbox() as ob:
        entry = ob.retry(entry_id)
    click.echo(f"{entry.id} pending again with key {entry.key}")


@cli.command()
@click.option(
    "--older-than",
    "older_than",
    required=True,
    metavar="AGE",
    help="Age such as 30d, 12h, 90m or 3600s.",
)
@pass_state
def purge(state: _State, older_than: str) -> None:
    """Delete finished entries older than AGE (never pending or in-progress ones)."""
    seconds = _parse_age(older_than)
    with state.outbox() as ob:
        count = ob.purge(seconds)
    click.echo(f"purged {count} finished entries older than {older_than}")


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
    stop = threading.Event()
    with _on_signals(stop.set), state.outbox() as ob:
        drop = DropFolder(ob, folder, on_outcome=lambda outcome: click.echo(outcome.describe()))
        click.echo(f"watching {drop.folder} (journal {ob.journal.path}); Ctrl-C stops", err=True)
        drop.run(stop)


cli.add_command(sandbox_command)


@cli.group(name="templates")
def templates_group() -> None:
    """Cache templates while online, to check data before it is queued, offline."""


@templates_group.command(name="sync")
@click.option(
    "--timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds to spend before giving up (the cache is then left as it was).",
)
@json_option
@pass_state
def templates_sync(state: _State, timeout: float, as_json: bool) -> None:
    """Cache every template's published manifest, schema and version. Needs the network.

    Exit codes: 0 synced; 75 offline or server trouble; 77 the API key was refused;
    78 no API key. On any failure the cache is left as it was.
    """
    _require_api_key(state.config)
    with state.outbox() as ob:
        before = {cached.slug: cached for cached in ob.templates()}
        try:
            after = ob.sync_templates(timeout)
        except (errors.AuthError, errors.TransientError) as exc:
            fix = f"fix {ENV_API_KEY}" if isinstance(exc, errors.AuthError) else "try again online"
            click.echo(f"outbox: {exc}; the template cache was left as it was ({fix})", err=True)
            raise SystemExit(exit_code_for(exc)) from None
    changes = {cached.slug: _template_change(before.get(cached.slug), cached) for cached in after}
    removed = sorted(set(before) - set(changes))
    if as_json:
        click.echo(
            _dumps(
                {
                    "templates": [
                        {**cached.to_public(), "change": changes[cached.slug]} for cached in after
                    ],
                    "removed": removed,
                }
            )
        )
        return
    _templates_table(after, changes)
    counted = [f"{sum(1 for c in changes.values() if c == kind)} {kind}" for kind in _CHANGES]
    click.echo(f"synced {len(after)} templates ({', '.join(counted)}, {len(removed)} removed)")
    for slug in removed:
        click.echo(f"removed {slug}: it no longer exists at Craftkit", err=True)


@templates_group.command(name="list")
@json_option
@pass_state
def templates_list(state: _State, as_json: bool) -> None:
    """The cached templates and when they were synced. Works offline."""
    with state.outbox() as ob:
        cached = ob.templates()
    if as_json:
        click.echo(_dumps([template.to_public() for template in cached]))
        return
    if not cached:
        click.echo("no templates cached; run `outbox templates sync` while online", err=True)
        return
    _templates_table(cached, {})


# -- helpers ---------------------------------------------------------------------------


_CHANGES = ("new", "updated", "unchanged")


def _check_data(ob: Outbox, request: RenderRequest, mode: ValidationMode) -> DataCheck | None:
    """Check the request's data against the cached template; raise in ``reject`` mode."""
    if mode == "off":
        return None
    check = ob.check(request.template, request.data, version=request.version)
    check.enforce(mode)
    return check


def _template_change(old: CachedTemplate | None, new: CachedTemplate) -> str:
    if old is None:
        return "new"
    same = (old.version, old.published, old.json_schema) == (
        new.version,
        new.published,
        new.json_schema,
    )
    return "unchanged" if same else "updated"


def _templates_table(cached: Sequence[CachedTemplate], changes: dict[str, str]) -> None:
    rows = [("SLUG", "VERSION", "VARIABLES", "LOOPS", "SYNCED", "CHANGE")]
    for template in cached:
        variables, loops = template.field_count()
        change = changes.get(template.slug, "")
        if not change and template.previous_version is not None:
            change = f"was version {template.previous_version} until {template.changed_at}"
        rows.append(
            (
                template.slug,
                str(template.version) if template.has_published_version else "unpublished",
                str(variables),
                str(loops),
                template.synced_at,
                change,
            )
        )
    _table(rows)


def _require_api_key(config: Config) -> None:
    if not config.api_key:
        raise errors.ConfigError(
            f"no Craftkit API key: set {ENV_API_KEY} (it is never read from a flag or a file)"
        )


@contextmanager
def _on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """SIGINT and SIGTERM call ``stop`` (a clean stop) instead of killing us mid-request."""

    def handler(signum: int, frame: Any) -> None:
        stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _network_lines(facts: dict[str, Any]) -> list[str]:
    """The last known connectivity, key, server and rate-limit facts, for a person."""
    lines = []
    labels = {
        "connectivity": ("network", "online", "offline"),
        "auth": ("api key", "accepted", f"refused — fix {ENV_API_KEY}"),
        "server": ("server", "ok", "trouble"),
        "rate_limit": ("rate limit", "not limited", "limited — requests were slowed down"),
    }
    for name, (label, good, bad) in labels.items():
        fact = facts.get(name)
        if not isinstance(fact, dict):
            continue
        ok = fact.get("online", fact.get("ok", not fact.get("limited", False)))
        text = good if ok else bad
        if fact.get("reason") and not ok:
            text += f": {fact['reason']}"
        lines.append(f"{label.ljust(10)} {text} (as of {facts.get(name + '_at')})")
    return lines


def _progress_line(counts: dict[State, int]) -> None:
    click.echo("\r" + _counts_line(counts) + "   ", nl=False, err=True)


def _counts_line(counts: dict[State, int]) -> str:
    return "  ".join(f"{s.value} {counts.get(s, 0)}" for s in State)


def _report_json(report: FlushReport) -> dict[str, Any]:
    return {
        "exit_code": int(report.exit_code),
        "drained": report.drained,
        "counts": {s.value: n for s, n in report.counts.items()},
        "moved": {s.value: n for s, n in report.moved.items()},
        "failed": [e.to_public() for e in report.failed],
        "rejected": [e.to_public() for e in report.rejected],
        "offline": report.offline,
        "auth_error": report.auth_error,
        "rate_limited": report.rate_limited,
        "timed_out": report.timed_out,
        "problems": report.problems,
    }


_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _parse_age(text: str) -> float:
    value, unit = text[:-1], text[-1:].lower()
    if unit not in _AGE_UNITS or not value.replace(".", "", 1).isdigit():
        raise errors.InvalidArgument(
            f"--older-than {text!r} is not an age; use a number and s, m, h, d or w (e.g. 30d)"
        )
    return float(value) * _AGE_UNITS[unit]


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
