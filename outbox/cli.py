"""The ``outbox`` command: thin glue between click and the :class:`~outbox.Outbox` facade.

Errors from the library become one line on stderr and an :class:`~outbox.exit_codes.ExitCode`.
What the commands print is formatted in :mod:`outbox.cli_output`.
"""

from __future__ import annotations

import builtins
import importlib
import logging
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click

from . import cli_output as output
from . import errors, jobfiles, logs
from .clock import Clock
from .config import ENV_API_KEY, Config, load_config, parse_age
from .deliveries import UNFINISHED_DELIVERY_STATES, Delivery, DeliveryState, delivery_requests
from .exit_codes import ExitCode, exit_code_for
from .logs import LogFormat
from .models import Event, RenderRequest, State
from .outbox import Outbox
from .platform import keep_malloc_lean, on_stop_request, restart_without_thread_caches
from .validation import VALIDATION_MODES, ValidationMode

#: What the long-running commands say about themselves, in the same log as their outcomes.
log = logging.getLogger("outbox.cli")


class _Group(click.Group):
    """Turns library errors into a message and an exit code instead of a traceback, and
    loads a :class:`_LazyCommand` only when it is the one that runs. Usage errors exit
    ``EX_USAGE`` (64) rather than click's 2."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if isinstance(command, _LazyCommand):
            command = command.load()
        return name, command, rest

    def make_context(
        self,
        info_name: str | None,
        args: builtins.list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        with _usage_exit_code():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with _usage_exit_code():
                return super().invoke(ctx)
        except errors.OutboxError as exc:
            click.echo(f"outbox: {exc}", err=True)
            if ctx.meta.get(_JSON_ASKED):
                click.echo(output.error_json(exc))
            ctx.exit(exit_code_for(exc))


class _LazyCommand(click.Command):
    """A subcommand whose module is imported only when it runs (or shows its own help).

    ``outbox --help`` lists it from ``short_help`` alone, so the commands that do not use
    it start without loading it (the sandbox brings an HTTP server and a JSON Schema library).
    """

    def __init__(self, name: str, target: str, *, short_help: str) -> None:
        super().__init__(name, short_help=short_help)
        self.target = target

    def load(self) -> click.Command:
        """The real command (``target`` is ``module:attribute``)."""
        module, _, attribute = self.target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command), self.target
        return command


@contextmanager
def _usage_exit_code() -> Iterator[None]:
    """A command line that does not parse exits 64 (``EX_USAGE``), as sysexits.h says."""
    try:
        yield
    except click.UsageError as exc:
        setattr(exc, "exit_code", ExitCode.USAGE)  # noqa: B010 - click declares it a ClassVar
        raise


class _State:
    """What the group options resolved to; opens the journal on first use."""

    def __init__(self, flags: dict[str, Any], verbosity: int, log_format: LogFormat) -> None:
        self.flags = flags
        self.verbosity = verbosity
        self.log_format = log_format
        self.quiet = False
        self.outcomes = False
        self._config: Config | None = None

    def configure_logging(self) -> None:
        logs.configure(self.verbosity, self.log_format, outcomes=self.outcomes, quiet=self.quiet)

    def log_outcomes(self, *, quiet: bool = False) -> None:
        """For run, flush and watch: one line per outcome on stderr (problems only if quiet)."""
        self.outcomes, self.quiet = True, quiet
        self.configure_logging()

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(**self.flags)
        return self._config

    def open(self, *, create: bool = False) -> Outbox:
        """The outbox on the configured journal. Only commands that write requests (or the
        template cache) ``create`` it: the others refuse a missing journal (exit 78) rather
        than leave an empty one, and its folder, wherever a mistyped ``--db`` points."""
        config = self.config
        try:
            return Outbox(
                config.db,
                api_key=config.api_key,
                base_url=config.base_url,
                downloads=config.downloads,
                settings=config.settings,
                create=create,
            )
        except errors.JournalMissing as exc:
            raise errors.JournalMissing(
                f"no journal at {config.db}; `outbox enqueue` creates one (or `outbox init`). "
                "Nothing was created: check --db or OUTBOX_DB",
                path=exc.path,
            ) from None

    @contextmanager
    def outbox(self, *, create: bool = False) -> Iterator[Outbox]:
        with self.open(create=create) as ob:
            yield ob


pass_state = click.make_pass_decorator(_State)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", metavar="PATH", help="Journal file. [env: OUTBOX_DB]")
@click.option("--downloads", metavar="DIR", help="Where PDFs go. [env: OUTBOX_DOWNLOADS]")
@click.option("--base-url", metavar="URL", help="Craftkit API. [env: CRAFTKIT_BASE_URL]")
@click.option("--config", "config_file", metavar="FILE", help="Config file. [env: OUTBOX_CONFIG]")
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="-v: also outbox's decisions (claims, schedules, retries); -vv: also every request.",
)
@click.option(
    "--log-format",
    type=click.Choice(logs.LOG_FORMATS),
    default="text",
    show_default=True,
    help="The log on stderr: lines for people, or one JSON object per line for collectors.",
)
@click.version_option(package_name="outbox")
@click.pass_context
def cli(
    ctx: click.Context,
    db: str | None,
    downloads: str | None,
    base_url: str | None,
    config_file: str | None,
    verbose: int,
    log_format: LogFormat,
) -> None:
    """Offline-first render queue for the Craftkit PDF API.

    The API key is read from the CRAFTKIT_API_KEY environment variable only. run, flush and
    watch log one line per outcome on stderr (-v, -vv and --log-format also work after them).
    """
    ctx.obj = _State(
        {"db": db, "downloads": downloads, "base_url": base_url, "config_file": config_file},
        verbose,
        log_format,
    )
    ctx.obj.configure_logging()


def _more_verbose(ctx: click.Context, param: click.Parameter, value: int) -> None:
    if value:
        state = ctx.find_object(_State)
        assert state is not None
        state.verbosity += value
        state.configure_logging()


def _log_format(ctx: click.Context, param: click.Parameter, value: LogFormat | None) -> None:
    if value is not None:
        state = ctx.find_object(_State)
        assert state is not None
        state.log_format = value
        state.configure_logging()


def log_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``-v`` and ``--log-format`` after a command's name too (``outbox run -v``)."""
    command = click.option(
        "--log-format",
        type=click.Choice(logs.LOG_FORMATS),
        expose_value=False,
        callback=_log_format,
        help="text (default) or json: one JSON object per log line, for collectors.",
    )(command)
    return click.option(
        "-v",
        "--verbose",
        count=True,
        expose_value=False,
        callback=_more_verbose,
        help="-v: also outbox's decisions; -vv: also every request.",
    )(command)


