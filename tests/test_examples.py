"""The README's first command runs the demo: it must keep working, end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pypdf
import pytest

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_demo_enqueues_offline_then_flushes_pdfs_to_disk(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "flush while offline: exit code 75" in result.stdout
    assert "rendered 3 PDFs for 3 jobs" in result.stdout
    pdfs = sorted((tmp_path / "demo-output" / "renders").glob("*.pdf"))
    assert [p.name for p in pdfs] == ["invoice-2026-005.pdf", "north-42.pdf", "south-7.pdf"]
    for pdf in pdfs:
        assert "Template:" in pypdf.PdfReader(pdf, strict=True).pages[0].extract_text()


def test_field_app_example_runs_against_the_sandbox(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "field_app.py"), "--sandbox"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "downloading -> done" in result.stdout
    assert (tmp_path / "renders" / "field-app-demo.pdf").exists()
