"""Cached templates: what Craftkit publishes about a template, kept for checking data offline.

``GET /v1/templates/:slug`` returns a template's published ``manifest`` (its variables and
loops) and a ``jsonSchema`` generated from it. outbox keeps the current published version of
each template in the journal (``outbox templates sync``), so that data can be checked before it
is queued, far from any network. Pure data: nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidArgument


@dataclass(frozen=True)
class CachedTemplate:
    """One template as Craftkit published it when it was last synced.

    ``version`` is the current published version at ``synced_at`` (None, with ``manifest`` and
    ``json_schema`` None too, while nothing is published). ``previous_version`` and
    ``changed_at`` record the last time a sync or refresh found a different version than the
    cache held, so a rejection can say that the template changed under queued data.
    """

    slug: str
    name: str | None
    version: int | None
    published: bool
    manifest: dict[str, Any] | None
    json_schema: dict[str, Any] | None
    updated_at: str | None
    synced_at: str
    previous_version: int | None = None
    changed_at: str | None = None

    @classmethod
    def from_api(cls, body: Mapping[str, Any], synced_at: str) -> CachedTemplate:
        """Build a record from a ``GET /v1/templates/:slug`` answer.

        Raises :class:`InvalidArgument` if the answer does not look like a Craftkit template.
        """
        slug = body.get("slug")
        if not isinstance(slug, str) or not slug:
            raise InvalidArgument("the template answer has no slug")
        manifest = body.get("manifest")
        schema = body.get("jsonSchema")
        version = body.get("currentVersionNumber")
        if manifest is not None and not isinstance(manifest, dict):
            raise InvalidArgument(f"template {slug!r}: 'manifest' is not an object")
        if schema is not None and not isinstance(schema, dict):
            raise InvalidArgument(f"template {slug!r}: 'jsonSchema' is not an object")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise InvalidArgument(f"template {slug!r}: 'currentVersionNumber' is not a number")
        published = body.get("published")
        name = body.get("name")
        updated = body.get("updatedAt")
        return cls(
            slug=slug,
            name=name if isinstance(name, str) else None,
            version=version,
            published=bool(published) if isinstance(published, bool) else manifest is not None,
            manifest=manifest,
            json_schema=schema,
            updated_at=updated if isinstance(updated, str) else None,
            synced_at=synced_at,
        )

    @property
    def has_published_version(self) -> bool:
        """Whether there is a published manifest to check data against."""
        return self.published and self.manifest is not None

    def field_count(self) -> tuple[int, int]:
        """How many variables and loops the published manifest has ((0, 0) if none)."""
        if self.manifest is None:
            return 0, 0
        variables = self.manifest.get("variables")
        loops = self.manifest.get("loops")
        return (
            len(variables) if isinstance(variables, list) else 0,
            len(loops) if isinstance(loops, list) else 0,
        )

    def to_public(self) -> dict[str, Any]:
        """The JSON-ready view ``outbox templates list --json`` prints."""
        return {
            "slug": self.slug,
            "name": self.name,
            "version": self.version,
            "published": self.published,
            "updated_at": self.updated_at,
            "synced_at": self.synced_at,
            "previous_version": self.previous_version,
            "changed_at": self.changed_at,
            "manifest": self.manifest,
        }
