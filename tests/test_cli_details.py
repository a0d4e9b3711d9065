"""Command-line details: usage errors exit 64, a busy sandbox port is a clear message, and
``--data`` is read by the drop folder's parser (a BOM is fine, a key given twice is not)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from support import run_cli, run_cli_process

from outbox import ExitCode, Outbox


@pytest.mark.parametrize(
    "args",
    [
        ["no-such-command"],
        ["enqueue"],  # the template is missing
        ["enqueue", "invoice"],  # --data is missing
        ["list", "--limit", "zero"],
        ["list", "--state", "lost"],
        ["flush", "--no-such-option"],
        ["templates", "frobnicate"],
        ["--log-format", "xml", "status"],
    ],
)
def test_usage_errors_exit_64(tmp_path: Path, args: list[str]) -> None:
    result = run_cli("--db", str(tmp_path / "j.db"), *args)
    assert result.returncode == int(ExitCode.USAGE) == 64, result.stderr
    assert "Usage: outbox" in result.stderr and "Traceback" not in result.stderr


def test_help_and_version_still_exit_0() -> None:
    assert run_cli("--help").returncode == 0
    assert run_cli("flush", "--help").returncode == 0


def test_data_file_with_a_byte_order_mark_is_read_as_the_drop_folder_reads_it(
    tmp_path: Path,
) -> None:
    db = tmp_path / "j.db"
    job = tmp_path / "job.json"
    job.write_bytes(b"\xef\xbb\xbf" + json.dumps({"customer": {"name": "Bo"}}).encode())
    result = run_cli("--db", str(db), "enqueue", "invoice", "--data", f"@{job}", "--key", "bom")
    assert result.returncode == 0, result.stderr
    from_stdin = run_cli(
        "--db",
        str(db),
        "enqueue",
        "invoice",
        "--data",
        "-",
        "--key",
        "stdin-bom",
        input="\ufeff" + '{"x": 1}',
    )
    assert from_stdin.returncode == 0, from_stdin.stderr
    with Outbox(db) as ob:
        assert ob.get(result.stdout.strip()).data == {"customer": {"name": "Bo"}}
        assert ob.get(from_stdin.stdout.strip()).data == {"x": 1}


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("text", '--data is not valid JSON: the field "name" appears twice in one object'),
        ("file", 'is not valid JSON: the field "name" appears twice in one object'),
        ("stdin", 'standard input is not valid JSON: the field "name" appears twice'),
    ],
)
def test_data_with_a_key_given_twice_is_refused_as_the_drop_folder_refuses_it(
    tmp_path: Path, source: str, problem: str
) -> None:
    db = tmp_path / "j.db"
    text = '{"customer": {"name": "Bo", "name": "Al"}}'
    job = tmp_path / "job.json"
    job.write_text(text)
    arg = {"text": text, "file": f"@{job}", "stdin": "-"}[source]
    result = run_cli("--db", str(db), "enqueue", "invoice", "--data", arg, input=text)
    assert result.returncode == 65 and problem in result.stderr, result.stderr
    with Outbox(db) as ob:
        assert ob.list() == []


def test_data_that_is_not_utf8_or_has_nan_is_refused(tmp_path: Path) -> None:
    db = str(tmp_path / "j.db")
    latin = tmp_path / "latin.json"
    latin.write_bytes('{"name": "Zoë"}'.encode("latin-1"))
    refused = run_cli("--db", db, "enqueue", "invoice", "--data", f"@{latin}")
    assert refused.returncode == 65 and "is not UTF-8 text (byte 0xeb" in refused.stderr
    nan = run_cli("--db", db, "enqueue", "invoice", "--data", '{"amount": NaN}')
    assert nan.returncode == 65 and "NaN is not a JSON number" in nan.stderr


@pytest.mark.e2e
def test_sandbox_on_a_busy_port_says_so_and_exits_75(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli_process(
            "sandbox", "--port", str(port), "--state", str(tmp_path / "state"), timeout=60
        )
    assert result.returncode == 75, result.stderr
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "--port" in result.stderr and "Traceback" not in result.stderr
