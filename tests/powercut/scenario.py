"""The power-cut scenario, shared by ``test_powercut.py`` and ``bench/powercut.py``.

A field device runs ``outbox run --watch DROP`` against a faulty sandbox while its app enqueues
through the library and drops job files (``client.py``). The journal, the downloads folder and
the drop folder live on the power-cut file system. At a random moment the power goes: every
process gets SIGKILL, the disk keeps only what was fsynced, and the disk is mounted again. Then
the invariants are checked:

- every enqueue that returned is in the journal, with the id it returned;
- every job file the app dropped is in the drop folder, ``accepted/`` or ``rejected/``, whole;
  every file in ``accepted/`` has its entry;
- every ``done`` entry's PDF exists, is complete and matches its sha256; no file under a final
  name (PDF, job file, result) is partial;
- ``PRAGMA integrity_check`` is ok and every history is a legal path through the states.

Work is done in sites (a journal with its downloads and drop folder): each site sees a few cuts,
starting from nothing, so creating the journal and the folders is cut too (at every other site
the installer made the journal's folder). A site ends with a
run that drains it, itself followed by a cut: then every entry must be ``done``. At the very end
the sandbox must have made exactly one render per key.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from client import job
from disk import PowerCutDisk

from outbox import Outbox, State
from outbox.models import can_move
from outbox.sandbox import Sandbox

CLIENT = Path(__file__).with_name("client.py")
#: Seconds a site's final run may take to drain it before that counts as a violation.
DRAIN_PATIENCE = 120.0
#: Seconds to wait for the app's first acknowledgement before cutting anyway.
READY_PATIENCE = 30.0


@dataclass
class Acks:
    """What the app was told had succeeded, in one site."""

    enqueued: dict[str, str] = field(default_factory=dict)  # key -> entry id
    dropped: dict[str, bytes] = field(default_factory=dict)  # file name -> contents


@dataclass
class Figures:
    cuts: int = 0
    sites: int = 0
    entries: int = 0
    acknowledged_enqueues: int = 0
    acknowledged_drops: int = 0
    done_seen_at_cuts: int = 0
    renders: int = 0
    #: Each distinct violation once, in the order found.
    violations: list[str] = field(default_factory=list)
    #: Checks (after a cut) that found at least one violation.
    cuts_with_violations: int = 0
    #: Per kind of violation, the checks that found it.
    kinds: dict[str, int] = field(default_factory=dict)
    #: Wall-clock seconds spent per phase (work, cut and remount, checks, drain).
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class Scenario:
    root: Path
    cuts: int = 100
    cuts_per_site: int = 6
    seed: int = 14
    #: Seconds of work between the app's first acknowledgement and the cut, drawn uniformly.
    window: float = 0.8
    #: Share of cuts that come while the processes start, before the app acknowledged anything.
    startup_cuts: float = 0.2
    say: Callable[[str], None] = print
    figures: Figures = field(default_factory=Figures)
    _found: set[str] = field(default_factory=set)

    def run(self) -> Figures:
        rng = random.Random(self.seed)
        disk = PowerCutDisk(self.root / "disk")
        with Sandbox(
            state_dir=self.root / "sandbox", render_seconds=(0.05, 0.3), seed=self.seed
        ) as sb:
            sb.set_faults(
                drop_after=0.1,
                error_500_before=0.05,
                error_500_after=0.05,
                truncate_downloads=0.1,
                latency=0.003,
            )
            disk.mount()
            try:
                site_number = 0
                while self.figures.cuts < self.cuts:
                    site_number += 1
                    cuts = min(self.cuts_per_site, self.cuts - self.figures.cuts)
                    self._site(disk, sb, site_number, cuts, rng)
            finally:
                disk.close()
            stats = sb.stats()
        self.figures.renders = stats["renders_created"]
        twice = {key: n for key, n in stats["renders_per_key"].items() if n != 1}
        if twice:
            self._violation("rendered twice", f"keys rendered more than once: {twice}")
        if stats["renders_created"] != self.figures.entries:
            self._violation(
                "renders do not match entries",
                f"{stats['renders_created']} renders at the sandbox for "
                f"{self.figures.entries} entries",
            )
        self._count_found()
        return self.figures

    # -- one site --------------------------------------------------------------------------

    def _site(
        self, disk: PowerCutDisk, sb: Sandbox, number: int, cuts: int, rng: random.Random
    ) -> None:
        site = disk.mountpoint / f"site-{number}"
        drop = site / "drop"
        # The installer creates the site and its drop folder, durably; at every other site also
        # the journal's folder, which elsewhere outbox creates itself.
        drop.mkdir(parents=True)
        folders = [drop, site, disk.mountpoint]
        if number % 2 == 0:
            _journal(site).parent.mkdir()
            folders.insert(0, _journal(site).parent)
        for folder in folders:
            _fsync_dir(folder)
        acks = Acks()
        env = _env(sb, site)
        for _ in range(cuts):
            started = time.monotonic()
            log = self._log(f"site-{number}-cut-{self.figures.cuts + 1}")
            run = _start(["-m", "outbox", "run", "--watch", str(drop)], env, log)
            client = _start(
                [str(CLIENT), str(_journal(site)), str(drop), f"s{number}", str(rng.random())],
                env,
                log,
                stdout=subprocess.PIPE,
            )
            reader = _AckReader(client)
            if rng.random() < self.startup_cuts:
                time.sleep(rng.uniform(0.0, 0.8))  # while the processes start and open the journal
            else:
                reader.first.wait(READY_PATIENCE)
                time.sleep(rng.uniform(0.0, self.window))
            for process in (run, client):
                process.send_signal(signal.SIGKILL)
            for process in (run, client):
                process.wait()
            reader.join()
            _read_acks(reader.lines, acks)
            self._time("work", started)
            started = time.monotonic()
            disk.cut()
            disk.mount()
            self._time("cut and remount", started)
            self.figures.cuts += 1
            started = time.monotonic()
            self._check(site, acks, drained=False)
            self._time("checks", started)
        self._drain(disk, site, drop, env, acks)
        self.figures.sites += 1
        self.figures.acknowledged_enqueues += len(acks.enqueued)
        self.figures.acknowledged_drops += len(acks.dropped)
        self.say(
            f"site {number}: {self.figures.cuts} cuts so far, {len(acks.enqueued)} enqueues and "
            f"{len(acks.dropped)} drops acknowledged, {len(self.figures.violations)} violations"
        )

    def _drain(
        self, disk: PowerCutDisk, site: Path, drop: Path, env: dict[str, str], acks: Acks
    ) -> None:
        """Run until every entry is done and the drop folder is empty, then cut the power."""
        started = time.monotonic()
        log = self._log(f"{site.name}-drain")
        run = _start(["-m", "outbox", "run", "--watch", str(drop)], env, log)
        deadline = time.monotonic() + DRAIN_PATIENCE
        try:
            while not _drained(site, drop, acks):
                if time.monotonic() > deadline or run.poll() is not None:
                    self._violation(
                        "not drained", f"{site.name}: the final run did not drain it (log: {log})"
                    )
                    break
                time.sleep(0.25)
        finally:
            run.send_signal(signal.SIGTERM)
            try:
                run.wait(DRAIN_PATIENCE)
            except subprocess.TimeoutExpired:
                self._violation(
                    "run ignored SIGTERM",
                    f"{site.name}: outbox run did not stop on SIGTERM (log: {log})",
                )
                run.kill()
                run.wait()
        self._time("drain", started)
        disk.cut()
        disk.mount()
        entries = _count_entries(site)
        self.figures.entries += entries
        self._check(site, acks, drained=True)

    # -- the invariants --------------------------------------------------------------------

    def _log(self, name: str) -> Path:
        """Where a process's standard error goes (beside the disk, not on it)."""
        folder = self.root / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{name}.log"

    def _time(self, phase: str, started: float) -> None:
        seconds = self.figures.seconds
        seconds[phase] = seconds.get(phase, 0.0) + time.monotonic() - started

    def _violation(self, kind: str, text: str) -> None:
        """Record a broken invariant: ``kind`` names which, ``text`` says where."""
        self._found.add(kind)
        if text not in self.figures.violations:
            self.figures.violations.append(text)
            self.say(f"VIOLATION (cut {self.figures.cuts}): {text}")

    def _check(self, site: Path, acks: Acks, *, drained: bool) -> None:
        self._check_site(site, acks, drained=drained)
        self._count_found()

    def _count_found(self) -> None:
        """Count the kinds of violation found since the last count, once per check."""
        self.figures.cuts_with_violations += bool(self._found)
        for kind in self._found:
            self.figures.kinds[kind] = self.figures.kinds.get(kind, 0) + 1
        self._found = set()

    def _check_site(self, site: Path, acks: Acks, *, drained: bool) -> None:
        db = _journal(site)
        if not db.exists():
            if acks.enqueued:
                self._violation(
                    "journal lost",
                    f"{site.name}: the journal is gone, yet enqueues were acknowledged",
                )
            self._check_drop_folder(site, acks, {})
            return
        with Outbox(db) as ob:
            integrity = ob.journal.integrity_check()
            if integrity != "ok":
                self._violation("integrity", f"{site.name}: integrity_check says {integrity}")
                return
            entries = {entry.key: entry for entry in ob.list()}
            for key, entry_id in acks.enqueued.items():
                if key not in entries:
                    self._violation(
                        "acknowledged enqueue lost",
                        f"{site.name}: acknowledged enqueue {key} is not in the journal",
                    )
                elif entries[key].id != entry_id:
                    self._violation(
                        "entry id changed",
                        f"{site.name}: {key} is entry {entries[key].id}, not {entry_id}",
                    )
            for entry in entries.values():
                self._check_history(site, entry.id, ob)
                if entry.state is State.DONE:
                    self.figures.done_seen_at_cuts += 1
                    self._check_pdf(
                        site, entry.key, entry.pdf_path, entry.pdf_bytes, entry.pdf_sha256
                    )
                elif drained:
                    self._violation(
                        "not drained",
                        f"{site.name}: {entry.key} is {entry.state.value} after the drain",
                    )
        self._check_downloads(site)
        self._check_drop_folder(site, acks, entries)

    def _check_history(self, site: Path, entry_id: str, ob: Outbox) -> None:
        events = ob.history(entry_id)
        legal = bool(events) and events[0].from_state is None
        legal = legal and events[0].to_state is State.PENDING
        for previous, event in zip(events, events[1:], strict=False):
            legal = (
                legal
                and event.from_state == previous.to_state
                and can_move(previous.to_state, event.to_state)
            )
        if not legal:
            path = " -> ".join(f"{e.from_state}->{e.to_state}" for e in events)
            self._violation(
                "illegal history", f"{site.name}: entry {entry_id} has an illegal history: {path}"
            )

    def _check_pdf(
        self, site: Path, key: str, path: str | None, size: int | None, sha: str | None
    ) -> None:
        try:
            data = Path(path or "").read_bytes()
        except OSError as exc:
            self._violation(
                "done PDF missing", f"{site.name}: {key} is done but its PDF cannot be read: {exc}"
            )
            return
        if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
            self._violation(
                "done PDF wrong",
                f"{site.name}: {key} is done but its PDF has {len(data)} bytes, not {size}, "
                "or another sha256",
            )

    def _check_downloads(self, site: Path) -> None:
        renders = _journal(site).with_name("renders")
        if not renders.is_dir():
            return
        for pdf in renders.iterdir():
            if pdf.name.startswith("."):
                continue  # a temporary file, never a final name
            data = pdf.read_bytes()
            if not (data.startswith(b"%PDF-") and b"%%EOF" in data[-1024:]):
                self._violation(
                    "partial file",
                    f"{site.name}: renders/{pdf.name} is partial ({len(data)} bytes)",
                )

    def _check_drop_folder(self, site: Path, acks: Acks, entries: Mapping[str, object]) -> None:
        drop = site / "drop"
        found: dict[bytes, str] = {}
        for place in (drop, drop / "accepted", drop / "rejected"):
            if not place.is_dir():
                continue
            for item in place.iterdir():
                if not item.is_file() or not item.name.endswith(".json"):
                    continue
                data = item.read_bytes()
                where = f"{place.name}/{item.name}"
                found.setdefault(data, where)
                try:
                    document = json.loads(data)
                except ValueError:
                    self._violation(
                        "partial file", f"{site.name}: {where} is partial ({len(data)} bytes)"
                    )
                    continue
                if place.name == "accepted" and document.get("key") not in entries:
                    self._violation(
                        "accepted file without entry",
                        f"{site.name}: {where} was accepted but has no entry",
                    )
        for name, content in acks.dropped.items():
            place_found = found.get(content)
            if place_found is None:
                self._violation(
                    "dropped file lost", f"{site.name}: the dropped file {name} is lost"
                )
            elif place_found.startswith("rejected/"):
                self._violation(
                    "valid drop rejected",
                    f"{site.name}: the valid dropped file {name} was rejected",
                )
        results = drop / "results"
        if results.is_dir():
            for result in results.iterdir():
                if result.name.endswith(".result.json"):
                    try:
                        json.loads(result.read_bytes())
                    except ValueError:
                        self._violation(
                            "partial file", f"{site.name}: results/{result.name} is partial"
                        )


