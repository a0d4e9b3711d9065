"""The ``outbox sandbox`` command: run the Craftkit-compatible sandbox until stopped.

Its first line of output is always ``Craftkit sandbox listening on http://HOST:PORT`` (with
``--port 0``, the real port), so a parent process can read the base URL from it. Then come
the API keys and a ready-to-paste ``export`` line. SIGINT or SIGTERM stops it cleanly.
"""

from __future__ import annotations

import errno
import os
import re
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import click

from outbox.platform import on_stop_request
from outbox.sandbox.faults import (
    DOWNLOAD_URL_MODES,
    POLL_ANSWER_MODES,
    REDIRECT_STATUSES,
    Faults,
    parse_fault_value,
    parse_size,
)
from outbox.sandbox.runner import Sandbox
from outbox.sandbox.templates import RenderSeconds, TemplateFileError, parse_render_seconds

__all__ = ["main", "parse_seconds_option", "parse_size", "sandbox"]

#: Environment variable that fixes the main project's key (never a flag: `ps` shows flags).
SANDBOX_KEY_ENV = "OUTBOX_SANDBOX_API_KEY"


def parse_seconds_option(text: str) -> RenderSeconds:
    """``"0.3"`` or a range ``"0.2-1.5"`` / ``"0.2,1.5"``."""
    parts = re.split(r"[-,]", text.strip(), maxsplit=1) if not text.startswith("-") else [text]
    try:
        values = [float(p) for p in parts]
    except ValueError as exc:
        raise ValueError(f"not a number of seconds or a range: {text!r}") from exc
    return parse_render_seconds(values[0] if len(values) == 1 else values)


