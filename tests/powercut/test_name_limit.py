"""A downloads folder on a file system that takes shorter names than most (eCryptfs: 143 bytes,
served here by the FUSE test file system with its name limit set): a ``filename`` that cannot
fit is refused at enqueue, and a PDF whose name was accepted elsewhere is saved under a name
that fits, instead of waiting in ``downloading`` for ever with "File name too long"."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from disk import PowerCutDisk
from support import INSPECTION, connected, run_cli

from outbox import InvalidArgument, Outbox, State
from outbox.downloads import save_pdf
from outbox.platform import name_limit
from outbox.sandbox import Sandbox

LIMIT = 143
PDF = b"%PDF-1.7\n" + b"x" * 500 + b"\n%%EOF\n"
#: 184 bytes in UTF-8: fine on ext4, too long for this disk.
LONG = "報" * 60 + ".pdf"
#: Exactly 143 bytes.
FITS = "報" * 46 + "a.pdf"


@pytest.fixture
def short_names(tmp_path: Path) -> Iterator[Path]:
    """The root of a mounted file system that takes names of at most 143 bytes."""
    disk = PowerCutDisk(tmp_path / "disk", name_max=LIMIT)
    disk.mount()
    try:
        yield disk.mountpoint
    finally:
        disk.close()


def test_the_limit_is_read_from_the_folder_or_its_nearest_existing_parent(
    short_names: Path, tmp_path: Path
) -> None:
    assert len(FITS.encode()) == LIMIT
    assert name_limit(short_names) == LIMIT
    assert name_limit(short_names / "not" / "made" / "yet") == LIMIT
    assert name_limit(tmp_path) == 255


def test_enqueue_refuses_a_name_the_downloads_folder_cannot_hold(
    short_names: Path, tmp_path: Path
) -> None:
    db = tmp_path / "j.db"
    downloads = short_names / "pdfs"
    with Outbox(db, downloads=downloads) as ob:
        with pytest.raises(
            InvalidArgument,
            match=f"184 bytes in UTF-8; the file system holding {downloads} allows at most 143",
        ):
            ob.enqueue("inspection-report", INSPECTION, filename=LONG)
        with pytest.raises(InvalidArgument, match="allows at most 143"):
            ob.enqueue_many(
                [{"template": "inspection-report", "data": INSPECTION, "filename": LONG}]
            )
        assert ob.list() == []
        assert ob.enqueue("inspection-report", INSPECTION, filename=FITS).filename == FITS
    result = run_cli(
        "--db",
        str(db),
        "enqueue",
        "inspection-report",
        "--data",
        '{"inspector": "A", "site": "S"}',
        "--filename",
        LONG,
        env={"OUTBOX_DOWNLOADS": str(downloads)},
    )
    assert result.returncode == 65, result.stderr
    assert "allows at most 143" in result.stderr and "Traceback" not in result.stderr


def test_a_name_accepted_elsewhere_is_shortened_to_fit_and_numbered(short_names: Path) -> None:
    saved = [
        save_pdf(
            [PDF + bytes([n])], folder=short_names, name=LONG, entry_id=f"e{n}", expected_size=None
        )
        for n in range(3)
    ]
    names = [s.path.name for s in saved]
    assert all(len(name.encode()) <= LIMIT and name.endswith(".pdf") for name in names), names
    assert names[0].startswith("報" * 40)
    assert names[1].endswith(" (2).pdf") and names[2].endswith(" (3).pdf")
    assert [s.path.read_bytes() for s in saved] == [PDF + bytes([n]) for n in range(3)]


def test_an_old_entry_with_a_long_name_is_done_not_stuck(short_names: Path, tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    with Outbox(db) as ob:  # its downloads folder on the ordinary disk: the name was fine there
        entry = ob.enqueue("inspection-report", INSPECTION, filename=LONG)
    with (
        Sandbox(render_seconds=0.05, seed=3) as sb,
        connected(db, sb, downloads=short_names / "pdfs") as ob,
    ):
        report = ob.flush(timeout=30)
        done = ob.get(entry.id)
        assert done.state is State.DONE, (done.error, report.problems)
        saved = Path(done.pdf_path or "")
        assert saved.parent == short_names / "pdfs" and len(saved.name.encode()) <= LIMIT
        assert saved.read_bytes().startswith(b"%PDF-")
