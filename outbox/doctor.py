"""``outbox doctor``: check everything outbox depends on, each with a verdict and a fix.

The journal, the API key, the base URL, the network, Craftkit's ``/health``, the template
cache's age, the downloads folder (writable, free space) and whether a worker is running.
Nothing is created or changed: a missing journal or downloads folder is reported, not made.
"""

from __future__ import annotations

import errno
import shutil
import socket
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from .client import CraftkitClient
from .clock import Clock, parse_iso
from .config import ENV_API_KEY, Settings
from .errors import AuthError, JournalError, Offline, RemoteError
from .exit_codes import ExitCode
from .models import UNFINISHED_STATES
from .store import Journal
from .templates import CachedTemplate
from .worker import worker_facts

Verdict = Literal["ok", "warn", "fail"]

#: A template cache older than this gets a warning: data may be checked against old rules.
STALE_TEMPLATES = 7 * 86400.0
#: Free space in the downloads folder below which doctor warns, and below which it fails.
LOW_SPACE = 200 * 1024 * 1024
NO_SPACE = 10 * 1024 * 1024


@dataclass(frozen=True)
class Check:
    """One thing checked: ``verdict``, what was found, and what to do if it is not ok.

    ``exit_code`` is what ``outbox doctor`` exits with when this is the first failure.
    """

    name: str
    verdict: Verdict
    detail: str
    fix: str | None = None
    exit_code: ExitCode = ExitCode.OK

    def to_dict(self) -> dict[str, str | int | None]:
        return {
            "name": self.name,
            "verdict": self.verdict,
            "detail": self.detail,
            "fix": self.fix,
            "exit_code": int(self.exit_code) if self.verdict == "fail" else 0,
        }


def exit_code(checks: list[Check]) -> ExitCode:
    """The code of the first check that failed; 0 when none did (warnings need nobody now)."""
    return next((c.exit_code for c in checks if c.verdict == "fail"), ExitCode.OK)


def diagnose(
    *,
    db: Path,
    downloads: Path,
    base_url: str,
    api_key: str | None,
    api_key_problem: str | None = None,
    settings: Settings | None = None,
    clock: Clock | None = None,
    transport: httpx.BaseTransport | None = None,
) -> list[Check]:
    """Run every check, in the order a person would fix things; never raises for what it finds."""
    settings = settings or Settings()
    clock = clock or Clock()
    checks: list[Check] = []
    journal = _open_journal(db, clock, checks)
    try:
        url_ok = _check_base_url(base_url, checks)
        client = None
        if url_ok and api_key:
            client = CraftkitClient(
                base_url,
                api_key,
                connect_timeout=settings.connect_timeout,
                read_timeout=settings.read_timeout,
                retries=0,
                transport=transport,
                schedule=settings.schedule,
            )
        try:
            reachable = url_ok and _check_connectivity(base_url, settings, transport, checks)
            healthy = reachable and _check_health(base_url, settings, transport, checks)
            _check_key(api_key, api_key_problem, client if healthy else None, checks)
        finally:
            if client is not None:
                client.close()
        if journal is not None:
            _check_templates(journal.cached_templates(), clock.now(), checks)
        _check_downloads(downloads, checks)
        if journal is not None:
            _check_worker(journal, checks)
    finally:
        if journal is not None:
            journal.close()
    return checks


# -- the checks ------------------------------------------------------------------------------


