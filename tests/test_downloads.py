"""Saving PDFs: verification, atomic naming, never outside the folder, never over another file."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import count_folder_listings

from outbox.downloads import safe_filename, save_pdf
from outbox.errors import DownloadError
from outbox.files import folder_names

PDF = b"%PDF-1.4\n" + b"x" * 1000 + b"\n%%EOF\n"


def test_a_complete_pdf_is_saved_with_its_size_and_hash(tmp_path: Path) -> None:
    saved = save_pdf(
        [PDF[:500], PDF[500:]], folder=tmp_path, name="a.pdf", entry_id="e1", expected_size=len(PDF)
    )
    assert saved.path == tmp_path / "a.pdf" and saved.path.read_bytes() == PDF
    assert (saved.size, saved.sha256) == (len(PDF), hashlib.sha256(PDF).hexdigest())
    assert [p.name for p in tmp_path.iterdir()] == ["a.pdf"]


@pytest.mark.parametrize(
    ("chunks", "expected", "message"),
    [
        ([PDF[:300]], len(PDF), "truncated: 300 of"),
        ([PDF, b"extra"], len(PDF), "more than the announced"),
        ([b"<html>login</html>"], None, "not a PDF"),
        ([PDF[:-8]], None, "no %%EOF"),
    ],
)
def test_incomplete_or_foreign_bodies_are_never_kept(
    tmp_path: Path, chunks: list[bytes], expected: int | None, message: str
) -> None:
    with pytest.raises(DownloadError, match=message):
        save_pdf(chunks, folder=tmp_path, name="a.pdf", entry_id="e1", expected_size=expected)
    assert list(tmp_path.iterdir()) == []


def test_another_entrys_file_is_never_overwritten(tmp_path: Path) -> None:
    other = b"%PDF-1.4 another entry's report %%EOF"
    (tmp_path / "report.pdf").write_bytes(other)
    saved = save_pdf([PDF], folder=tmp_path, name="report.pdf", entry_id="e2", expected_size=None)
    assert saved.path.name == "report (2).pdf"
    assert (tmp_path / "report.pdf").read_bytes() == other


def test_a_crash_after_saving_reuses_the_same_file(tmp_path: Path) -> None:
    first = save_pdf([PDF], folder=tmp_path, name="r.pdf", entry_id="e3", expected_size=None)
    (tmp_path / ".outbox-e3-dead.part").write_bytes(b"half")  # a crashed earlier attempt
    (tmp_path / ".outbox-e33-live.part").write_bytes(b"half")  # another entry's, not ours
    again = save_in_a_new_process(tmp_path, name="r.pdf", entry_id="e3")
    assert again == str(first.path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".outbox-e33-live.part", "r.pdf"]


def save_in_a_new_process(folder: Path, *, name: str, entry_id: str) -> str:
    """save_pdf as the process that comes after a crash runs it: one that lists the folder
    afresh. Returns the saved path."""
    code = (
        "import sys; from pathlib import Path; from outbox.downloads import save_pdf; "
        "print(save_pdf([sys.stdin.buffer.read()], folder=Path(sys.argv[1]), name=sys.argv[2], "
        "entry_id=sys.argv[3], expected_size=None).path)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(folder), name, entry_id],
        input=PDF,
        capture_output=True,
        check=True,
    )
    return done.stdout.decode().strip()


def test_leftovers_are_found_without_listing_the_folder_for_each_save(tmp_path: Path) -> None:
    for n in range(3):
        (tmp_path / f"old-{n}.pdf").write_bytes(PDF)
    (tmp_path / ".outbox-e5-dead.part").write_bytes(b"half")
    with pytest.MonkeyPatch.context() as patch:
        listings = count_folder_listings(patch)
        for n in range(5, 25):
            save_pdf([PDF], folder=tmp_path, name=f"n{n}.pdf", entry_id=f"e{n}", expected_size=None)
    assert len(listings) == 1, "the folder is listed once, then kept up to date"
    assert not (tmp_path / ".outbox-e5-dead.part").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd.pdf"),
        ("..\\..\\boot.pdf", "boot.pdf"),
        (".hidden.pdf", "hidden.pdf"),
        ("", "entry-1.pdf"),
        (None, "entry-1.pdf"),
        ("a/b/c.PDF", "c.pdf"),
        ("bad:name?.pdf", "bad_name_.pdf"),
        ("Prüfbericht Nord.pdf", "Prüfbericht Nord.pdf"),
        ("x" * 300 + ".pdf", "x" * 251 + ".pdf"),  # 255 bytes
        ("é" * 200 + ".pdf", "é" * 125 + ".pdf"),  # 254 bytes: no half character
        ("CON.pdf", "CON_.pdf"),
        ("nul.PDF", "nul_.pdf"),
        ("a:b.pdf", "a_b.pdf"),
        ("Q&A #3 [draft].pdf", "Q&A #3 [draft].pdf"),  # valid everywhere: kept
        ("report. .pdf", "report.pdf"),
        ("CON", "CON_.pdf"),
    ],
)
def test_file_names_are_sanitised(name: str | None, expected: str) -> None:
    assert safe_filename(name, "entry-1") == expected


def test_a_name_another_process_added_while_we_downloaded_is_seen(tmp_path: Path) -> None:
    """``Report.pdf`` appears (another process, a user) after this process last listed the
    folder and before its next save ends: that save must see it, not only its own changes."""
    save_pdf([PDF], folder=tmp_path, name="first.pdf", entry_id="e1", expected_size=None)
    os.utime(tmp_path, ns=(0, 10**9))  # the folder's clock before the other process's change
    assert not folder_names(tmp_path).in_another_case("nothing.pdf")  # listed as of that time
    (tmp_path / "Report.pdf").write_bytes(b"%PDF-1.4 someone else's %%EOF")
    saved = save_pdf([PDF], folder=tmp_path, name="report.pdf", entry_id="e2", expected_size=None)
    assert saved.path.name == "report (2).pdf"
    assert (tmp_path / "Report.pdf").read_bytes() == b"%PDF-1.4 someone else's %%EOF"