def _size_option(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _seconds_option(ctx: click.Context, param: click.Parameter, value: str) -> RenderSeconds:
    try:
        return parse_seconds_option(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _key_faults_option(
    ctx: click.Context, param: click.Parameter, value: tuple[tuple[str, str], ...]
) -> dict[str, dict[str, Any]]:
    """``--key-fault KEY NAME=VALUE`` (repeated) -> ``{KEY: {NAME: VALUE}}``."""
    keys: dict[str, dict[str, Any]] = {}
    for key, setting in value:
        name, equals, text = setting.partition("=")
        if not equals:
            raise click.BadParameter(f"{setting!r} is not NAME=VALUE")
        try:
            keys.setdefault(key, {})[name.strip()] = parse_fault_value(name.strip(), text)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from exc
    return keys


_PROBABILITY = click.FloatRange(0.0, 1.0)
_RATE = click.FloatRange(min=0.0, min_open=True)

_EPILOG = f"""\b
Faults can also be changed while the sandbox runs: POST /_sandbox/faults
with a JSON object of fault names (the options above with _ for -), e.g.
  {{"slow_body": 20, "keys": {{"entry-3": {{"poll_answer": "garbage_json"}}}}}}
GET /_sandbox/faults shows them; GET /_sandbox/stats counts what happened.

\b
--key-fault KEY NAME=VALUE poisons only the render made with idempotency
key KEY (its POST, polls, downloads, shares and emails); NAME is one of:
{textwrap.fill(", ".join(Faults.per_key_names()), 72, initial_indent="  ", subsequent_indent="  ")}
"""


@click.command("sandbox", epilog=_EPILOG)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port",
    default=8787,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0 picks a free one).",
)
@click.option(
    "--state",
    "state_dir",
    default="./sandbox-state",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder holding renders, keys, templates and shares across restarts.",
)
@click.option(
    "--templates",
    "templates_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Templates JSON file (default: the built-in set).",
)
@click.option(
    "--render-seconds",
    default="0.3",
    show_default=True,
    callback=_seconds_option,
    help="Time from creation to the final status, or a MIN-MAX range.",
)
@click.option(
    "--pdf-size", callback=_size_option, help="Pad every PDF to about this size (e.g. 100MB)."
)
@click.option(
    "--no-public-bucket",
    is_flag=True,
    help="downloadUrl is always null; only the private stream serves PDFs.",
)
@click.option("--seed", type=int, help="Seed for reproducible fault randomness.")
@click.option(
    "--latency", default=0.0, type=click.FloatRange(min=0.0), help="Seconds added to every request."
)
@click.option(
    "--error-500-before",
    default=0.0,
    type=_PROBABILITY,
    help="Probability of 500 on a render, share or email POST before creating.",
)
@click.option(
    "--error-503-before",
    default=0.0,
    type=_PROBABILITY,
    help="Probability of 503 queue_unavailable on a create POST before creating.",
)
@click.option(
    "--error-429-before",
    default=0.0,
    type=_PROBABILITY,
    help="Probability of 429 rate_limited on a create POST before creating.",
)
@click.option(
    "--error-500-after",
    default=0.0,
    type=_PROBABILITY,
    help="Probability of 500 after a render, share or email was created.",
)
@click.option(
    "--drop-after",
    default=0.0,
    type=_PROBABILITY,
    help="Probability of closing the connection after a render, share or email was created.",
)
@click.option(
    "--truncate-downloads",
    default=0.0,
    type=_PROBABILITY,
    help="Probability that a PDF download is cut short.",
)
@click.option(
    "--hang",
    default=0.0,
    type=_PROBABILITY,
    help="Probability that a /v1 request hangs for --hang-seconds.",
)
@click.option(
    "--hang-seconds",
    default=600.0,
    show_default=True,
    type=click.FloatRange(min=0.0),
    help="How long a hanging request waits.",
)
@click.option(
    "--rate-limit",
    type=_RATE,
    help="Requests per second allowed on /v1 (429 with Retry-After above it).",
)
@click.option(
    "--captive-portal", is_flag=True, help="Answer every request with a Wi-Fi login page."
)
@click.option(
    "--redirect-post",
    type=click.Choice([str(s) for s in REDIRECT_STATUSES]),
    callback=lambda ctx, param, value: int(value) if value else None,
    help="Answer every /v1 POST with this redirect to itself (nothing is created).",
)
@click.option(
    "--retry-after",
    metavar="TEXT",
    help="Raw Retry-After header of every 429 and 503 (e.g. nan, inf, -5, 1e12).",
)
@click.option(
    "--duration-ms",
    metavar="LITERAL",
    help="Raw durationMs of finished renders (NaN, Infinity, -1, 1e308).",
)
@click.option(
    "--poll-answer",
    type=click.Choice(POLL_ANSWER_MODES),
    help="Poison GET /v1/renders/:id answers.",
)
@click.option(
    "--render-id",
    metavar="PATTERN",
    help="Show render ids as PATTERN, {id} being the real id (e.g. '../../{id}').",
)
@click.option(
    "--slow-body", type=_RATE, metavar="BYTES/S", help="Drip every response body at this rate."
)
@click.option("--slow-pdf", type=_RATE, metavar="BYTES/S", help="Drip PDF bodies at this rate.")
@click.option("--huge-poll", metavar="SIZE", help="Pad poll answers to SIZE (e.g. 300MB).")
@click.option("--huge-errors", metavar="SIZE", help="Pad error bodies to SIZE.")
@click.option("--huge-pdf", metavar="SIZE", help="Pad PDFs to SIZE.")
@click.option("--pdf-no-length", is_flag=True, help="Send PDFs chunked, without Content-Length.")
@click.option(
    "--download-url",
    type=click.Choice(DOWNLOAD_URL_MODES),
    help="Break the public downloadUrl (the private stream keeps working).",
)
@click.option(
    "--email-not-configured", is_flag=True, help="Emails answer 503 email_not_configured."
)
@click.option(
    "--email-send-failed",
    default=0.0,
    type=_PROBABILITY,
    help="Probability that an email answers 502 email_send_failed.",
)
@click.option(
    "--fail-render",
    metavar="MESSAGE",
    help="Renders end failed with this errorMessage (usually per key: --key-fault).",
)
@click.option(
    "--key-fault",
    "keys",
    nargs=2,
    multiple=True,
    metavar="KEY NAME=VALUE",
    callback=_key_faults_option,
    help="Set a fault for the render of one idempotency key only (repeatable).",
)
def sandbox(
    host: str,
    port: int,
    state_dir: Path,
    templates_file: Path | None,
    render_seconds: RenderSeconds,
    pdf_size: int | None,
    no_public_bucket: bool,
    seed: int | None,
    **fault_options: Any,
) -> None:
    """Run a local Craftkit-compatible sandbox server until Ctrl-C.

    The main project's key is generated and kept in the state folder; to choose it, set
    OUTBOX_SANDBOX_API_KEY (keys are never taken from the command line, where `ps` shows them).
    """
    api_key = os.environ.get(SANDBOX_KEY_ENV) or None
    try:
        sb = Sandbox(
            state_dir=state_dir,
            host=host,
            port=port,
            templates=templates_file,
            render_seconds=render_seconds,
            public_bucket=not no_public_bucket,
            pdf_size=pdf_size,
            faults=Faults(**fault_options),
            seed=seed,
            api_key=api_key,
        )
    except (TemplateFileError, ValueError, TypeError) as exc:
        raise click.UsageError(str(exc)) from exc
    stop = threading.Event()
    with on_stop_request(stop.set):
        try:
            try:
                sb.start()
            except OSError as exc:
                raise _cannot_listen(host, port, exc) from exc
            click.echo(f"Craftkit sandbox listening on {sb.base_url}")
            click.echo(f"API key: {sb.api_key}")
            click.echo(f"Other project's key: {sb.other_project_key}")
            click.echo(f"State: {sb.state_dir}")
            click.echo(f"export CRAFTKIT_BASE_URL={sb.base_url} CRAFTKIT_API_KEY={sb.api_key}")
            if host in ("0.0.0.0", "::", ""):
                click.echo(
                    f"Listening on all interfaces: other devices use this machine's "
                    f"address and port {sb.port}."
                )
            click.echo("Press Ctrl-C to stop.")
            sys.stdout.flush()
            while not stop.wait(0.5):
                pass
        finally:
            sb.stop()
    click.echo("Craftkit sandbox stopped.")


class _PortBusy(click.ClickException):
    """The port is taken: 75, try again once it is free (or choose another)."""

    exit_code = 75


class _CannotListen(click.ClickException):
    """The address or port cannot be used here (no such address, a privileged port): 78."""

    exit_code = 78


def _cannot_listen(host: str, port: int, exc: OSError) -> click.ClickException:
    if exc.errno == errno.EADDRINUSE:
        return _PortBusy(
            f"port {port} on {host} is already in use (another sandbox?): stop what listens "
            "there, or choose another port with --port (0 picks a free one)"
        )
    return _CannotListen(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def main() -> None:
    """Entry point of ``python -m outbox.sandbox``."""
    sandbox.main(prog_name="python -m outbox.sandbox")
