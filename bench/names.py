"""What names that are unique case-insensitively cost, in one run.

A new PDF or a job file moved into ``accepted/`` must not take a name the folder already holds
in another case (``Report.pdf`` for ``report.pdf``). On Linux that needs the folder's names:
``files.FolderNames`` lists a folder once into a counting filter of fixed size and then only
stats it while this process adds names (a listing again only when the filter cannot tell). Measured here, into a folder that already holds 50,000 files against an empty one
(target <= 1.2x): moving a job file (``move_without_overwriting``: check, link, unlink) and
saving a PDF (``save_pdf``: look for a crashed attempt's ``.part`` file, write, fsync,
check, link, folder fsync); the one listing, how many more the saves and moves needed, and
the memory the index holds; and, for comparison, what that search for
leftovers cost when it was a ``folder.glob`` per save.

    python bench/names.py [--existing 50000] [--files 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from common import verdict

from outbox.downloads import save_pdf
from outbox.files import FolderNames, folder_names, identity, move_without_overwriting

PDF = b"%PDF-1.4\n" + b"x" * 2000 + b"\n%%EOF\n"


def fill(folder: Path, count: int) -> None:
    folder.mkdir()
    for n in range(count):
        os.close(os.open(folder / f"Old-{n}.pdf", os.O_CREAT | os.O_WRONLY, 0o644))


def save_rate(folder: Path, files: int, tag: str) -> float:
    """Mean seconds per save_pdf into ``folder``."""
    started = time.perf_counter()
    for n in range(files):
        name = f"new-{tag}-{n}.pdf"
        save_pdf([PDF], folder=folder, name=name, entry_id=f"e{tag}-{n}", expected_size=None)
    return (time.perf_counter() - started) / files


def move_rate(drop: Path, accepted: Path, files: int, tag: str) -> float:
    """Mean seconds per move of a job file into ``accepted``."""
    drop.mkdir()
    for n in range(files):
        (drop / f"job-{tag}-{n}.json").write_text("{}")
    started = time.perf_counter()
    for n in range(files):
        source = drop / f"job-{tag}-{n}.json"
        expected = identity(source)
        assert expected is not None
        moved = move_without_overwriting(
            source, expected, accepted, lambda attempt, n=n: f"job-{tag}-{n}.{attempt}.json"
        )
        assert moved is not None
    return (time.perf_counter() - started) / files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--existing", type=int, default=50_000)
    parser.add_argument("--files", type=int, default=300)
    args = parser.parse_args()
    saves: dict[str, list[float]] = {"empty": [], "big": []}
    moves: dict[str, list[float]] = {"empty": [], "big": []}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        root = Path(tmp)
        big = root / "big"
        fill(big, args.existing)
        started = time.perf_counter()
        folder_names(big).in_another_case("warm-up.pdf")
        listing = time.perf_counter() - started
        tracemalloc.start()
        index = FolderNames(big)  # what one index holds, measured apart
        index.in_another_case("warm-up.pdf")
        index_bytes = tracemalloc.get_traced_memory()[0]
        del index
        tracemalloc.stop()
        listings = 0
        started = time.perf_counter()
        for _ in range(10):
            list(big.glob(".outbox-e1-*.part"))  # how save_pdf once looked for leftovers
        stale_glob = (time.perf_counter() - started) / 10
        real_scandir = os.scandir

        def counting_scandir(path: Any) -> Any:
            nonlocal listings
            listings += isinstance(path, (str, os.PathLike)) and os.fspath(path) == str(big)
            return real_scandir(path)

        os.scandir = counting_scandir
        for round_ in range(3):  # alternate, so a busy moment of the machine hits both sides
            for side in ("empty", "big"):
                folder = big if side == "big" else root / f"empty-{round_}"
                folder.mkdir(exist_ok=True)
                drop = root / f"drop-{side}-{round_}"
                moves[side].append(move_rate(drop, folder, args.files, f"{round_}"))
                saves[side].append(save_rate(folder, args.files, f"{round_}"))
    save_ratio = statistics.median(saves["big"]) / statistics.median(saves["empty"])
    move_ratio = statistics.median(moves["big"]) / statistics.median(moves["empty"])
    print(f"{args.files} files per side and round, 3 rounds; {args.existing:,} files already there")
    print(
        f"first listing of the big folder: {listing * 1000:.1f} ms (once per process); the "
        f"index then holds {index_bytes / 2**20:.2f} MiB whatever the folder's size; listings "
        f"again during the {args.files * 3 * 2:,} moves and saves into it: {listings}"
    )
    for what, figures, ratio in (
        ("move of a job file", moves, move_ratio),
        ("save_pdf", saves, save_ratio),
    ):
        big_us, empty_us = (statistics.median(figures[s]) * 1e6 for s in ("big", "empty"))
        print(
            f"{what}: {big_us:,.0f} us into the big folder vs {empty_us:,.0f} us into an empty "
            f"one = {ratio:.2f}x (target <= 1.2x: {verdict(ratio <= 1.2)})"
        )
    print(
        f"  for comparison: a folder.glob for a crashed attempt's .part file (save_pdf's search "
        f"before it kept outbox's work files beside the listing) takes {stale_glob * 1e6:,.0f} us "
        "in the big folder"
    )


if __name__ == "__main__":
    main()