def _open_journal(db: Path, clock: Clock, checks: list[Check]) -> Journal | None:
    if not db.exists():
        checks.append(
            Check(
                "journal",
                "fail",
                f"no journal at {db}",
                "`outbox enqueue` creates one; or point --db / OUTBOX_DB at the journal your "
                "app writes (a hook running as another user sees another default)",
                ExitCode.CONFIG_ERROR,
            )
        )
        return None
    try:
        journal = Journal(db, clock=clock)
    except JournalError as exc:
        checks.append(Check("journal", "fail", str(exc), _journal_fix(exc), ExitCode.CONFIG_ERROR))
        return None
    try:
        integrity = journal.integrity_check()
        counts = journal.counts()
    except JournalError as exc:
        journal.close()
        checks.append(Check("journal", "fail", str(exc), _journal_fix(exc), ExitCode.CONFIG_ERROR))
        return None
    if integrity != "ok":
        journal.close()
        checks.append(
            Check(
                "journal",
                "fail",
                f"{db} is damaged (SQLite says: {integrity})",
                "restore it from a backup; keep the damaged file for inspection",
                ExitCode.CONFIG_ERROR,
            )
        )
        return None
    unfinished = sum(counts[state] for state in UNFINISHED_STATES)
    detail = (
        f"{db}: schema {journal.schema_version}, {sum(counts.values())} entries "
        f"({unfinished} unfinished)"
    )
    mode = stat.S_IMODE(db.stat().st_mode)
    if mode & 0o077:
        checks.append(
            Check(
                "journal",
                "warn",
                f"{detail}; readable by others (mode {mode:04o})",
                f"chmod 600 {db}",
            )
        )
    else:
        checks.append(Check("journal", "ok", detail + "; owner-only"))
    return journal


def _journal_fix(exc: JournalError) -> str:
    text = str(exc)
    if "locked" in text:
        return "wait for the process holding it, or find it with `fuser` / `lsof`"
    if "newer" in text:
        return "upgrade outbox to the version that wrote it"
    return "point --db / OUTBOX_DB at an outbox journal, or restore this one from a backup"


def _check_base_url(base_url: str, checks: list[Check]) -> bool:
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL as exc:
        url, problem = httpx.URL(), str(exc)
    else:
        problem = "" if url.scheme in ("http", "https") and url.host else "not an http(s) URL"
    if problem:
        checks.append(
            Check(
                "base url",
                "fail",
                f"{base_url!r}: {problem}",
                "set CRAFTKIT_BASE_URL (or --base-url, or base_url in the config file) to "
                "https://api.craftkit.dev or your sandbox's URL",
                ExitCode.CONFIG_ERROR,
            )
        )
        return False
    if url.scheme == "http" and not _is_loopback(url.host):
        checks.append(
            Check(
                "base url",
                "warn",
                f"{base_url}: plain http to another machine sends the API key unencrypted",
                "use https",
            )
        )
    else:
        checks.append(Check("base url", "ok", base_url))
    return True