#: How many entries ``outbox list`` shows on a terminal unless told --limit or --all.
TERMINAL_LIST = 50

#: Set in the context's shared ``meta`` when a command was asked for ``--json``.
_JSON_ASKED = "outbox.json"


def _remember_json(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    """``--json`` also turns an error into a JSON error object on stdout."""
    if value:
        ctx.meta[_JSON_ASKED] = True
    return value


json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    callback=_remember_json,
    help='Machine-readable output; an error is then also printed as {"error": {...}}.',
)


@cli.command()
@json_option
@pass_state
def init(state: _State, as_json: bool) -> None:
    """Create the journal (and its folder) if there is none; print where it is.

    Commands that only read or act on entries (list, show, status, flush, retry, ...) never
    create a journal: they exit 78 when there is none. enqueue, watch, run --watch and
    templates sync create it as needed; init does it up front (for a service, say).
    """
    path = state.config.db
    try:
        ob, created = state.open(), False
    except errors.JournalMissing:
        ob, created = state.open(create=True), True
    with ob:
        schema = ob.schema_version
    if as_json:
        click.echo(output.dumps({"journal": str(path), "created": created, "schema": schema}))
        return
    click.echo(f"{'created' if created else 'already there:'} journal {path} (schema {schema})")


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
@click.option(
    "--share",
    "share_link",
    is_flag=True,
    help="Once the PDF is done, make a guest link to it (outbox show prints it).",
)
@click.option(
    "--share-expires",
    metavar="ISO",
    help="When that link stops working (e.g. 2026-07-01T00:00:00Z); implies --share.",
)
@click.option(
    "--email-to",
    "email_to",
    metavar="ADDR",
    multiple=True,
    help="Once the PDF is done, email it to ADDR (repeat for several people).",
)
@click.option("--email-message", metavar="TEXT", help="A message for the email (2,000 chars).")
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
    share_link: bool,
    share_expires: str | None,
    email_to: tuple[str, ...],
    email_message: str | None,
    as_json: bool,
) -> None:
    """Add a render request to the journal and print its id. Works offline.

    With --share and --email-to, the finished document is also handed to people, exactly
    once each: a guest link, an email per address.
    """
    data = _read_data(data_arg)
    if email_message is not None and not email_to:
        raise errors.InvalidArgument("--email-message needs --email-to, the address to send to")
    share: bool | dict[str, str] = (
        {"expires_at": share_expires} if share_expires is not None else share_link
    )
    email = [
        {"to": address, **({"message": email_message} if email_message is not None else {})}
        for address in email_to
    ]
    # A malformed request creates nothing, not even the journal.
    RenderRequest(template, data, key, filename, version)
    delivery_requests(share, email, now=Clock().now())
    with state.outbox(create=True) as ob:
        existing = ob.find_by_key(key) if key else None
        request = ob.prepare(
            template,
            data,
            key=key,
            filename=filename,
            version=version,
            validation="off",
            share=share,
            email=email,
        )
        check = ob.check_request(request, validation=validate)
        entry = ob.enqueue_many([request])[0]
    if existing is None and check is not None and check.message():
        click.echo(f"{'note' if check.passed else 'warning'}: {check.message()}", err=True)
    if existing is not None:
        click.echo(f"note: key {key!r} was already enqueued as entry {entry.id}", err=True)
    click.echo(output.entry_json(entry) if as_json else entry.id)


