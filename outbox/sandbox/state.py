"""The sandbox's persisted state: projects, key hashes, templates, renders and shares, in SQLite.

Everything lives in one SQLite file inside the state folder, so stopping a sandbox and
starting it again on the same folder (the way tests simulate going offline) keeps every
render, key and published template. Keys are stored only as SHA-256 hashes, as Craftkit does.

One connection is shared by all request threads behind a lock. Render rows never change after
they are written (their status follows from the clock), so they are cached in memory after
the first read; key lookups are cached too. Together that keeps ``GET /v1/renders/:id`` off
the database entirely, which is what lets the sandbox answer hundreds of polls a second.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from outbox.sandbox.manifest import Manifest
from outbox.sandbox.models import EMAIL, LINK, RenderRecord, ShareRecord, TemplateRecord
from outbox.sandbox.templates import RenderSeconds, TemplateSpec

#: The database file inside the state folder.
DB_NAME = "sandbox.sqlite3"

#: Render rows kept in memory at most (each is a few hundred bytes).
RENDER_CACHE_SIZE = 200_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS projects (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id),
    prefix TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER
);
CREATE TABLE IF NOT EXISTS templates (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id),
    slug TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    template_type TEXT NOT NULL,
    current_version INTEGER,
    fail_message TEXT,
    render_seconds TEXT,
    source_fingerprint TEXT,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    UNIQUE (project_id, slug)
);
CREATE TABLE IF NOT EXISTS template_versions (
    template_id TEXT NOT NULL REFERENCES templates(id),
    version_number INTEGER NOT NULL,
    manifest TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (template_id, version_number)
);
CREATE TABLE IF NOT EXISTS renders (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id),
    template_id TEXT NOT NULL REFERENCES templates(id),
    template_slug TEXT NOT NULL,
    version_number INTEGER NOT NULL,
    idempotency_key TEXT,
    payload_hash TEXT NOT NULL,
    data TEXT NOT NULL,
    filename TEXT,
    created_ms INTEGER NOT NULL,
    rendering_ms INTEGER NOT NULL,
    finished_ms INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    error_message TEXT,
    UNIQUE (project_id, idempotency_key)
);
CREATE TABLE IF NOT EXISTS shares (
    id TEXT PRIMARY KEY,
    render_id TEXT NOT NULL REFERENCES renders(id),
    token TEXT NOT NULL UNIQUE,
    channel TEXT NOT NULL,
    recipient_email TEXT,
    recipient_name TEXT,
    message TEXT,
    expires_ms INTEGER,
    revoked_ms INTEGER,
    created_ms INTEGER NOT NULL,
    click_count INTEGER NOT NULL DEFAULT 0,
    email_message_id TEXT,
    sent_ms INTEGER
);
CREATE INDEX IF NOT EXISTS shares_by_render ON shares (render_id, created_ms);
"""

_SHARE_COLUMNS = (
    "id, render_id, token, channel, recipient_email, recipient_name, message, expires_ms,"
    " revoked_ms, created_ms, click_count, email_message_id, sent_ms"
)

_RENDER_COLUMNS = (
    "id, project_id, template_id, template_slug, version_number, idempotency_key,"
    " payload_hash, filename, created_ms, rendering_ms, finished_ms, outcome,"
    " error_message"
)


