"""The ``outbox sandbox`` command: run the Craftkit-compatible sandbox until stopped.

Its first line of output is always ``Craftkit sandbox listening on http://HOST:PORT`` (with
``--port 0``, the real port), so a parent process can read the base URL from it. Then come
the API keys and a ready-to-paste ``export`` line. SIGINT or SIGTERM stops it cleanly.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import click

from outbox.sandbox.faults import Faults
from outbox.sandbox.runner import Sandbox
from outbox.sandbox.templates import RenderSeconds, TemplateFileError, parse_render_seconds

#: Environment variable that fixes the main project's key (never a flag: `ps` shows flags).
SANDBOX_KEY_ENV = "OUTBOX_SANDBOX_API_KEY"

_SIZE = re.compile(r"(?i)\s*([0-9]+(?:\.[0-9]+)?)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?\s*")
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_size(text: str) -> int:
    """``"5000"``, ``"64k"``, ``"100MB"``, ``"1.5MiB"`` -> bytes."""
    match = _SIZE.fullmatch(text)
    if not match:
        raise ValueError(f"not a size: {text!r}")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])


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


_PROBABILITY = click.FloatRange(0.0, 1.0)


@click.command("sandbox")
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
    help="Folder holding renders, keys and templates across restarts.",
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
@click.option(
    "--latency", default=0.0, type=click.FloatRange(min=0.0), help="Seconds added to every request."
)
@click.option(
    "--error-500-before",
    default=0.0,
    type=_PROBABILITY,
    help="Probability of 500 on a render POST before creating.",
)
@click.option(
    "--error-503-before",
    default=0.0,
    type=_PROBABILITY,
    help="Probability of 503 queue_unavailable on a render POST before creating.",
)
@click.option(
    "--error-500-after",
    default=0.0,
    type=_PROBABILITY,
    help="Probability of 500 after a render was created.",
)
@click.option(
    "--drop-after",
    default=0.0,
    type=_PROBABILITY,
    help="Probability of closing the connection after a render was created.",
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
    type=click.FloatRange(min=0.0, min_open=True),
    help="Requests per second allowed on /v1 (429 with Retry-After above it).",
)
@click.option(
    "--captive-portal", is_flag=True, help="Answer every request with a Wi-Fi login page."
)
@click.option("--seed", type=int, help="Seed for reproducible fault randomness.")
def sandbox(
    host: str,
    port: int,
    state_dir: Path,
    templates_file: Path | None,
    render_seconds: RenderSeconds,
    pdf_size: int | None,
    no_public_bucket: bool,
    latency: float,
    error_500_before: float,
    error_503_before: float,
    error_500_after: float,
    drop_after: float,
    truncate_downloads: float,
    hang: float,
    hang_seconds: float,
    rate_limit: float | None,
    captive_portal: bool,
    seed: int | None,
) -> None:
    """Run a local Craftkit-compatible sandbox server until Ctrl-C.

    The main project's key is generated and kept in the state folder; to choose it, set
    OUTBOX_SANDBOX_API_KEY (keys are never taken from the command line, where `ps` shows them).
    """
    api_key = os.environ.get(SANDBOX_KEY_ENV) or None
    faults = Faults(
        latency=latency,
        error_500_before=error_500_before,
        error_503_before=error_503_before,
        error_500_after=error_500_after,
        drop_after=drop_after,
        rate_limit=rate_limit,
        truncate_downloads=truncate_downloads,
        hang=hang,
        hang_seconds=hang_seconds,
        captive_portal=captive_portal,
    )
    try:
        sb = Sandbox(
            state_dir=state_dir,
            host=host,
            port=port,
            templates=templates_file,
            render_seconds=render_seconds,
            public_bucket=not no_public_bucket,
            pdf_size=pdf_size,
            faults=faults,
            seed=seed,
            api_key=api_key,
        )
    except (TemplateFileError, ValueError) as exc:
        raise click.UsageError(str(exc)) from exc
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            sb.start()
        except OSError as exc:
            raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from exc
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
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("Craftkit sandbox stopped.")


def main() -> None:
    """Entry point of ``python -m outbox.sandbox``."""
    sandbox.main(prog_name="python -m outbox.sandbox")