@cli.command()
@json_option
@pass_state
def status(state: _State, as_json: bool) -> None:
    """Counts per state, and the last connectivity or pause reason."""
    with state.outbox() as ob:
        counts = ob.counts()
        facts = ob.status()
        schema = ob.schema_version
        next_due, now = ob.next_due(), ob.clock.now()
    config = state.config
    where = {
        "journal": str(config.db),
        "downloads": str(config.downloads),
        "base_url": config.base_url,
    }
    if as_json:
        click.echo(
            output.status_json(**where, counts=counts, facts=facts, next_due=next_due, now=now)
        )
        return
    lines = output.status_lines(
        **where, schema=schema, counts=counts, facts=facts, next_due=next_due, now=now
    )
    if config.api_key_problem:
        lines.insert(3, f"api key    unusable: {config.api_key_problem}")
    _echo_lines(lines)


@cli.command(name="list")
@click.option("--state", "state_filter", type=click.Choice([s.value for s in State]))
@click.option("--limit", type=click.IntRange(min=1), help="At most N entries.")
@click.option(
    "--all", "show_all", is_flag=True, help="Every entry, also on a terminal (see below)."
)
@json_option
@pass_state
def list_(
    state: _State, state_filter: str | None, limit: int | None, show_all: bool, as_json: bool
) -> None:
    """Entries, newest first, printed as they are read (any number, in constant memory).

    On a terminal the table stops after the newest 50 and says how many more there are;
    --limit N or --all shows more. Piped or redirected, and with --json, it prints all of
    them unless --limit.
    """
    bounded = limit is None and not show_all and not as_json and sys.stdout.isatty()
    with state.outbox() as ob:
        entries = ob.stream(state=state_filter, limit=TERMINAL_LIST if bounded else limit)
        if as_json:
            for piece in output.json_array(output.entry_object(entry) for entry in entries):
                click.echo(piece, nl=False)
            click.echo()
            return
        shown = 0
        for line in output.entries_table(entries):
            click.echo(line)
            shown += 1
        if bounded:
            counts = ob.counts()
            total = counts[State(state_filter)] if state_filter else sum(counts.values())
            more = total - (shown - 1)  # the header is a line too
            if more > 0:
                click.echo(f"... {more:,} more; use --limit N or --all to see them", err=True)


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
        click.echo(output.entry_json(entry, events))
        return
    _echo_lines(output.entry_lines(entry, events))


