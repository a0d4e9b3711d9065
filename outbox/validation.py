"""Check render data against a cached template before it is queued, the way Craftkit would.

A rejection found hours later, back at the office, is the worst outcome for a field app: the
person who could fix the data has left the site. So outbox checks data against the template
Craftkit published (its ``manifest``, cached by ``outbox templates sync``) while the person is
still there, offline, and reports problems exactly as Craftkit's ``invalid_input_data`` would:
Zod's ``fieldErrors``, keyed by dotted paths such as ``customer.name`` or
``findings.0.severity``, with Zod's words.

Craftkit validates render data against the manifest (each variable's ``dataType`` and
``required``); the ``jsonSchema`` it publishes beside it is generated from that manifest, and
may well say less (``"format": "uri"`` with no pattern, ``"type": "number"`` where numeric
strings are coerced) or nothing at all. So the manifest alone decides, by the docs' dataType
table in :func:`outbox.rules.check_data` — the very code the sandbox validates renders with —
and the schema is never evaluated: a document from the network runs no pattern here and is
followed to no ``$ref``. :class:`Checker` applies the check to cached templates and returns a
:class:`DataCheck`, which decides, per validation mode, whether the data may be queued.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from . import rules
from .errors import DataInvalid, InvalidArgument, TemplateUnknown, TemplateUnpublished
from .rules import FieldErrors
from .templates import CachedTemplate

log = logging.getLogger(__name__)

#: What ``enqueue`` does with data the cached template refuses: refuse it too, queue it with a
#: warning, or not check at all.
ValidationMode = Literal["reject", "warn", "off"]
VALIDATION_MODES: tuple[ValidationMode, ...] = ("reject", "warn", "off")


def validation_mode(value: object) -> ValidationMode:
    """Check a validation mode given by a caller."""
    for mode in VALIDATION_MODES:
        if value == mode:
            return mode
    raise InvalidArgument(f"validation must be one of {', '.join(VALIDATION_MODES)}, not {value!r}")


# -- the check itself --------------------------------------------------------------------


class ManifestUnreadable(ValueError):
    """A cached manifest that is not shaped like one Craftkit publishes."""


@dataclass(frozen=True)
class ManifestField:
    """A variable, or a loop's item field, as the cached manifest describes it."""

    key: str
    data_type: str
    required: bool = False


@dataclass(frozen=True)
class ManifestLoop:
    """A loop of the cached manifest: an array of objects holding ``item_fields``."""

    key: str
    item_fields: tuple[ManifestField, ...]


class ManifestCheck:
    """Data checking for one published template version, from its ``manifest`` alone.

    Raises :class:`ManifestUnreadable` for a manifest not shaped like Craftkit's. A
    ``dataType`` outbox does not know (one Craftkit added since) takes any value.
    """

    def __init__(self, manifest: Mapping[str, Any]) -> None:
        if not isinstance(manifest, Mapping):
            raise ManifestUnreadable("it is not a JSON object")
        self.variables = _fields(manifest.get("variables", []), "variables")
        loops: list[ManifestLoop] = []
        for index, raw in enumerate(_array(manifest.get("loops", []), "loops")):
            where = f"loops.{index}"
            if not isinstance(raw, Mapping) or not _is_key(raw.get("key")) or "." in raw["key"]:
                raise ManifestUnreadable(f"{where} has no valid dot-free key")
            item_fields = _fields(raw.get("itemFields", []), f"{where}.itemFields")
            loops.append(ManifestLoop(raw["key"], item_fields))
        self.loops = tuple(loops)

    def errors(self, data: dict[str, Any]) -> FieldErrors:
        """Craftkit's ``fieldErrors`` for ``data`` (empty when Craftkit would accept it)."""
        return rules.check_data(self.variables, self.loops, data)[1]


def _fields(raw: Any, where: str) -> tuple[ManifestField, ...]:
    fields: list[ManifestField] = []
    for index, item in enumerate(_array(raw, where)):
        if not isinstance(item, Mapping) or not _is_key(item.get("key")):
            raise ManifestUnreadable(f"{where}.{index} has no valid key")
        data_type = item.get("dataType", "text")
        required = item.get("required", False)
        if not isinstance(data_type, str) or not isinstance(required, bool):
            raise ManifestUnreadable(f"{where}.{index} has a malformed dataType or required")
        fields.append(ManifestField(item["key"], data_type, required))
    return tuple(fields)