# -- helpers -------------------------------------------------------------------------------


def _journal(site: Path) -> Path:
    """The journal, in a folder outbox creates; the downloads go beside it (the default)."""
    return site / "data" / "journal.db"


def _env(sb: Sandbox, site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OUTBOX_", "CRAFTKIT_"))}
    env.update(
        OUTBOX_DB=str(_journal(site)),
        CRAFTKIT_API_KEY=sb.api_key,
        CRAFTKIT_BASE_URL=sb.base_url,
    )
    return env


def _start(
    args: list[str], env: dict[str, str], log: Path | None, stdout: int = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    with open(log or os.devnull, "ab") as stderr:
        return subprocess.Popen([sys.executable, *args], env=env, stdout=stdout, stderr=stderr)


class _AckReader(threading.Thread):
    """Collects the client's acknowledgements as they come; ``first`` is set on the first."""

    def __init__(self, client: subprocess.Popen[bytes]) -> None:
        super().__init__(daemon=True)
        assert client.stdout is not None
        self.stream = client.stdout
        self.lines: list[str] = []
        self.first = threading.Event()
        self.start()

    def run(self) -> None:
        with self.stream:
            for line in iter(self.stream.readline, b""):
                self.lines.append(line.decode())
                self.first.set()
        self.first.set()


def _read_acks(lines: list[str], acks: Acks) -> None:
    for line in lines:
        if not line.endswith("\n"):
            break  # cut off mid-line: never acknowledged
        words = line.split()
        if words[0] == "enqueued":
            acks.enqueued[words[1]] = words[2]
        elif words[0] == "dropped":
            name = words[1]
            # The very bytes the client wrote.
            acks.dropped[name] = json.dumps(job(name.removesuffix(".json"))).encode()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _drained(site: Path, drop: Path, acks: Acks) -> bool:
    if any(name.endswith(".json") for name in os.listdir(drop)):
        return False
    db = _journal(site)
    if not db.exists():
        return not acks.enqueued and not acks.dropped
    with Outbox(db) as ob:
        counts = ob.counts()
    return sum(counts.values()) == counts[State.DONE]


def _count_entries(site: Path) -> int:
    db = _journal(site)
    if not db.exists():
        return 0
    with Outbox(db) as ob:
        return sum(ob.counts().values())


# -- the price: fsyncs per entry -----------------------------------------------------------


@dataclass
class Price:
    """Fsyncs outbox asked for while draining ``entries`` entries, by what was synced."""

    entries: int
    fsync: int
    fsyncdir: int
    by_place: dict[str, int]

    @property
    def per_entry(self) -> float:
        return (self.fsync + self.fsyncdir) / self.entries


def drain_price(root: Path, entries: int = 100, *, drop_files: bool = False) -> Price:
    """Enqueue ``entries`` (one ``enqueue_many``, or as drop-folder files), then count the
    fsyncs outbox asks for to finish them all: one ``outbox flush`` (library entries) or one
    ``outbox run --watch`` (drop files: ingested, moved, rendered and given result files)."""
    disk = PowerCutDisk(root / "disk")
    with Sandbox(state_dir=root / "sandbox", render_seconds=0.05, seed=1) as sb:
        mnt = disk.mount()
        try:
            site = mnt / "price"
            drop = site / "drop"
            drop.mkdir(parents=True)
            for folder in (drop, site, mnt):
                _fsync_dir(folder)
            keys = [f"price-{i}" for i in range(entries)]
            if drop_files:
                for key in keys:
                    (drop / f"{key}.json").write_text(json.dumps(job(key)))
                _fsync_dir(drop)
            else:
                with Outbox(_journal(site)) as ob:
                    ob.enqueue_many(job(key) for key in keys)
            # Nothing but outbox touches the disk while it drains (progress is read from folder
            # listings, which sync nothing), so every fsync counted is one outbox asked for.
            before = disk.stats()
            if drop_files:
                run = _start(["-m", "outbox", "run", "--watch", str(drop)], _env(sb, site), None)
                try:
                    while _results_written(drop) < entries:
                        if run.poll() is not None:
                            raise RuntimeError("outbox run stopped before draining")
                        time.sleep(0.1)
                finally:
                    run.send_signal(signal.SIGTERM)
                    run.wait()
            else:
                flush = _start(["-m", "outbox", "flush", "--timeout", "300"], _env(sb, site), None)
                if flush.wait() != 0:
                    raise RuntimeError(f"outbox flush exited with {flush.returncode}")
            after = disk.stats()
        finally:
            disk.close()
    by_place: dict[str, int] = {}
    for kind in ("fsync", "fsyncdir"):
        for path, count in after[f"{kind}_by_path"].items():
            place = f"{kind} {_place(path, directory=kind == 'fsyncdir')}"
            count -= before[f"{kind}_by_path"].get(path, 0)
            by_place[place] = by_place.get(place, 0) + count
    return Price(
        entries=entries,
        fsync=after["fsync"] - before["fsync"],
        fsyncdir=after["fsyncdir"] - before["fsyncdir"],
        by_place={place: n for place, n in sorted(by_place.items()) if n},
    )


def _results_written(drop: Path) -> int:
    try:
        return sum(name.endswith(".result.json") for name in os.listdir(drop / "results"))
    except FileNotFoundError:
        return 0


def _place(path: str, *, directory: bool) -> str:
    """A synced path below the site folder, with file names other than the journal's as ``*``."""
    parts = path.strip("/").split("/")[1:]
    if directory or (parts and parts[-1].startswith("journal.db")):
        return "/".join(parts) or "(site folder)"
    return "/".join([*parts[:-1], "*"])