@cli.command()
@click.argument("entry_id", metavar="ID")
@json_option
@pass_state
def cancel(state: _State, entry_id: str, as_json: bool) -> None:
    """Cancel a pending entry."""
    with state.outbox() as ob:
        entry = ob.cancel(entry_id)
        if as_json:
            entry = ob.get(entry.id)  # read again, with its deliveries
    click.echo(output.entry_json(entry) if as_json else f"{entry.id} cancelled")


@cli.command()
@click.option(
    "--timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds to work before leaving the rest for next time.",
)
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    help="Print only the problems a person must act on (for hooks); the exit code says the rest.",
)
@json_option
@log_options
@pass_state
def flush(state: _State, timeout: float, quiet: bool, as_json: bool) -> None:
    """Submit everything pending, follow the renders, download the PDFs.

    Logs one line per outcome on stderr, then prints this run's summary: what was submitted,
    done, failed and rejected, the PDFs written, and what still waits (next due, and why).

    Exit codes: 0 drained; 65 drained but something failed or was rejected in this run;
    75 work remains (offline, server trouble, rate limited, or due later than --timeout);
    77 the API key was refused; 78 configuration error.
    """
    state.log_outcomes(quiet=quiet)
    _require_api_key(state.config)
    # The flush's own stop event, set by the handler: a SIGTERM that comes while the command
    # starts up is still set when the flush begins (nothing clears it), so it ends at once.
    stop = threading.Event()
    with state.outbox() as ob, on_stop_request(stop.set):
        live = sys.stderr.isatty() and not as_json and not quiet
        report = ob.flush(timeout, progress=_show_progress if live else None, stop=stop)
        now = ob.clock.now()
    if live:
        click.echo("\r\033[K", err=True, nl=False)
    if as_json:
        click.echo(output.report_json(report))
    elif not quiet:
        _echo_lines(output.flush_summary(report, now=now))
    _echo_lines(report.problems, err=True)
    raise SystemExit(report.exit_code)


@cli.command()
@click.option(
    "--watch",
    "watch_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also ingest JSON job files dropped into this folder.",
)
@log_options
@pass_state
def run(state: _State, watch_dir: Path | None) -> None:
    """Keep working until stopped (SIGINT/SIGTERM): submit, poll, download.

    Logs one line per outcome on stderr (done, rejected, failed, offline, online again).
    """
    _settle_in_for_weeks()
    state.log_outcomes()
    _require_api_key(state.config)
    # With --watch it takes in new requests, so it may create the journal; without, it only
    # works on what is there.
    with (
        state.outbox(create=watch_dir is not None) as ob,
        on_stop_request(lambda: ob.stop(timeout=0)),
    ):
        ob.on_change(lambda event: _echo_delivery(ob, event))
        stop_watching = threading.Event()
        watcher = None
        if watch_dir is not None:
            from .watcher import DropFolder  # the only commands that load watchfiles

            drop = DropFolder(ob, watch_dir)
            watcher = threading.Thread(
                target=drop.run, args=(stop_watching,), name="drop-folder", daemon=True
            )
            watcher.start()
        log.info("outbox running on %s; stop with Ctrl-C", state.config.db)
        try:
            ob.run()
        finally:
            stop_watching.set()
            if watcher is not None:
                watcher.join(timeout=30)
    log.info("stopped; unfinished work stays in the journal")


@cli.command()
@click.argument("entry_id", metavar="ID")
@json_option
@pass_state
def retry(state: _State, entry_id: str, as_json: bool) -> None:
    """Put a failed or rejected entry back to pending (a new key for failed ones)."""
    with state.outbox() as ob:
        entry = ob.retry(entry_id)
        if as_json:
            entry = ob.get(entry.id)  # read again, with its deliveries
    if as_json:
        click.echo(output.entry_json(entry))
        return
    click.echo(f"{entry.id} pending again with key {entry.key}")


