"""Keep the template cache in step with Craftkit: a full sync, and a refresh after a rejection.

:func:`sync_templates` reads every template (``GET /v1/templates``, then
``GET /v1/templates/:slug`` for each) and replaces the cache in one transaction, so a sync cut
short by the network leaves the previous cache whole. :func:`refresh_after_rejection` follows
the docs' advice for ``invalid_input_data``: re-read the template, because a newly published
version may have changed its fields. It never raises, so it cannot break the dispatcher.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from .client import CraftkitClient, printable
from .clock import iso
from .errors import InvalidArgument, PermanentError, RemoteError
from .models import Entry
from .rules import is_slug
from .schedule import Schedule
from .store import Journal
from .templates import CachedTemplate

log = logging.getLogger(__name__)


@dataclass
class _Refreshes:
    """This process's refreshes of one template in one journal, one at a time."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    #: ``clock.monotonic()`` of the last successful refresh.
    last: float | None = None


_refreshes: dict[tuple[str, str], _Refreshes] = {}
_refreshes_lock = threading.Lock()


def _refreshes_of(journal: Journal, slug: str) -> _Refreshes:
    with _refreshes_lock:
        return _refreshes.setdefault((str(journal.path), slug), _Refreshes())


def fetch_template(
    client: CraftkitClient, slug: str, synced_at: str, *, deadline: float | None = None
) -> CachedTemplate:
    """Read one template from Craftkit as a cache record (not stored yet)."""
    body = client.get_template(slug, deadline=deadline)
    try:
        template = CachedTemplate.from_api(body, synced_at)
    except InvalidArgument as exc:
        raise PermanentError(
            f"Craftkit's answer for template {slug} is not a template: {printable(str(exc))}",
            code="invalid_template",
        ) from exc
    if template.slug != slug:
        raise PermanentError(
            f"Craftkit's answer for template {slug} is another template's "
            f"({printable(template.slug, 80)!r})",
            code="invalid_template",
        )
    return template


def sync_templates(
    journal: Journal, client: CraftkitClient, *, deadline: float | None = None
) -> list[CachedTemplate]:
    """Cache every template of the project; templates no longer listed leave the cache.

    Raises the client's errors (offline, refused key...) with the cache left as it was.
    Returns the cache as it now stands.
    """
    summaries = client.list_templates(deadline=deadline)
    stamp = iso(journal.clock.now())
    fetched: list[CachedTemplate] = []
    for summary in summaries:
        slug = summary.get("slug") if isinstance(summary, Mapping) else None
        if not is_slug(slug):
            # No entry could name it, and its text would reach the terminal as it came.
            shown = printable(slug, 80) if isinstance(slug, str) else repr(slug)[:80]
            log.warning("skipping a template listed without a usable slug (%s)", shown)
            continue
        try:
            fetched.append(fetch_template(client, slug, stamp, deadline=deadline))
        except PermanentError as exc:
            if exc.code != "template_not_found":
                raise
            log.info("template %s was deleted while syncing; not cached", slug)
    journal.save_templates(fetched, replace_all=True)
    log.debug("cached %d templates", len(fetched))
    return journal.cached_templates()


def refresh_after_rejection(
    journal: Journal, client: CraftkitClient, entry: Entry, schedule: Schedule | None = None
) -> str | None:
    """Refresh the cached template after Craftkit refused ``entry``'s data; say what changed.

    Returns a note for the entry's history (None when the template is not cached, so there is
    nothing to refresh). Never raises: a failed refresh is logged and reported in the note.
    Refreshes of one template are at least ``schedule.template_refresh_interval`` apart.
    """
    try:
        return _refresh(journal, client, entry, schedule or Schedule())
    except Exception:
        log.exception("refreshing cached template %s failed", entry.template)
        return None


def _refresh(
    journal: Journal, client: CraftkitClient, entry: Entry, schedule: Schedule
) -> str | None:
    slug = entry.template
    old = journal.cached_template(slug)
    if old is None:
        return None
    refreshes = _refreshes_of(journal, slug)
    # Rejections of one template arrive together: the first refreshes it while the others
    # wait, then they all read what it found.
    with refreshes.lock:
        now = journal.clock.monotonic()
        if refreshes.last is None or not 0 <= now - refreshes.last < (
            schedule.template_refresh_interval
        ):
            problem = _fetch_and_save(journal, client, slug, schedule.template_refresh_timeout)
            if problem is not None:
                return problem
            refreshes.last = now
        current = journal.cached_template(slug)
    if current is None:
        return f"template {slug} no longer exists at Craftkit; it left the template cache"
    note = _change_note(old, current, entry)
    if entry.version is not None and entry.version != current.version:
        note += f"; this entry is pinned to version {entry.version}"
    log.info("entry %s: %s", entry.id, note)
    return note


def _fetch_and_save(
    journal: Journal, client: CraftkitClient, slug: str, timeout: float
) -> str | None:
    """Re-read one template into the cache; returns what went wrong, if anything."""
    deadline = journal.clock.monotonic() + timeout
    try:
        fresh = fetch_template(client, slug, iso(journal.clock.now()), deadline=deadline)
    except PermanentError as exc:
        if exc.code == "template_not_found":
            journal.forget_template(slug)
            return None
        return f"the cached template {slug} could not be refreshed ({exc.message})"
    except RemoteError as exc:
        return (
            f"the cached template {slug} could not be refreshed ({exc.message}); "
            "run `outbox templates sync` when online"
        )
    journal.save_templates([fresh])
    return None


def _change_note(old: CachedTemplate, current: CachedTemplate, entry: Entry) -> str:
    """Tell whether the template changed under the entry's data, from the cache's records."""
    slug = current.slug
    if current.version != old.version:
        return (
            f"template {slug} has changed since it was cached (version {old.version} → "
            f"{current.version}); the template cache was refreshed"
        )
    if (
        current.previous_version is not None
        and current.changed_at is not None
        and current.changed_at >= entry.created_at
    ):
        return (
            f"template {slug} changed after this entry was queued (version "
            f"{current.previous_version} → {current.version}); the template cache was refreshed"
        )
    return (
        f"the cached template {slug} (version {current.version}, synced {current.synced_at}) "
        "is current; the data does not match it"
    )
