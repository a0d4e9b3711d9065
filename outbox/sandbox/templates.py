"""Template definitions: the built-in set and the ``--templates FILE`` format.

A templates file is JSON::

    {
      "templates": [
        {
          "slug": "invoice",                  // required: lowercase letters, digits, dashes
          "name": "Invoice",                  // optional, defaults to the slug
          "description": "Customer invoice",  // optional
          "templateType": "canvas",           // optional, defaults to "canvas"
          "published": true,                  // optional, defaults to true
          "manifest": {"variables": [...], "loops": [...]},  // required when published
          "renderSeconds": 0.5,               // optional: overrides the sandbox's render time;
                                              //   a number or [min, max] sampled per render
          "failMessage": "Font could not be loaded"  // optional: every render ends "failed"
                                                     //   with this errorMessage
        }
      ]
    }

The manifest format is described in :mod:`outbox.sandbox.manifest`. A template with
``"published": false`` exists but has no published version: rendering it gives 409
``no_published_version`` until a manifest is published with ``PUT /v1/templates/:slug``.

The built-in set (``templates.json`` beside this module) holds ``inspection-report``,
``invoice``, ``always-fails`` and the unpublished ``draft-report``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from outbox import rules
from outbox.sandbox.manifest import Manifest, ManifestError

#: The file holding the built-in templates.
BUILTIN_TEMPLATES: Path = Path(__file__).with_name("templates.json")

#: A render time: fixed seconds, or a (min, max) range sampled per render.
RenderSeconds = float | tuple[float, float]


class TemplateFileError(ValueError):
    """A templates file that cannot be used, with the reason."""


@dataclass(frozen=True)
class TemplateSpec:
    """One template as defined in a templates file."""

    slug: str
    name: str
    description: str | None = None
    template_type: str = "canvas"
    published: bool = True
    manifest: Manifest | None = None
    render_seconds: RenderSeconds | None = None
    fail_message: str | None = None

    def fingerprint(self) -> str:
        """A hash of the definition, to notice when a templates file has changed."""
        body = {
            "name": self.name,
            "description": self.description,
            "type": self.template_type,
            "published": self.published,
            "manifest": self.manifest.to_json() if self.manifest else None,
            "renderSeconds": self.render_seconds,
            "failMessage": self.fail_message,
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def parse_render_seconds(value: object) -> RenderSeconds:
    """Accept a non-negative number or a ``[min, max]`` pair."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        low, high = float(value[0]), float(value[1])
        if 0 <= low <= high:
            return (low, high)
    raise ValueError(f"render seconds must be a number >= 0 or [min, max], not {value!r}")


def load_templates(path: str | Path | None = None) -> list[TemplateSpec]:
    """Read a templates file (the built-in set when ``path`` is None)."""
    source = Path(path) if path is not None else BUILTIN_TEMPLATES
    try:
        document = json.loads(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TemplateFileError(f"cannot read templates file {source}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise TemplateFileError(f"templates file {source} is not valid JSON: {exc}") from exc
    return parse_templates(document, str(source))


def parse_templates(document: object, where: str = "templates") -> list[TemplateSpec]:
    """Turn a parsed templates document into specs; raise :class:`TemplateFileError`."""
    raw_list = document.get("templates") if isinstance(document, Mapping) else document
    if not isinstance(raw_list, list):
        raise TemplateFileError(f'{where}: expected {{"templates": [...]}}')
    specs: list[TemplateSpec] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_list):
        spec = _parse_one(raw, f"{where}: templates[{index}]")
        if spec.slug in seen:
            raise TemplateFileError(f"{where}: duplicate slug {spec.slug!r}")
        seen.add(spec.slug)
        specs.append(spec)
    return specs


def _parse_one(raw: object, where: str) -> TemplateSpec:
    if not isinstance(raw, Mapping):
        raise TemplateFileError(f"{where}: expected an object")
    slug = raw.get("slug")
    if not rules.is_slug(slug):
        raise TemplateFileError(f"{where}: 'slug' must be {rules.SLUG_RULE}")
    name = raw.get("name", slug)
    description = raw.get("description")
    template_type = raw.get("templateType", "canvas")
    published = raw.get("published", True)
    fail_message = raw.get("failMessage")
    if not isinstance(name, str):
        raise TemplateFileError(f"{where}: 'name' must be a string")
    if description is not None and not isinstance(description, str):
        raise TemplateFileError(f"{where}: 'description' must be a string")
    if not isinstance(template_type, str):
        raise TemplateFileError(f"{where}: 'templateType' must be a string")
    if not isinstance(published, bool):
        raise TemplateFileError(f"{where}: 'published' must be true or false")
    if fail_message is not None and not isinstance(fail_message, str):
        raise TemplateFileError(f"{where}: 'failMessage' must be a string")
    manifest: Manifest | None = None
    raw_manifest = raw.get("manifest")
    if raw_manifest is not None:
        try:
            manifest = Manifest.from_json(raw_manifest)
        except ManifestError as exc:
            raise TemplateFileError(f"{where}: {exc.message} {exc.field_errors}") from exc
    elif published:
        raise TemplateFileError(f"{where}: a published template needs a 'manifest'")
    render_seconds: RenderSeconds | None = None
    if raw.get("renderSeconds") is not None:
        try:
            render_seconds = parse_render_seconds(raw["renderSeconds"])
        except ValueError as exc:
            raise TemplateFileError(f"{where}: {exc}") from exc
    return TemplateSpec(
        slug=slug,
        name=name,
        description=description,
        template_type=template_type,
        published=published,
        manifest=manifest,
        render_seconds=render_seconds,
        fail_message=fail_message,
    )
