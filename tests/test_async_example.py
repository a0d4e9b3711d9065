"""examples/async_app.py: a gateway that takes jobs over a socket and streams their states."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from support import process_env

pytestmark = pytest.mark.e2e  # the example runs as a real process

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_async_gateway_streams_each_connection_its_entries_until_done(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, str(EXAMPLES / "async_app.py"), "--sandbox", "--port", "0"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
        env=process_env(),
    ) as app:
        try:
            assert app.stdout is not None
            first = app.stdout.readline()
            assert first.startswith("listening on "), first
            host, port = first.split()[-1].rsplit(":", 1)
            jobs = [
                {"template": "inspection-report", "data": {"inspector": "Ada", "site": s}, "key": k}
                for s, k in (("North", "north-42"), ("South", "south-7"))
            ]
            with socket.create_connection((host, int(port)), timeout=60) as conn:
                lines = [json.dumps(job) for job in jobs] + ["not json", json.dumps(jobs[0])]
                conn.sendall(("\n".join(lines) + "\n").encode())
                conn.shutdown(socket.SHUT_WR)  # no more jobs; answers keep coming
                received = b""
                while chunk := conn.recv(65536):
                    received += chunk
            answers = [json.loads(line) for line in received.decode().splitlines()]
        finally:
            app.send_signal(signal.SIGTERM)
            rest, _ = app.communicate(timeout=60)
    assert app.returncode == 0
    assert rest.splitlines()[-1] == "stopped"
    errors = [a["error"] for a in answers if "id" not in a]
    assert len(errors) == 1 and "Expecting value" in errors[0]
    by_key: dict[str, list[str]] = {}
    for answer in answers:
        if "key" in answer:
            by_key.setdefault(answer["key"], []).append(answer["state"])
    # The same job twice is one entry: the second line got the entry as it stood.
    assert set(by_key) == {"north-42", "south-7"}
    for states in by_key.values():
        assert states[0] in ("pending", "submitted", "downloading", "done")
        assert states[-1] == "done"
    done = [a for a in answers if a.get("state") == "done"]
    assert len({a["id"] for a in done}) == 2
    for answer in done:
        pdf = Path(answer["pdf_path"])
        assert pdf.parent == tmp_path / "renders"
        assert pdf.read_bytes().startswith(b"%PDF-")
    with contextlib.closing(sqlite3.connect(tmp_path / "gateway.db")) as db:
        assert db.execute("SELECT count(*) FROM entries").fetchone()[0] == 2
        leased = db.execute("SELECT count(*) FROM entries WHERE lease_owner IS NOT NULL")
        assert leased.fetchone()[0] == 0