def key_hash(key: str) -> str:
    """The SHA-256 (hex) under which an API key is stored."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class NewRender:
    """Everything needed to create a render."""

    project_id: str
    template: TemplateRecord
    version_number: int
    idempotency_key: str | None
    payload_hash: str
    data: dict[str, Any]
    filename: str | None
    created_ms: int
    rendering_ms: int
    finished_ms: int
    outcome: str
    error_message: str | None


@dataclass(frozen=True)
class NewShare:
    """A share to create (an email share carries its sending time)."""

    render_id: str
    channel: str
    recipient_email: str | None
    recipient_name: str | None
    message: str | None
    expires_ms: int | None
    created_ms: int
    sent: bool = False


class SandboxState:
    """The state folder's database, with in-memory caches of the hot rows."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            self.directory / DB_NAME, check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._renders: dict[str, RenderRecord] = {}
        self._keys: dict[str, str | None] = {}
        self._templates: dict[tuple[str, str], TemplateRecord | None] = {}

    def close(self) -> None:
        """Close the database (the folder keeps everything)."""
        with self._lock:
            self._db.close()

    # --- meta, projects and keys ----------------------------------------------------------

    def secret(self) -> str:
        """A random secret made at first start, from which the default keys are derived."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE name = 'secret'").fetchone()
            if row:
                return str(row[0])
            value = secrets.token_hex(32)
            self._db.execute("INSERT INTO meta (name, value) VALUES ('secret', ?)", (value,))
            return value

    def ensure_project(self, project_id: str, name: str, now_ms: int) -> None:
        """Create a project unless it exists."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO projects (id, name, created_ms) VALUES (?, ?, ?)",
                (project_id, name, now_ms),
            )

    def add_key(self, key: str, project_id: str, now_ms: int) -> None:
        """Register a project key (only its hash is kept). An existing key is left as it is,
        so a revoked key stays revoked."""
        digest = key_hash(key)
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO api_keys (key_hash, project_id, prefix, created_ms)"
                " VALUES (?, ?, ?, ?)",
                (digest, project_id, key[:13], now_ms),
            )
            self._keys.pop(digest, None)

    def project_for_key(self, key: str) -> str | None:
        """The project a key belongs to, or None for an unknown or revoked key."""
        digest = key_hash(key)
        try:
            return self._keys[digest]
        except KeyError:
            pass
        with self._lock:
            row = self._db.execute(
                "SELECT project_id FROM api_keys WHERE key_hash = ? AND revoked_ms IS NULL",
                (digest,),
            ).fetchone()
            if len(self._keys) > 10_000:
                self._keys.clear()
            project = str(row[0]) if row else None
            self._keys[digest] = project
            return project

    def revoke_key(self, key: str, now_ms: int) -> bool:
        """Revoke a key at once; returns whether it was a live key."""
        digest = key_hash(key)
        with self._lock:
            cursor = self._db.execute(
                "UPDATE api_keys SET revoked_ms = ? WHERE key_hash = ? AND revoked_ms IS NULL",
                (now_ms, digest),
            )
            self._keys[digest] = None
            return cursor.rowcount > 0

    # --- templates ------------------------------------------------------------------------

    def sync_template(self, project_id: str, spec: TemplateSpec, now_ms: int) -> None:
        """Make a template from a templates file exist in a project.

        A template already in the state keeps its versions; if the file's definition changed
        since it was last applied, its settings are updated and a changed manifest is
        published as a new version.
        """
        fingerprint = spec.fingerprint()
        seconds = json.dumps(spec.render_seconds) if spec.render_seconds is not None else None
        with self._lock:
            row = self._db.execute(
                "SELECT id, source_fingerprint, current_version FROM templates"
                " WHERE project_id = ? AND slug = ?",
                (project_id, spec.slug),
            ).fetchone()
            self._templates.pop((project_id, spec.slug), None)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if row is None:
                    template_id = str(uuid.uuid4())
                    self._db.execute(
                        "INSERT INTO templates (id, project_id, slug, name, description,"
                        " template_type, current_version, fail_message, render_seconds,"
                        " source_fingerprint, created_ms, updated_ms)"
                        " VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?)",
                        (
                            template_id,
                            project_id,
                            spec.slug,
                            spec.name,
                            spec.description,
                            spec.template_type,
                            spec.fail_message,
                            seconds,
                            fingerprint,
                            now_ms,
                            now_ms,
                        ),
                    )
                    current: Manifest | None = None
                elif row[1] == fingerprint:
                    self._db.execute("COMMIT")
                    return
                else:
                    template_id = str(row[0])
                    self._db.execute(
                        "UPDATE templates SET name = ?, description = ?, template_type = ?,"
                        " fail_message = ?, render_seconds = ?, source_fingerprint = ?,"
                        " updated_ms = ? WHERE id = ?",
                        (
                            spec.name,
                            spec.description,
                            spec.template_type,
                            spec.fail_message,
                            seconds,
                            fingerprint,
                            now_ms,
                            template_id,
                        ),
                    )
                    current = self._manifest(template_id, row[2]) if row[2] else None
                if spec.published and spec.manifest is not None and spec.manifest != current:
                    self._publish(template_id, spec.manifest, now_ms)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def put_template(
        self,
        project_id: str,
        slug: str,
        manifest: Manifest,
        now_ms: int,
        name: str | None = None,
        description: str | None = None,
    ) -> tuple[TemplateRecord, bool]:
        """Create-or-republish: returns the template and whether it was created."""
        with self._lock:
            self._templates.pop((project_id, slug), None)
            row = self._db.execute(
                "SELECT id FROM templates WHERE project_id = ? AND slug = ?", (project_id, slug)
            ).fetchone()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                created = row is None
                if created:
                    template_id = str(uuid.uuid4())
                    self._db.execute(
                        "INSERT INTO templates (id, project_id, slug, name, description,"
                        " template_type, created_ms, updated_ms)"
                        " VALUES (?, ?, ?, ?, ?, 'canvas', ?, ?)",
                        (template_id, project_id, slug, name or slug, description, now_ms, now_ms),
                    )
                else:
                    template_id = str(row[0])
                    if name is not None:
                        self._db.execute(
                            "UPDATE templates SET name = ? WHERE id = ?", (name, template_id)
                        )
                    if description is not None:
                        self._db.execute(
                            "UPDATE templates SET description = ? WHERE id = ?",
                            (description, template_id),
                        )
                self._publish(template_id, manifest, now_ms)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            template = self.get_template(project_id, slug)
            assert template is not None
            return template, created

    def _publish(self, template_id: str, manifest: Manifest, now_ms: int) -> int:
        """Publish ``manifest`` as the next version (inside the caller's transaction)."""
        row = self._db.execute(
            "SELECT MAX(version_number) FROM template_versions WHERE template_id = ?",
            (template_id,),
        ).fetchone()
        version = int(row[0] or 0) + 1
        self._db.execute(
            "INSERT INTO template_versions (template_id, version_number, manifest, created_ms)"
            " VALUES (?, ?, ?, ?)",
            (template_id, version, json.dumps(manifest.to_json()), now_ms),
        )
        self._db.execute(
            "UPDATE templates SET current_version = ?, updated_ms = ? WHERE id = ?",
            (version, now_ms, template_id),
        )
        return version

    def get_template(self, project_id: str, slug: str) -> TemplateRecord | None:
        """A project's template with its current manifest, or None."""
        cache_key = (project_id, slug)
        if cache_key in self._templates:
            return self._templates[cache_key]
        with self._lock:
            row = self._db.execute(
                "SELECT id, project_id, slug, name, description, template_type, current_version,"
                " fail_message, render_seconds, created_ms, updated_ms FROM templates"
                " WHERE project_id = ? AND slug = ?",
                (project_id, slug),
            ).fetchone()
            template = self._template_from_row(row) if row else None
            self._templates[cache_key] = template
            return template

    def list_templates(self, project_id: str) -> list[TemplateRecord]:
        """A project's templates, newest-updated first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, project_id, slug, name, description, template_type, current_version,"
                " fail_message, render_seconds, created_ms, updated_ms FROM templates"
                " WHERE project_id = ? ORDER BY updated_ms DESC, slug",
                (project_id,),
            ).fetchall()
            return [self._template_from_row(row) for row in rows]

    def manifest_for(self, template_id: str, version: int) -> Manifest | None:
        """A given published version's manifest, or None if that version does not exist."""
        with self._lock:
            return self._manifest(template_id, version)

    def _manifest(self, template_id: str, version: int) -> Manifest | None:
        row = self._db.execute(
            "SELECT manifest FROM template_versions WHERE template_id = ? AND version_number = ?",
            (template_id, version),
        ).fetchone()
        return Manifest.from_json(json.loads(row[0])) if row else None

    def _template_from_row(self, row: tuple[Any, ...]) -> TemplateRecord:
        (
            template_id,
            project_id,
            slug,
            name,
            description,
            template_type,
            current,
            fail_message,
            seconds,
            created_ms,
            updated_ms,
        ) = row
        render_seconds: RenderSeconds | None = None
        if seconds is not None:
            parsed = json.loads(seconds)
            render_seconds = (
                (float(parsed[0]), float(parsed[1])) if isinstance(parsed, list) else float(parsed)
            )
        manifest = self._manifest(template_id, current) if current else None
        return TemplateRecord(
            id=template_id,
            project_id=project_id,
            slug=slug,
            name=name,
            description=description,
            template_type=template_type,
            current_version=current,
            manifest=manifest,
            fail_message=fail_message,
            render_seconds=render_seconds,
            created_ms=created_ms,
            updated_ms=updated_ms,
        )

    # --- renders --------------------------------------------------------------------------

    def render_by_key(self, project_id: str, idempotency_key: str) -> RenderRecord | None:
        """The render a project already made under an idempotency key, if any."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_RENDER_COLUMNS} FROM renders"
                " WHERE project_id = ? AND idempotency_key = ?",
                (project_id, idempotency_key),
            ).fetchone()
            return self._cache_render(row) if row else None

    def create_render(self, new: NewRender) -> tuple[RenderRecord, bool]:
        """Create a render, or return the one already holding its idempotency key.

        Returns ``(render, created)``. The check and the insert happen under one lock and a
        unique constraint, so concurrent submits with one key make exactly one render.
        """
        with self._lock:
            if new.idempotency_key is not None:
                existing = self.render_by_key(new.project_id, new.idempotency_key)
                if existing is not None:
                    return existing, False
            record = RenderRecord(
                id=_render_id(new.created_ms),
                project_id=new.project_id,
                template_id=new.template.id,
                template_slug=new.template.slug,
                version_number=new.version_number,
                idempotency_key=new.idempotency_key,
                payload_hash=new.payload_hash,
                filename=new.filename,
                created_ms=new.created_ms,
                rendering_ms=new.rendering_ms,
                finished_ms=new.finished_ms,
                outcome=new.outcome,
                error_message=new.error_message,
            )
            try:
                self._db.execute(
                    f"INSERT INTO renders ({_RENDER_COLUMNS}, data)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.id,
                        record.project_id,
                        record.template_id,
                        record.template_slug,
                        record.version_number,
                        record.idempotency_key,
                        record.payload_hash,
                        record.filename,
                        record.created_ms,
                        record.rendering_ms,
                        record.finished_ms,
                        record.outcome,
                        record.error_message,
                        json.dumps(new.data, separators=(",", ":")),
                    ),
                )
            except sqlite3.IntegrityError:
                # Another process sharing the folder won the race for this key.
                if new.idempotency_key is None:
                    raise
                existing = self.render_by_key(new.project_id, new.idempotency_key)
                if existing is None:
                    raise
                return existing, False
            self._remember(record)
            return record, True

    def get_render(self, render_id: str) -> RenderRecord | None:
        """A render by id (whatever its project), or None."""
        record = self._renders.get(render_id)
        if record is not None:
            return record
        with self._lock:
            row = self._db.execute(
                f"SELECT {_RENDER_COLUMNS} FROM renders WHERE id = ?", (render_id,)
            ).fetchone()
            return self._cache_render(row) if row else None

    def render_data(self, render_id: str) -> Any:
        """The validated data a render was made with."""
        with self._lock:
            row = self._db.execute("SELECT data FROM renders WHERE id = ?", (render_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def _cache_render(self, row: tuple[Any, ...]) -> RenderRecord:
        record = RenderRecord(*row)
        self._remember(record)
        return record

    def _remember(self, record: RenderRecord) -> None:
        """Cache a render row (the cache is emptied past :data:`RENDER_CACHE_SIZE` rows)."""
        if len(self._renders) >= RENDER_CACHE_SIZE:
            self._renders.clear()
        self._renders[record.id] = record

    def render_counts(self) -> dict[str, Any]:
        """Counts that prove "never twice", read from the persisted renders."""
        with self._lock:
            created = self._db.execute("SELECT COUNT(*) FROM renders").fetchone()[0]
            without = self._db.execute(
                "SELECT COUNT(*) FROM renders WHERE idempotency_key IS NULL"
            ).fetchone()[0]
            per_key = dict(
                self._db.execute(
                    "SELECT idempotency_key, COUNT(*) FROM renders"
                    " WHERE idempotency_key IS NOT NULL GROUP BY idempotency_key"
                ).fetchall()
            )
            per_payload = dict(
                self._db.execute(
                    "SELECT payload_hash, COUNT(*) FROM renders GROUP BY payload_hash"
                ).fetchall()
            )
            per_template = dict(
                self._db.execute(
                    "SELECT template_slug, COUNT(*) FROM renders GROUP BY template_slug"
                ).fetchall()
            )
        return {
            "renders_created": int(created),
            "renders_per_key": per_key,
            "renders_without_key": int(without),
            "renders_per_payload": per_payload,
            "renders_per_template": per_template,
        }

    # --- shares ---------------------------------------------------------------------------

    def create_share(self, new: NewShare) -> ShareRecord:
        """Store a new share (and, for a sent email, its message id and time)."""
        record = ShareRecord(
            id=str(uuid.uuid4()),
            render_id=new.render_id,
            token="cks_" + secrets.token_urlsafe(24),
            channel=new.channel,
            recipient_email=new.recipient_email,
            recipient_name=new.recipient_name,
            message=new.message,
            expires_ms=new.expires_ms,
            revoked_ms=None,
            created_ms=new.created_ms,
            click_count=0,
            email_message_id=str(uuid.uuid4()) if new.sent else None,
            sent_ms=new.created_ms if new.sent else None,
        )
        with self._lock:
            self._db.execute(
                f"INSERT INTO shares ({_SHARE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.render_id,
                    record.token,
                    record.channel,
                    record.recipient_email,
                    record.recipient_name,
                    record.message,
                    record.expires_ms,
                    record.revoked_ms,
                    record.created_ms,
                    record.click_count,
                    record.email_message_id,
                    record.sent_ms,
                ),
            )
        return record

    def list_shares(self, render_id: str) -> list[ShareRecord]:
        """A render's shares, newest first, revoked ones included."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_SHARE_COLUMNS} FROM shares WHERE render_id = ?"
                " ORDER BY created_ms DESC, rowid DESC",
                (render_id,),
            ).fetchall()
        return [ShareRecord(*row) for row in rows]

    def revoke_share(self, render_id: str, share_id: str, now_ms: int) -> ShareRecord | None:
        """Revoke a live share of a render; None when there is no such live share."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE shares SET revoked_ms = ? WHERE id = ? AND render_id = ?"
                " AND revoked_ms IS NULL",
                (now_ms, share_id, render_id),
            )
            if cursor.rowcount == 0:
                return None
            row = self._db.execute(
                f"SELECT {_SHARE_COLUMNS} FROM shares WHERE id = ?", (share_id,)
            ).fetchone()
        return ShareRecord(*row)

    def share_by_token(self, token: str) -> ShareRecord | None:
        """The share a guest link's token names, or None."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_SHARE_COLUMNS} FROM shares WHERE token = ?", (token,)
            ).fetchone()
        return ShareRecord(*row) if row else None

    def count_click(self, share_id: str) -> None:
        """Count one opening of a share link."""
        with self._lock:
            self._db.execute(
                "UPDATE shares SET click_count = click_count + 1 WHERE id = ?", (share_id,)
            )

    def sent_emails(self) -> list[dict[str, Any]]:
        """Every email sent, oldest first, with the render and key it belongs to."""
        with self._lock:
            rows = self._db.execute(
                "SELECT s.render_id, r.idempotency_key, s.id, s.recipient_email,"
                " s.recipient_name, s.message, s.expires_ms, s.email_message_id, s.sent_ms"
                " FROM shares s JOIN renders r ON r.id = s.render_id"
                " WHERE s.email_message_id IS NOT NULL ORDER BY s.sent_ms, s.rowid"
            ).fetchall()
        return [
            {
                "renderId": render_id,
                "idempotencyKey": key,
                "shareId": share_id,
                "to": to,
                "recipientName": name,
                "message": message,
                "expiresMs": expires_ms,
                "emailMessageId": message_id,
                "sentMs": sent_ms,
            }
            for (
                render_id,
                key,
                share_id,
                to,
                name,
                message,
                expires_ms,
                message_id,
                sent_ms,
            ) in rows
        ]

    def share_counts(self) -> dict[str, Any]:
        """Shares and emails, in total, per render and per idempotency key."""
        with self._lock:
            rows = self._db.execute(
                "SELECT s.render_id, r.idempotency_key, s.channel,"
                " s.email_message_id IS NOT NULL, s.revoked_ms IS NOT NULL, s.click_count"
                " FROM shares s JOIN renders r ON r.id = s.render_id"
            ).fetchall()
        per_render: dict[str, dict[str, int]] = {}
        per_key: dict[str, dict[str, int]] = {}
        emails_per_render: dict[str, int] = {}
        emails_per_key: dict[str, int] = {}
        revoked = clicks = emails = 0
        for render_id, key, channel, sent, is_revoked, click_count in rows:
            for table, name in ((per_render, render_id), (per_key, key)):
                if name is not None:
                    counts = table.setdefault(name, {LINK: 0, EMAIL: 0})
                    counts[channel] = counts.get(channel, 0) + 1
            if sent:
                emails += 1
                emails_per_render[render_id] = emails_per_render.get(render_id, 0) + 1
                if key is not None:
                    emails_per_key[key] = emails_per_key.get(key, 0) + 1
            revoked += bool(is_revoked)
            clicks += click_count
        return {
            "shares_created": len(rows),
            "shares_revoked": revoked,
            "share_clicks": clicks,
            "shares_per_render": per_render,
            "shares_per_key": per_key,
            "emails_sent": emails,
            "emails_per_render": emails_per_render,
            "emails_per_key": emails_per_key,
        }


def _render_id(created_ms: int) -> str:
    """A UUIDv7: 48 bits of milliseconds, then random bits, with version and variant set."""
    value = (created_ms & ((1 << 48) - 1)) << 80
    value |= secrets.randbits(80)
    value &= ~(0xF << 76)
    value |= 0x7 << 76
    value &= ~(0x3 << 62)
    value |= 0x2 << 62
    return str(uuid.UUID(int=value))
