"""The ``sandbox`` command: banner, serving and a clean stop on signals as a real process
(end to end); option checks in-process."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from support import process_env

from outbox.sandbox.cli import parse_seconds_option, parse_size, sandbox


@contextmanager
def running(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """Start ``python -m outbox.sandbox ARGS`` and read its five banner lines."""
    process = subprocess.Popen(
        [sys.executable, "-m", "outbox.sandbox", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=process_env(env),
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline().rstrip("\n") for _ in range(5)]
        yield process, lines
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()  # reads what is left and closes the pipes


@pytest.mark.e2e
def test_command_prints_its_url_and_key_and_stops_cleanly(tmp_path: Path) -> None:
    with running("--port", "0", "--render-seconds", "0", cwd=tmp_path) as (process, lines):
        prefix = "Craftkit sandbox listening on "
        assert lines[0].startswith(prefix), lines
        base_url = lines[0][len(prefix) :]
        assert base_url.startswith("http://127.0.0.1:") and not base_url.endswith(":0")
        key = lines[1].split("API key: ")[1]
        assert key.startswith("ck_test_")
        assert lines[4] == f"export CRAFTKIT_BASE_URL={base_url} CRAFTKIT_API_KEY={key}"
        assert httpx.get(f"{base_url}/health").json() == {"status": "ok"}
        headers = {"Authorization": f"Bearer {key}"}
        created = httpx.post(
            f"{base_url}/v1/templates/invoice/render",
            headers=headers,
            json={"data": {"customer": {"name": "A"}, "amount": 1}},
        )
        assert created.status_code == 202
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    assert (tmp_path / "sandbox-state").is_dir()  # the default state folder
    # Started again on the same folder: the same key, the same render.
    with running("--port", "0", cwd=tmp_path) as (process, lines):
        base_url = lines[0].split(" on ")[1]
        assert lines[1].split("API key: ")[1] == key
        polled = httpx.get(f"{base_url}/v1/renders/{created.json()['id']}", headers=headers)
        assert polled.json()["status"] == "succeeded"
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0


@pytest.mark.e2e
def test_command_applies_fault_flags(tmp_path: Path) -> None:
    args = (
        "--port",
        "0",
        "--state",
        str(tmp_path / "s"),
        "--error-503-before",
        "1",
        "--no-public-bucket",
        "--seed",
        "1",
    )
    with running(*args, cwd=tmp_path, env={"OUTBOX_SANDBOX_API_KEY": "ck_test_cli"}) as (
        process,
        lines,
    ):
        base_url = lines[0].split(" on ")[1]
        assert lines[1] == "API key: ck_test_cli"
        response = httpx.post(
            f"{base_url}/v1/templates/invoice/render",
            headers={"Authorization": "Bearer ck_test_cli"},
            json={"data": {}},
        )
        assert response.status_code == 503
        faults = httpx.get(f"{base_url}/_sandbox/faults").json()
        assert faults["error_503_before"] == 1.0
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0


@pytest.mark.e2e
def test_command_applies_hostile_and_per_key_fault_flags(tmp_path: Path) -> None:
    args = (
        "--port",
        "0",
        "--render-seconds",
        "0",
        "--state",
        str(tmp_path / "s"),
        "--retry-after",
        "nan",
        "--download-url",
        "refused",
        "--slow-pdf",
        "1000",
        "--huge-errors",
        "64k",
        "--redirect-post",
        "307",
        "--email-send-failed",
        "0.5",
        "--key-fault",
        "healthy",
        "redirect_post=",
        "--key-fault",
        "bad",
        "poll_answer=garbage_json",
        "--key-fault",
        "bad",
        "huge_pdf=2MB",
        "--key-fault",
        "other",
        "pdf_no_length=true",
    )
    with running(*args, cwd=tmp_path) as (process, lines):
        base_url = lines[0].split(" on ")[1]
        faults = httpx.get(f"{base_url}/_sandbox/faults").json()
        assert faults["retry_after"] == "nan" and faults["download_url"] == "refused"
        assert faults["slow_pdf"] == 1000 and faults["huge_errors"] == 65536
        assert faults["redirect_post"] == 307 and faults["email_send_failed"] == 0.5
        assert faults["keys"] == {
            "healthy": {"redirect_post": None},
            "bad": {"poll_answer": "garbage_json", "huge_pdf": 2_000_000},
            "other": {"pdf_no_length": True},
        }
        key = lines[1].split("API key: ")[1]
        url = f"{base_url}/v1/templates/invoice/render"
        body = {"data": {"customer": {"name": "A"}, "amount": 1}}
        moved = httpx.post(url, headers={"Authorization": f"Bearer {key}"}, json=body)
        assert moved.status_code == 307
        healthy = httpx.post(
            url, headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "healthy"}, json=body
        )
        assert healthy.status_code == 202
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0


def test_command_lists_fault_names_in_its_help() -> None:
    result = CliRunner().invoke(sandbox, ["--help"])
    assert result.exit_code == 0
    for name in ("poll_answer", "download_url", "slow_body", "huge_poll", "email_send_failed"):
        assert name in result.output
    for flag in ("--key-fault", "--slow-pdf", "--retry-after", "--duration-ms", "--render-id"):
        assert flag in result.output
    assert "/_sandbox/faults" in result.output


def test_command_refuses_bad_options(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(sandbox, ["--pdf-size", "huge"])
    assert result.exit_code == 2 and "not a size" in result.output
    result = runner.invoke(sandbox, ["--render-seconds", "3-1"])
    assert result.exit_code == 2
    result = runner.invoke(sandbox, ["--drop-after", "2"])
    assert result.exit_code == 2
    result = runner.invoke(sandbox, ["--key-fault", "k", "explode=1"])
    assert result.exit_code == 2 and "unknown fault" in result.output
    result = runner.invoke(sandbox, ["--key-fault", "k", "latency=1"])
    assert result.exit_code == 2 and "cannot be set for one key" in result.output
    result = runner.invoke(sandbox, ["--key-fault", "k", "poll_answer"])
    assert result.exit_code == 2 and "NAME=VALUE" in result.output
    result = runner.invoke(sandbox, ["--render-id", "../../x"])
    assert result.exit_code == 2 and "{id}" in result.output
    result = runner.invoke(sandbox, ["--huge-poll", "lots"])
    assert result.exit_code == 2 and "huge_poll" in result.output
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    result = runner.invoke(sandbox, ["--templates", str(bad), "--state", str(tmp_path / "s")])
    assert result.exit_code == 2 and "not valid JSON" in result.output


def test_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(sandbox, ["--port", str(port), "--state", str(tmp_path / "s")])
    assert result.exit_code == 75  # try again once it is free
    assert f"port {port} on 127.0.0.1 is already in use" in result.output


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("5000", 5000),
        ("64k", 65536),
        ("100MB", 100_000_000),
        ("1.5MiB", 1572864),
        ("2g", 2**31),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_parse_seconds_option() -> None:
    assert parse_seconds_option("0.3") == 0.3
    assert parse_seconds_option("0.2-1.5") == (0.2, 1.5)
    assert parse_seconds_option("1,2") == (1.0, 2.0)
    with pytest.raises(ValueError):
        parse_seconds_option("-1")
    with pytest.raises(ValueError):
        parse_seconds_option("soon")