def _check_connectivity(
    base_url: str, settings: Settings, transport: httpx.BaseTransport | None, checks: list[Check]
) -> bool:
    url = httpx.URL(base_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    if transport is None:
        try:
            with socket.create_connection((url.host, port), timeout=settings.connect_timeout):
                pass
        except OSError as exc:
            checks.append(
                Check(
                    "network",
                    "fail",
                    f"cannot reach {url.host}:{port}: {exc.strerror or exc}",
                    "check the network connection (or a proxy, VPN, firewall); outbox "
                    "flushes when it is back",
                    ExitCode.TRY_LATER,
                )
            )
            return False
    checks.append(Check("network", "ok", f"{url.host}:{port} accepts connections"))
    return True


def _check_health(
    base_url: str, settings: Settings, transport: httpx.BaseTransport | None, checks: list[Check]
) -> bool:
    client = CraftkitClient(
        base_url,
        "unused",  # /health is asked without the key
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        retries=0,
        transport=transport,
        schedule=settings.schedule,
    )
    try:
        client.health()
    except RemoteError as exc:
        portal = isinstance(exc, Offline)
        checks.append(
            Check(
                "health",
                "fail",
                exc.message,
                "log in to the network's portal (Wi-Fi login page) or fix the proxy"
                if portal
                else "Craftkit is in trouble; outbox waits and tries again",
                ExitCode.TRY_LATER,
            )
        )
        return False
    finally:
        client.close()
    checks.append(Check("health", "ok", f"{base_url}/health answers ok"))
    return True


def _check_key(
    api_key: str | None,
    problem: str | None,
    client: CraftkitClient | None,
    checks: list[Check],
) -> None:
    if problem:
        checks.append(
            Check(
                "api key",
                "fail",
                f"unusable: {problem}",
                f"set {ENV_API_KEY} to the key exactly as Craftkit shows it",
                ExitCode.CONFIG_ERROR,
            )
        )
        return
    if not api_key:
        checks.append(
            Check(
                "api key",
                "fail",
                f"{ENV_API_KEY} is not set",
                f"set {ENV_API_KEY} in the environment of whatever runs outbox (never a flag)",
                ExitCode.CONFIG_ERROR,
            )
        )
        return
    if client is None:
        checks.append(
            Check("api key", "warn", "set, but not checked: Craftkit cannot be reached", None)
        )
        return
    try:
        client.list_templates()
    except AuthError as exc:
        checks.append(
            Check(
                "api key",
                "fail",
                exc.message,
                f"set {ENV_API_KEY} to a live key of the Craftkit project that owns the templates",
                ExitCode.KEY_REFUSED,
            )
        )
        return
    except RemoteError as exc:
        checks.append(Check("api key", "warn", f"set, but not checked: {exc.message}", None))
        return
    checks.append(Check("api key", "ok", "accepted by Craftkit"))


def _check_templates(cached: list[CachedTemplate], now: float, checks: list[Check]) -> None:
    fix = "run `outbox templates sync` while online"
    if not cached:
        checks.append(
            Check("templates", "warn", "none cached: data is not checked before it is queued", fix)
        )
        return
    oldest = min(parse_iso(template.synced_at) for template in cached)
    age = now - oldest
    detail = f"{len(cached)} cached, synced {_age(age)} ago"
    if age > STALE_TEMPLATES:
        checks.append(Check("templates", "warn", detail + "; may be out of date", fix))
    else:
        checks.append(Check("templates", "ok", detail))


def _check_downloads(folder: Path, checks: list[Check]) -> None:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    problem = _unwritable(existing) if existing.is_dir() else f"{existing} is not a folder"
    if problem is not None:
        checks.append(
            Check(
                "downloads",
                "fail",
                f"{folder}: {problem}",
                f"give the user running outbox write access to {existing}, or point "
                "--downloads / OUTBOX_DOWNLOADS elsewhere",
                ExitCode.CONFIG_ERROR,
            )
        )
        return
    free = shutil.disk_usage(existing).free
    where = str(folder) if existing == folder else f"{folder} (created on first PDF)"
    detail = f"{where}: writable, {free / 1024 / 1024:,.0f} MB free"
    if free < NO_SPACE:
        checks.append(
            Check("downloads", "fail", detail, "free some disk space", ExitCode.TRY_LATER)
        )
    elif free < LOW_SPACE:
        checks.append(Check("downloads", "warn", detail, "free some disk space"))
    else:
        checks.append(Check("downloads", "ok", detail))


def _unwritable(folder: Path) -> str | None:
    """Why no file can be made in ``folder`` (tried for real, then removed), or None."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".outbox-doctor-"):
            pass
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"not writable ({exc.strerror})"
        return exc.strerror or str(exc)
    return None


def _check_worker(journal: Journal, checks: list[Check]) -> None:
    workers = worker_facts(journal.status(), now=journal.clock.now())
    if not workers:
        checks.append(
            Check(
                "worker",
                "warn",
                "no `outbox run` (or app worker) is running on this journal",
                "fine if a timer or network hook runs `outbox flush`; otherwise start "
                "`outbox run` (see examples/systemd)",
            )
        )
        return
    checks.append(Check("worker", "ok", "; ".join(worker.describe() for worker in workers)))


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{max(seconds, 0):.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def lines(checks: list[Check]) -> list[str]:
    """``outbox doctor``'s text: one line per check, and its fix below it when not ok."""
    shown: list[str] = []
    for check in checks:
        shown.append(f"{check.verdict.upper():<4}  {check.name:<10} {check.detail}")
        if check.fix and check.verdict != "ok":
            shown.append(f"{'':<4}  {'':<10} fix: {check.fix}")
    return shown