def _array(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ManifestUnreadable(f"{where} is not an array")
    return value


def _is_key(value: Any) -> bool:
    """A manifest key: one or more non-empty dot-separated segments."""
    return isinstance(value, str) and bool(value) and all(value.split("."))


# -- the outcome, and what each mode does with it ----------------------------------------


class CheckOutcome(enum.StrEnum):
    """What checking data against the cache found."""

    #: The data matches the cached template.
    VALID = "valid"
    #: Craftkit would refuse the data (``invalid_input_data``); see ``field_errors``.
    INVALID = "invalid"
    #: The cached template has no published version (Craftkit: ``no_published_version``).
    UNPUBLISHED = "unpublished"
    #: The template is not in the cache: nothing to check against (never fully synced).
    UNCACHED = "uncached"
    #: The template is not in the cache although a full sync ran: Craftkit has no such
    #: template (as of that sync).
    UNKNOWN_TEMPLATE = "unknown_template"
    #: The template is cached but could not be used for this request (see ``reason``).
    UNCHECKED = "unchecked"


_SYNC_IF_PUBLISHED = "run `outbox templates sync` if it has been published since"
_SYNC_IF_CREATED = "check the slug, or run `outbox templates sync` if it was created since"


@dataclass(frozen=True)
class DataCheck:
    """The result of checking one request's data against the template cache."""

    template: str
    outcome: CheckOutcome
    version: int | None = None
    synced_at: str | None = None
    field_errors: FieldErrors = field(default_factory=dict)
    reason: str | None = None

    @property
    def passed(self) -> bool:
        """False when the cache says Craftkit would refuse the request."""
        return self.outcome not in (
            CheckOutcome.INVALID,
            CheckOutcome.UNPUBLISHED,
            CheckOutcome.UNKNOWN_TEMPLATE,
        )

    def message(self) -> str | None:
        """What a person should be told (None when the data simply matches)."""
        if self.outcome is CheckOutcome.INVALID:
            return f"{self._mismatch()}:\n{self._field_lines()}"
        if self.outcome is CheckOutcome.UNPUBLISHED:
            return f"{self._unpublished()}; {_SYNC_IF_PUBLISHED}"
        if self.outcome is CheckOutcome.UNKNOWN_TEMPLATE:
            return f"{self._unknown()}; {_SYNC_IF_CREATED}"
        return self.reason

    def error(self) -> DataInvalid | TemplateUnpublished | TemplateUnknown | None:
        """The error ``enqueue`` raises for this result in ``reject`` mode (None if it passed)."""
        if self.outcome is CheckOutcome.INVALID:
            return DataInvalid(
                f"{self._mismatch()}; nothing was queued:\n{self._field_lines()}",
                template=self.template,
                version=self.version,
                field_errors=self.field_errors,
            )
        if self.outcome is CheckOutcome.UNPUBLISHED:
            return TemplateUnpublished(
                f"{self._unpublished()}; nothing was queued: {_SYNC_IF_PUBLISHED}",
                template=self.template,
            )
        if self.outcome is CheckOutcome.UNKNOWN_TEMPLATE:
            assert self.synced_at is not None
            return TemplateUnknown(
                f"{self._unknown()}; nothing was queued: {_SYNC_IF_CREATED}",
                template=self.template,
                synced_at=self.synced_at,
            )
        return None

    def _unknown(self) -> str:
        return (
            f"template {self.template} does not exist at Craftkit "
            f"(templates synced {self.synced_at})"
        )

    def _unpublished(self) -> str:
        return (
            f"template '{self.template}' has no published version"
            f" (as of the sync at {self.synced_at})"
        )

    def _mismatch(self) -> str:
        return (
            f"data does not match template '{self.template}' version {self.version}"
            f" (synced {self.synced_at})"
        )

    def _field_lines(self) -> str:
        """One ``  field: message`` line per problem."""
        return "\n".join(
            f"  {name}: {message}"
            for name, messages in self.field_errors.items()
            for message in messages
        )

    def enforce(self, mode: ValidationMode) -> None:
        """Raise this result's error in ``reject`` mode; otherwise let the request through."""
        problem = self.error()
        if mode == "reject" and problem is not None:
            raise problem


class Checker:
    """Checks data against cached templates, keeping each template's compiled check.

    Only the version cached is known (``outbox templates sync`` keeps the current published
    version of every template). A request pinned to another ``version`` is therefore not
    checked: its data is accepted as it is, and the result says why.
    """

    def __init__(self) -> None:
        self._compiled: dict[str, tuple[CachedTemplate, ManifestCheck]] = {}

    def check(
        self,
        cached: CachedTemplate | None,
        template: str,
        data: Mapping[str, Any],
        *,
        version: int | None = None,
        synced_at: str | None = None,
    ) -> DataCheck:
        """Check ``data`` for ``template`` against ``cached`` (None: the template is not cached).

        ``synced_at`` is when the last full ``templates sync`` ran (None: never): after one,
        a template that is not cached does not exist at Craftkit.
        """
        if cached is None and synced_at is not None:
            return DataCheck(template, CheckOutcome.UNKNOWN_TEMPLATE, synced_at=synced_at)
        if cached is None:
            return DataCheck(
                template,
                CheckOutcome.UNCACHED,
                reason=f"template {template} is not cached; run `outbox templates sync` while "
                "online to check data before queueing",
            )

        def result(outcome: CheckOutcome, **details: Any) -> DataCheck:
            return DataCheck(
                template, outcome, version=cached.version, synced_at=cached.synced_at, **details
            )

        if not cached.has_published_version:
            return result(CheckOutcome.UNPUBLISHED)
        if version is not None and version != cached.version:
            return result(
                CheckOutcome.UNCHECKED,
                reason=f"template {template} is pinned to version {version}, but the cache holds "
                f"version {cached.version} only; the data was not checked",
            )
        try:
            field_errors = self._compile(cached).errors(dict(data))
        except ManifestUnreadable as exc:
            log.warning("cannot read the cached manifest of template %s: %s", template, exc)
            return result(
                CheckOutcome.UNCHECKED,
                reason=f"the cached manifest of template {template} cannot be read ({exc}); "
                "the data was not checked",
            )
        if field_errors:
            return result(CheckOutcome.INVALID, field_errors=field_errors)
        return result(CheckOutcome.VALID)

    def _compile(self, cached: CachedTemplate) -> ManifestCheck:
        known = self._compiled.get(cached.slug)
        if known is not None and known[0] == cached:
            return known[1]
        assert cached.manifest is not None  # has_published_version
        compiled = ManifestCheck(cached.manifest)
        self._compiled[cached.slug] = (cached, compiled)
        return compiled