@cli.command()
@click.argument("entry_id", metavar="ID")
@click.option(
    "--data",
    "data_arg",
    metavar="JSON|@FILE|-",
    help="The new template data: JSON text, @FILE to read a file, or - for stdin.",
)
@click.option("--filename", help="The new PDF file name (a plain name ending in .pdf).")
@click.option(
    "--version",
    "version_arg",
    metavar="N|current",
    help="Pin another published template version, or 'current' to drop the pin.",
)
@click.option(
    "--validate",
    type=click.Choice(VALIDATION_MODES),
    default="reject",
    show_default=True,
    help="Check the new data against the cached template first, as enqueue does.",
)
@json_option
@pass_state
def amend(
    state: _State,
    entry_id: str,
    data_arg: str | None,
    filename: str | None,
    version_arg: str | None,
    validate: ValidationMode,
    as_json: bool,
) -> None:
    """Replace a request's data, filename or version, keeping its id and history.

    For a rejected or failed entry, or one not sent yet: it goes (back) to pending with the
    new request. A failed entry, or one whose earlier submission's outcome is unknown, gets a
    new derived key so that Craftkit cannot hand back the old render.
    """
    changes: dict[str, Any] = {}
    if data_arg is not None:
        changes["data"] = _read_data(data_arg)
    if filename is not None:
        changes["filename"] = filename
    if version_arg is not None:
        changes["version"] = _parse_version(version_arg)
    if not changes:
        raise errors.InvalidArgument("nothing to amend: give --data, --filename or --version")
    with state.outbox() as ob:
        before = ob.get(entry_id)
        # Bad data is refused here (reject); a warning or a note is printed once it is saved.
        entry = ob.amend(
            entry_id, validation="reject" if validate == "reject" else "off", **changes
        )
        check = (
            None
            if validate == "off"
            else ob.check(entry.template, entry.data, version=entry.version)
        )
        if as_json:
            entry = ob.get(entry.id)  # read again, with its deliveries
    if check is not None and check.message():
        click.echo(f"{'note' if check.passed else 'warning'}: {check.message()}", err=True)
    if as_json:
        click.echo(output.entry_json(entry))
        return
    new_key = "" if entry.key == before.key else f" (new key; was {before.key})"
    click.echo(f"{entry.id} amended; pending with key {entry.key}{new_key}")


