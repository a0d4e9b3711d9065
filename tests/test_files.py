"""Safe file operations: claiming names without overwriting, atomic writes, no-hard-link fallback.

File systems without hard links (FAT on SD cards) are simulated by making ``os.link`` fail the way
they do; everything else runs on the real file system.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from outbox import Outbox
from outbox.downloads import save_pdf
from outbox.files import hard_link, rename_if_free, write_atomically
from outbox.platform import NO_HARD_LINK_ERRNOS
from outbox.watcher import DropFolder

PDF = b"%PDF-1.4\n" + b"x" * 1000 + b"\n%%EOF\n"


@pytest.fixture(params=sorted(NO_HARD_LINK_ERRNOS), ids=errno.errorcode.get)
def no_hard_links(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """``link()`` fails as it does on a file system without hard links; returns the errno."""
    code: int = request.param

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "link", refuse)
    return code


def test_hard_link_claims_a_free_name_and_never_a_taken_one(tmp_path: Path) -> None:
    source, target = tmp_path / "a", tmp_path / "b"
    source.write_text("mine")
    assert hard_link(source, target)
    assert os.path.samefile(source, target)
    other = tmp_path / "c"
    other.write_text("someone else's")
    with pytest.raises(FileExistsError):
        hard_link(source, other)
    assert other.read_text() == "someone else's"
    with pytest.raises(FileNotFoundError):
        hard_link(tmp_path / "gone", tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_hard_link_never_follows_a_symbolic_link(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("outside")
    (tmp_path / "link").symlink_to(secret)
    assert hard_link(tmp_path / "link", tmp_path / "claimed")
    assert (tmp_path / "claimed").is_symlink()  # the link itself got the name, not its target


def test_hard_link_reports_a_file_system_without_links(tmp_path: Path, no_hard_links: int) -> None:
    (tmp_path / "a").write_text("mine")
    assert hard_link(tmp_path / "a", tmp_path / "b") is False
    assert not (tmp_path / "b").exists()


def test_other_link_errors_are_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "link", broken)
    (tmp_path / "a").write_text("mine")
    with pytest.raises(OSError, match="I/O error"):
        hard_link(tmp_path / "a", tmp_path / "b")


def test_rename_if_free_never_replaces_a_file(tmp_path: Path) -> None:
    source, taken, free = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    source.write_text("mine")
    taken.write_text("theirs")
    assert rename_if_free(source, taken) is False
    assert (source.read_text(), taken.read_text()) == ("mine", "theirs")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert rename_if_free(source, tmp_path / "dangling") is False  # a link is a taken name too
    assert rename_if_free(source, free) is True
    assert free.read_text() == "mine" and not source.exists()
    with pytest.raises(FileNotFoundError):
        rename_if_free(source, tmp_path / "d")


def test_write_atomically_replaces_the_whole_file_and_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    path = tmp_path / "result.json"
    path.write_text("old")
    write_atomically(path, "new ✓\n")
    assert path.read_text(encoding="utf-8") == "new ✓\n"
    assert os.listdir(tmp_path) == ["result.json"]


def test_a_failed_atomic_write_keeps_the_old_content_and_no_temporary_file(
    tmp_path: Path,
) -> None:
    taken = tmp_path / "a-folder"
    (taken / "inside").mkdir(parents=True)
    with pytest.raises(OSError):
        write_atomically(taken, "text")  # cannot replace a non-empty folder with a file
    assert sorted(os.listdir(tmp_path)) == ["a-folder"]
    assert os.listdir(taken) == ["inside"]


def test_downloads_land_without_hard_links_and_never_overwrite(
    tmp_path: Path, no_hard_links: int
) -> None:
    other = b"%PDF-1.4 another entry's report %%EOF"
    (tmp_path / "report.pdf").write_bytes(other)
    saved = save_pdf([PDF], folder=tmp_path, name="report.pdf", entry_id="e1", expected_size=None)
    assert saved.path.name == "report (2).pdf" and saved.path.read_bytes() == PDF
    assert (tmp_path / "report.pdf").read_bytes() == other
    again = save_pdf([PDF], folder=tmp_path, name="report.pdf", entry_id="e1", expected_size=None)
    assert again.path == saved.path  # a crash after saving: the same bytes are reused
    assert sorted(os.listdir(tmp_path)) == ["report (2).pdf", "report.pdf"]


def test_the_drop_folder_moves_files_without_hard_links(
    ob: Outbox, tmp_path: Path, no_hard_links: int
) -> None:
    folder = tmp_path / "drop"
    (folder / "accepted").mkdir(parents=True)
    (folder / "accepted" / "job.json").write_text("an earlier job")
    job = {"template": "inspection-report", "data": {"n": 1}}
    (folder / "job.json").write_text(json.dumps(job))
    report = DropFolder(ob, folder).scan()
    assert [a.moved_to.name for a in report.accepted] == ["job.2.json"]
    assert json.loads((folder / "accepted" / "job.2.json").read_text()) == job
    assert (folder / "accepted" / "job.json").read_text() == "an earlier job"
    assert sorted(os.listdir(folder)) == ["accepted"]
    assert len(ob.list()) == 1
