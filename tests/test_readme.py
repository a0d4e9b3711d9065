"""The README's command-line session runs as written, against the sandbox, in a real shell."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support import process_env

from outbox.sandbox import Sandbox

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parent.parent / "README.md"
MARKER = "<!-- the CLI block: tests/test_readme.py runs it -->"


def cli_block() -> str:
    """The ```sh block right after the marker, as it stands in the README."""
    text = README.read_text()
    found = re.search(re.escape(MARKER) + r"\n```sh\n(.*?)\n```\n", text, re.S)
    assert found, "the README's CLI block (with its marker) is gone"
    return found.group(1)


def test_the_readme_cli_block_runs_as_written(tmp_path: Path) -> None:
    script = cli_block()
    assert script.count("\noutbox ") >= 10  # the session, not an empty block
    with Sandbox(render_seconds=0.05) as sb:
        env = process_env(
            {
                "CRAFTKIT_BASE_URL": sb.base_url,
                "CRAFTKIT_API_KEY": sb.api_key,
                # `outbox` as installed beside this Python, first on the PATH.
                "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
            }
        )
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"^synced \d+ templates", out, re.M)
    assert "this run  submitted 2, done 2, failed 0, rejected 0" in out
    pdfs = sorted((tmp_path / "renders").glob("*.pdf"))
    assert len(pdfs) == 2
    assert [p for p in pdfs if f"\n{p}\n" in out]  # `outbox path "$id"` printed one of them
    assert "would purge 0 finished entries older than 30d (dry run)" in out
    assert "OK    api key    accepted by Craftkit" in out
    assert "Traceback" not in result.stderr
