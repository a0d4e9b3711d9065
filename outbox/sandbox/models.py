"""The sandbox's records and how they look on the wire.

A render's status is never stored: it follows from the sandbox clock and the timings fixed
when the render was created (``queued`` until ``rendering_ms``, ``rendering`` until
``finished_ms``, then its ``outcome``). That is why a render keeps progressing across a
restart of the sandbox, and why a test can drive the lifecycle with a fake clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from outbox.sandbox.manifest import Manifest

#: Status values a render goes through (``cancelled`` exists in Craftkit but is never produced).
QUEUED, RENDERING, SUCCEEDED, FAILED = "queued", "rendering", "succeeded", "failed"


def iso_ms(epoch_ms: int) -> str:
    """UTC ISO-8601 with milliseconds and ``Z``, the way Craftkit writes times."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class RenderRecord:
    """One render as persisted (its data lives only in the database)."""

    id: str
    project_id: str
    template_id: str
    template_slug: str
    version_number: int
    idempotency_key: str | None
    payload_hash: str
    filename: str | None
    created_ms: int
    rendering_ms: int
    finished_ms: int
    outcome: str
    error_message: str | None

    def status_at(self, now_ms: int) -> str:
        """The render's status at ``now_ms`` (epoch milliseconds)."""
        if now_ms >= self.finished_ms:
            return self.outcome
        if now_ms >= self.rendering_ms:
            return RENDERING
        return QUEUED

    def to_json(
        self, now_ms: int, base_url: str, public_url: str | None, *, detail: bool
    ) -> dict[str, Any]:
        """The render body: the POST shape, plus ``completedAt``/``durationMs`` when ``detail``.

        ``public_url`` is the PDF's public address, or None when the public bucket is off.
        """
        status = self.status_at(now_ms)
        done = status in (SUCCEEDED, FAILED)
        body: dict[str, Any] = {
            "id": self.id,
            "status": status,
            "pollUrl": f"{base_url}/v1/renders/{self.id}",
            "downloadUrl": public_url if status == SUCCEEDED else None,
            "errorMessage": self.error_message if status == FAILED else None,
            "createdAt": iso_ms(self.created_ms),
        }
        if detail:
            body["completedAt"] = iso_ms(self.finished_ms) if done else None
            body["durationMs"] = self.finished_ms - self.created_ms if done else None
        return body


@dataclass(frozen=True, slots=True)
class TemplateRecord:
    """One template of one project, with its current published version (if any)."""

    id: str
    project_id: str
    slug: str
    name: str
    description: str | None
    template_type: str
    current_version: int | None
    manifest: Manifest | None
    fail_message: str | None
    render_seconds: float | tuple[float, float] | None
    created_ms: int
    updated_ms: int

    @property
    def published(self) -> bool:
        """Whether any version has been published."""
        return self.current_version is not None

    def summary_json(self) -> dict[str, Any]:
        """The shape of one entry of ``GET /v1/templates``."""
        return {
            "id": self.id,
            "name": self.name,
            "slug": self.slug,
            "templateType": self.template_type,
            "currentVersionNumber": self.current_version,
            "published": self.published,
            "createdAt": iso_ms(self.created_ms),
            "updatedAt": iso_ms(self.updated_ms),
        }


#: Share channels (``POST /v1/renders/:id/email`` makes ``email`` ones).
LINK, EMAIL = "link", "email"


@dataclass(frozen=True, slots=True)
class ShareRecord:
    """One share link of a render as persisted; an email share also records its sending."""

    id: str
    render_id: str
    token: str
    channel: str
    recipient_email: str | None
    recipient_name: str | None
    message: str | None
    expires_ms: int | None
    revoked_ms: int | None
    created_ms: int
    click_count: int
    email_message_id: str | None
    sent_ms: int | None

    def url(self, base_url: str) -> str:
        """The guest-facing address, ``{base}/share/{token}``."""
        return f"{base_url}/share/{self.token}"

    def resolves_at(self, now_ms: int) -> bool:
        """Whether the link still opens: neither revoked nor expired."""
        return self.revoked_ms is None and (self.expires_ms is None or now_ms < self.expires_ms)

    def to_json(self, base_url: str, *, clicks: bool = False) -> dict[str, Any]:
        """The create-share answer; with ``clicks``, a row of the share list."""
        body: dict[str, Any] = {
            "id": self.id,
            "shareToken": self.token,
            "shareUrl": self.url(base_url),
            "channel": self.channel,
            "recipientEmail": self.recipient_email,
            "message": self.message,
            "expiresAt": iso_ms(self.expires_ms) if self.expires_ms is not None else None,
            "revokedAt": iso_ms(self.revoked_ms) if self.revoked_ms is not None else None,
            "createdAt": iso_ms(self.created_ms),
        }
        if clicks:
            body["clickCount"] = self.click_count
        return body

    def email_json(self, base_url: str) -> dict[str, Any]:
        """The answer of ``POST /v1/renders/:id/email``."""
        return {
            "id": self.id,
            "shareToken": self.token,
            "shareUrl": self.url(base_url),
            "emailMessageId": self.email_message_id,
            "sentAt": iso_ms(self.sent_ms) if self.sent_ms is not None else None,
        }