@cli.command()
@click.argument("entry_id", metavar="ID")
@click.option(
    "--expires",
    metavar="ISO",
    help="When the link stops working (e.g. 2026-07-01T00:00:00Z); never, by default.",
)
@click.option("--message", metavar="TEXT", help="A message kept with the link (2,000 chars).")
@click.option(
    "--timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds to try before leaving the link to the next flush or run.",
)
@json_option
@pass_state
def share(
    state: _State,
    entry_id: str,
    expires: str | None,
    message: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Make a guest link to a done entry's PDF now, and print it.

    Exactly once, like links asked for at enqueue: if the answer is lost, the next flush or
    run finds the link at Craftkit instead of making a second one. Exit codes: 0 made;
    75 not made yet (offline, say: it is kept and made later); 65 refused.
    """
    _require_api_key(state.config)
    with state.outbox() as ob:
        delivery = ob.share(entry_id, expires_at=expires, message=message, timeout=timeout)
    if as_json:
        click.echo(output.dumps(delivery.to_public()))
    elif delivery.state is DeliveryState.DELIVERED:
        click.echo(delivery.share_url)
    else:
        click.echo(f"outbox: {delivery.status_line()}", err=True)
    raise SystemExit(_delivery_exit_code(delivery))


@cli.command()
@click.argument("entry_id", metavar="ID")
@json_option
@pass_state
def shares(state: _State, entry_id: str, as_json: bool) -> None:
    """The entry's share links at Craftkit, newest first, with click counts."""
    _require_api_key(state.config)
    with state.outbox() as ob:
        found = ob.shares(entry_id)
        deliveries = ob.get(entry_id).deliveries
    if as_json:
        click.echo(output.shares_json(found, deliveries))
        return
    if not found:
        click.echo("no shares for this entry's render", err=True)
        return
    _echo_lines(output.shares_table(found, deliveries))


@cli.command()
@click.argument("entry_id", metavar="ID")
@click.argument("share_id", metavar="SHARE_ID")
@pass_state
def revoke(state: _State, entry_id: str, share_id: str) -> None:
    """Revoke one of the entry's share links (see outbox shares ID): it stops working."""
    _require_api_key(state.config)
    with state.outbox() as ob:
        revoked_at = ob.revoke(entry_id, share_id)
    click.echo(f"revoked {share_id}" + (f" at {revoked_at}" if revoked_at else ""))


@cli.command()
@click.option(
    "--older-than",
    "older_than",
    required=True,
    metavar="AGE",
    help="Age such as 30d, 12h, 90m or 3600s.",
)
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@json_option
@pass_state
def purge(state: _State, older_than: str, dry_run: bool, as_json: bool) -> None:
    """Delete finished entries older than AGE (never pending or in-progress ones, never one
    whose drop-folder result file is not written yet). PDFs are never deleted."""
    seconds = _parse_age(older_than)
    with state.outbox() as ob:
        count = ob.purge(seconds, dry_run=dry_run)
    if as_json:
        counted = {"would_purge": count, "dry_run": True} if dry_run else {"purged": count}
        click.echo(output.dumps({**counted, "older_than": older_than}))
        return
    if dry_run:
        click.echo(f"would purge {count} finished entries older than {older_than} (dry run)")
        return
    click.echo(f"purged {count} finished entries older than {older_than}")


@cli.command(name="path")
@click.argument("entry_id", metavar="ID")
@json_option
@pass_state
def path_(state: _State, entry_id: str, as_json: bool) -> None:
    """Print the PDF's path of a done entry, for scripts: `open "$(outbox path ID)"`.

    Exit codes: 0 done and the file is there; 75 not done yet (pending, submitted,
    downloading); 65 it never will be (failed, rejected, cancelled), the file is gone, or
    there is no such entry.
    """
    with state.outbox() as ob:
        pdf = ob.pdf(entry_id)
        entry = ob.get(entry_id)
    if as_json:
        click.echo(output.dumps({**output.entry_object(entry), "pdf_path": str(pdf)}))
    else:
        click.echo(str(pdf))


@cli.command()
@click.option(
    "--since",
    type=click.IntRange(min=0),
    default=0,
    metavar="EVENT_ID",
    help="Only events after this event id (ids only grow; keep the last one seen).",
)
@click.option("--entry", "entry_id", metavar="ID", help="Only this entry's events.")
@click.option(
    "-f", "--follow", is_flag=True, help="Keep printing new events, from any process, until Ctrl-C."
)
@json_option
@pass_state
def events(state: _State, since: int, entry_id: str | None, follow: bool, as_json: bool) -> None:
    """The event journal: every state change of every entry, oldest first.

    One line per event (ID, time, entry, from -> to, attempt, HTTP status, code, detail), or
    with --json one JSON object per line (JSON Lines), for `jq` and log shippers.
    """
    stop = threading.Event()
    with on_stop_request(stop.set), state.outbox() as ob:
        only = ob.get(entry_id).id if entry_id else None
        feed = ob.changes(since, stop=stop) if follow else _all_events_after(ob, since)
        for event in feed:
            if only is not None and event.entry_id != only:
                continue
            click.echo(output.dumps_line(event.to_dict()) if as_json else output.event_line(event))
            if follow:
                sys.stdout.flush()


def _all_events_after(ob: Outbox, since: int) -> Iterator[Event]:
    while batch := ob.events_after(since):
        yield from batch
        since = batch[-1].id


@cli.command()
@json_option
@pass_state
def doctor(state: _State, as_json: bool) -> None:
    """Check the journal, API key, base URL, network, /health, template cache, downloads
    folder and worker; say what to fix. Creates and changes nothing.

    Exit codes: 0 nothing to fix (warnings may remain); otherwise that of the first check
    that failed: 75 offline or a full disk, 77 the key was refused, 78 configuration.
    """
    from . import doctor as checkup  # loads the HTTP client: only for this command

    config = state.config
    checks = checkup.diagnose(
        db=config.db,
        downloads=config.downloads,
        base_url=config.base_url,
        api_key=config.api_key,
        api_key_problem=config.api_key_problem,
        settings=config.settings,
    )
    code = checkup.exit_code(checks)
    if as_json:
        click.echo(output.dumps({"checks": [c.to_dict() for c in checks], "exit_code": code}))
    else:
        _echo_lines(checkup.lines(checks))
    raise SystemExit(code)


@cli.command()
@json_option
@pass_state
def vacuum(state: _State, as_json: bool) -> None:
    """Give the space of purged entries back to the disk (rewrites the journal; writers wait).

    Purged entries' space is reused by new ones anyway; run this after a big purge when the
    disk needs the space. It needs free space the size of the journal while it runs.
    """
    with state.outbox() as ob:
        before, after = ob.vacuum()
    if as_json:
        click.echo(output.dumps({"bytes_before": before, "bytes_after": after}))
        return
    click.echo(f"journal {before} -> {after} bytes ({before - after} given back)")


@cli.command()
@click.argument(
    "folder", metavar="DIR", type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@log_options
@pass_state
def watch(state: _State, folder: Path) -> None:
    """Turn JSON job files dropped into DIR into entries, until Ctrl-C. Works offline.

    A job file is {"template": "slug", "data": {...}} with optional "key", "filename" and
    "version"; write it as NAME.json.tmp and rename it to NAME.json. Accepted files move to
    DIR/accepted/, invalid ones to DIR/rejected/ beside NAME.error.txt, and
    DIR/results/NAME.result.json appears once the render is done, failed or rejected.
    Each file's fate is logged on stderr, one line each.
    """
    _settle_in_for_weeks()
    state.log_outcomes()
    from .watcher import DropFolder

    stop = threading.Event()
    with on_stop_request(stop.set), state.outbox(create=True) as ob:
        drop = DropFolder(ob, folder)
        log.info("watching %s (journal %s); Ctrl-C stops", drop.folder, ob.path)
        drop.run(stop)


@cli.command()
@click.option(
    "--port",
    default=8800,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="0: any free port.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but this machine's loopback exposes the queue and its "
    "actions to the network (still behind the token).",
)
@click.option("--open", "open_page", is_flag=True, help="Open the page in the default browser.")
@pass_state
def dashboard(state: _State, port: int, host: str, open_page: bool) -> None:
    """Serve a live web page of the queue, with its actions, until Ctrl-C.

    The printed URL carries a random token; the page needs it (keep it to yourself). Works
    offline; pair it with `outbox run` or `outbox flush` to see work happen.
    """
    from .dashboard.server import is_loopback

    stop = threading.Event()
    with on_stop_request(stop.set), state.outbox() as ob:
        server = ob.dashboard(host=host, port=port)
        if not is_loopback(host):
            click.echo(
                f"warning: listening on {host}: anyone on the network who learns the URL can "
                "see and change the queue; prefer the default 127.0.0.1",
                err=True,
            )
        click.echo(f"outbox dashboard for {ob.path}; stop with Ctrl-C", err=True)
        click.echo(server.url)
        sys.stdout.flush()
        if open_page:
            _open_in_browser(server.url)
        while not stop.wait(1.0):
            pass
    click.echo("dashboard stopped", err=True)


cli.add_command(
    _LazyCommand(
        "sandbox",
        "outbox.sandbox.cli:sandbox",
        short_help="Run a local Craftkit-compatible sandbox server until Ctrl-C.",
    )
)


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
    with state.outbox(create=True) as ob:  # a cache synced before the first enqueue is kept
        before = {cached.slug: cached for cached in ob.templates()}
        try:
            after = ob.sync_templates(timeout)
        except (errors.AuthError, errors.TransientError) as exc:
            fix = f"fix {ENV_API_KEY}" if isinstance(exc, errors.AuthError) else "try again online"
            raise type(exc)(
                f"{exc}; the template cache was left as it was ({fix})",
                status=exc.status,
                code=exc.code,
            ) from None
    changes = {
        cached.slug: output.template_change(before.get(cached.slug), cached) for cached in after
    }
    removed = sorted(set(before) - set(changes))
    if as_json:
        click.echo(output.sync_json(after, changes, removed))
        return
    _echo_lines(output.templates_table(after, changes))
    click.echo(output.sync_summary(len(after), changes, len(removed)))
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
        click.echo(output.dumps([template.to_public() for template in cached]))
        return
    if not cached:
        click.echo("no templates cached; run `outbox templates sync` while online", err=True)
        return
    _echo_lines(output.templates_table(cached, {}))


# -- helpers ---------------------------------------------------------------------------


def _echo_lines(lines: Iterable[str], *, err: bool = False) -> None:
    for line in lines:
        click.echo(line, err=err)


def _echo_delivery(ob: Outbox, event: Event) -> None:
    """``run``'s line for a delivery that finished (a link made, an email sent, a refusal)."""
    if event.delivery_id is None or event.delivery_state in (None, *_UNFINISHED_DELIVERIES):
        return
    delivery = ob.journal.get_delivery(event.delivery_id)
    click.echo(output.delivery_line(delivery))


def _delivery_exit_code(delivery: Delivery) -> ExitCode:
    if delivery.state is DeliveryState.DELIVERED:
        return ExitCode.OK
    if delivery.state.is_finished:
        return ExitCode.DATA_ERROR
    return ExitCode.TRY_LATER


def _show_progress(counts: dict[State, int]) -> None:
    click.echo(output.progress_line(counts), nl=False, err=True)


def _require_api_key(config: Config) -> None:
    if config.api_key_problem:
        raise errors.ConfigError(f"{config.api_key_problem}; fix it (the key is never shown)")
    if not config.api_key:
        raise errors.ConfigError(
            f"no Craftkit API key: set {ENV_API_KEY} (it is never read from a flag or a file)"
        )


def _open_in_browser(url: str) -> None:
    """Open ``url`` without putting its token on a command line that others could read: the
    browser gets a private file that redirects to it (as Jupyter does)."""
    import tempfile
    import webbrowser

    with tempfile.NamedTemporaryFile(
        "w", suffix=".html", prefix="outbox-dashboard-", delete=False
    ) as page:
        page.write(
            f'<!doctype html><meta http-equiv="refresh" content="0;url={url}">'
            f'<a href="{url}">open the outbox dashboard</a>'
        )
    webbrowser.open(Path(page.name).as_uri())


_UNFINISHED_DELIVERIES = tuple(state.value for state in UNFINISHED_DELIVERY_STATES)


def _parse_age(text: str) -> float:
    seconds = parse_age(text)
    if seconds is None:
        raise errors.InvalidArgument(
            f"--older-than {text!r} is not an age; use a number and s, m, h, d or w (e.g. 30d)"
        )
    return seconds


def _parse_version(text: str) -> int | None:
    if text == "current":
        return None
    if not text.isdigit():
        raise errors.InvalidArgument(
            f"--version {text!r} is not a version; give a whole number or 'current'"
        )
    return int(text)


def _read_data(arg: str) -> Any:
    """``--data``: JSON text, ``@FILE`` or ``-``, read by the drop folder's strict parser (a
    byte-order mark is fine, a key given twice in one object is refused)."""
    if arg == "-":
        content, origin = sys.stdin.buffer.read(), "standard input"
    elif arg.startswith("@"):
        path = Path(arg[1:])
        try:
            content, origin = path.read_bytes(), f"--data file {path}"
        except OSError as exc:
            raise errors.InvalidArgument(
                f"cannot read --data file {path}: {exc.strerror or exc}"
            ) from exc
    else:
        content, origin = arg.encode("utf-8", "surrogateescape"), "--data"
    problem, document = jobfiles.parse(content, what=origin)
    if problem is not None:
        raise errors.InvalidArgument(problem)
    return document


#: Whether this process was started as the ``outbox`` command (:func:`main`) rather than
#: calling the CLI from another program (an app, a test's ``CliRunner``): only then may
#: ``run`` and ``watch`` replace the process to change its malloc settings.
_own_process = False


def _settle_in_for_weeks() -> None:
    """Set malloc up for a process that runs for weeks, before any thread starts (see
    :func:`~outbox.platform.restart_without_thread_caches` and
    :func:`~outbox.platform.keep_malloc_lean`)."""
    if _own_process:
        restart_without_thread_caches()
    keep_malloc_lean()


def main() -> NoReturn:
    """Console entry point."""
    global _own_process
    _own_process = True
    cli.main(prog_name="outbox")
    raise SystemExit(0)  # pragma: no cover - click exits itself
