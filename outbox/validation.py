"""Check render data against a cached template before it is queued, the way Craftkit would.

A rejection found hours later, back at the office, is the worst outcome for a field app: the
person who could fix the data has left the site. So outbox checks data against the template
Craftkit published (``jsonSchema`` and ``manifest``, cached by ``outbox templates sync``) while
the person is still there, offline, and reports problems exactly as Craftkit's
``invalid_input_data`` would: Zod's ``fieldErrors``, keyed by dotted paths such as
``customer.name`` or ``findings.0.severity``, with Zod's words (from :mod:`outbox.rules`).

:class:`SchemaCheck` does the checking: the :mod:`jsonschema` library finds what is wrong, and
each failure is translated into Craftkit's key and message; the manifest supplies what a schema
cannot say (which form a string field must have, and that ``2026-02-30`` is no date).
:class:`Checker` applies it to cached templates and returns a :class:`DataCheck`, which
decides, per validation mode, whether the data may be queued.
"""

from __future__ import annotations

import enum
import functools
import logging
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal, cast

import jsonschema
from jsonschema import Draft7Validator, ValidationError, validators
from jsonschema.protocols import Validator

from . import rules
from .errors import DataInvalid, InvalidArgument, TemplateUnknown, TemplateUnpublished
from .templates import CachedTemplate

log = logging.getLogger(__name__)

FieldErrors = dict[str, list[str]]

#: What ``enqueue`` does with data the cached template refuses: refuse it too, queue it with a
#: warning, or not check at all.
ValidationMode = Literal["reject", "warn", "off"]
VALIDATION_MODES: tuple[ValidationMode, ...] = ("reject", "warn", "off")

#: A path into render data: object keys and array indices.
DataPath = tuple[str | int, ...]
#: Marks "any index of a loop" in a manifest field's path.
_ANY_ITEM = "*"


def validation_mode(value: object) -> ValidationMode:
    """Check a validation mode given by a caller."""
    for mode in VALIDATION_MODES:
        if value == mode:
            return mode
    raise InvalidArgument(f"validation must be one of {', '.join(VALIDATION_MODES)}, not {value!r}")


# -- the check itself --------------------------------------------------------------------


class SchemaCheck:
    """Data checking for one published template version: its ``jsonSchema`` and ``manifest``.

    Raises :class:`jsonschema.SchemaError` if the schema itself is not valid.
    """

    def __init__(self, json_schema: dict[str, Any], manifest: Mapping[str, Any] | None) -> None:
        base = validators.validator_for(json_schema, default=Draft7Validator)
        base.check_schema(json_schema)
        self._schema = json_schema
        self._validator = _with_ecma_patterns(base)(json_schema, format_checker=None)
        self._data_types = _data_types(manifest)

    def errors(self, data: Mapping[str, Any]) -> FieldErrors:
        """Craftkit's ``fieldErrors`` for ``data`` (empty when Craftkit would accept it)."""
        found: dict[DataPath, list[str]] = {}
        # Craftkit does not look inside a loop that is too long: neither do we.
        cut: list[DataPath] = []
        failures = sorted(self._validator.iter_errors(data), key=lambda e: len(e.absolute_path))
        for failure in failures:
            path: DataPath = tuple(failure.absolute_path)
            if _inside_any(path, cut):
                continue
            if failure.validator == "maxItems":
                cut.append(path)
            for where, message in self._translate(failure, path):
                messages = found.setdefault(where, [])
                if message not in messages:
                    messages.append(message)
        self._beyond_the_schema(data, found, cut)
        ordered = sorted(found, key=self._position)
        return {_key(path): found[path] for path in ordered}

    def _translate(
        self, failure: ValidationError, path: DataPath
    ) -> Iterator[tuple[DataPath, str]]:
        """Craftkit's field key(s) and message for one jsonschema failure."""
        keyword = failure.validator
        value = failure.instance
        if keyword == "required":
            # Zod reports every required leaf of a missing object, under its dotted key.
            properties = _schema_of(failure).get("properties", {})
            names = cast(list[str], failure.validator_value)
            for name in names:
                if isinstance(value, dict) and name not in value:
                    for leaf in _required_leaves(properties.get(name, {}), (*path, name)):
                        yield leaf, rules.MSG_REQUIRED
        elif keyword == "type":
            yield path, rules.expected(_type_name(failure.validator_value), value)
        elif keyword in ("anyOf", "oneOf"):
            # Craftkit's coercing types (a number, or a numeric string): name the real type.
            branches = cast(list[Any], failure.validator_value)
            yield path, rules.expected(_first_type(branches), value)
        elif keyword in ("pattern", "format", "enum", "const"):
            yield path, self._form_message(path, failure)
        elif keyword == "maxItems":
            yield path, rules.array_too_big(cast(int, failure.validator_value))
        elif keyword == "minLength":
            yield path, rules.string_too_short(cast(int, failure.validator_value))
        elif keyword == "maxLength":
            yield path, rules.string_too_long(cast(int, failure.validator_value))
        else:
            yield path, rules.MSG_INVALID_INPUT

    def _form_message(self, path: DataPath, failure: ValidationError) -> str:
        """The message for a string that does not have its field's form."""
        data_type = self._data_types.get(_pattern_of(path))
        if data_type in rules.FORM_MESSAGES:
            return rules.FORM_MESSAGES[data_type]
        pattern = failure.validator_value if failure.validator == "pattern" else None
        if isinstance(pattern, str) and pattern in _PATTERN_MESSAGES:
            return _PATTERN_MESSAGES[pattern]
        form = _schema_of(failure).get("format")
        if isinstance(form, str) and form in _FORMAT_MESSAGES:
            return _FORMAT_MESSAGES[form]
        return rules.MSG_INVALID_INPUT

    def _beyond_the_schema(
        self, data: Mapping[str, Any], found: dict[DataPath, list[str]], cut: list[DataPath]
    ) -> None:
        """What Craftkit refuses although the schema allows it.

        A date that matches the pattern but does not exist (``2026-02-30``), and a numeric
        string too large to be a number (``1e999``).
        """
        for pattern, data_type in self._data_types.items():
            if data_type not in ("date", "datetime", "number", "currency"):
                continue
            for path, value in _values_at(data, pattern, ()):
                if path in found or _inside_any(path, cut):
                    continue
                message = _extra_problem(data_type, value)
                if message is not None:
                    found[path] = [message]

    def _position(self, path: DataPath) -> tuple[int, ...]:
        """Where a field comes in the schema, so errors are listed in the template's order."""
        node: Any = self._schema
        position: list[int] = []
        for part in path:
            if isinstance(part, int):
                position.append(part)
                node = node.get("items", {}) if isinstance(node, dict) else {}
                continue
            properties = node.get("properties", {}) if isinstance(node, dict) else {}
            names = list(properties)
            position.append(names.index(part) if part in names else len(names))
            node = properties.get(part, {})
        return tuple(position)


def _extra_problem(data_type: str, value: Any) -> str | None:
    if data_type in ("date", "datetime"):
        if isinstance(value, str) and not _is_calendar_date(value[:10]):
            return rules.FORM_MESSAGES[data_type]
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return rules.expected("number", value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        if not math.isfinite(number):
            return rules.expected("number", value)
    return None


def _is_calendar_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


#: Messages for the patterns Craftkit's schema uses, when the manifest does not say the type.
_PATTERN_MESSAGES: dict[str, str] = {
    rules.DATE_PATTERN: rules.MSG_INVALID_DATE,
    rules.DATETIME_PATTERN: rules.MSG_INVALID_DATETIME,
    rules.URL_PATTERN: rules.MSG_INVALID_URL,
    rules.EMAIL_PATTERN: rules.MSG_INVALID_EMAIL,
}
_FORMAT_MESSAGES: dict[str, str] = {
    "uri": rules.MSG_INVALID_URL,
    "email": rules.MSG_INVALID_EMAIL,
}


def _schema_of(failure: ValidationError) -> Mapping[str, Any]:
    """The schema (sub)object a failure comes from (``{}`` for a boolean schema)."""
    schema = failure.schema
    return schema if isinstance(schema, Mapping) else {}


def _key(path: DataPath) -> str:
    """Craftkit's field key for a path: ``customer.name``, ``findings.0.severity``."""
    return ".".join(str(part) for part in path) or "data"


def _pattern_of(path: DataPath) -> tuple[str, ...]:
    """A data path with loop indices replaced by ``*``, to look up its manifest field."""
    return tuple(_ANY_ITEM if isinstance(part, int) else part for part in path)


def _inside_any(path: DataPath, roots: list[DataPath]) -> bool:
    return any(len(path) > len(root) and path[: len(root)] == root for root in roots)


def _required_leaves(schema: Any, path: DataPath) -> list[DataPath]:
    """The required fields under a missing property: itself, or its required descendants."""
    if isinstance(schema, dict) and schema.get("type") == "object" and schema.get("required"):
        properties = schema.get("properties", {})
        leaves: list[DataPath] = []
        for name in schema["required"]:
            leaves.extend(_required_leaves(properties.get(name, {}), (*path, name)))
        return leaves
    return [path]


def _type_name(expected: Any) -> str:
    """Zod's name for a JSON Schema type (the first one, if several are allowed)."""
    name = expected[0] if isinstance(expected, list) and expected else expected
    return "number" if name == "integer" else str(name)


def _first_type(branches: list[Any]) -> str:
    """The type a coercing ``anyOf`` really stands for (a number that may come as a string)."""
    types = [b.get("type") for b in branches if isinstance(b, dict) and b.get("type")]
    for name in types:
        if name != "string":
            return _type_name(name)
    return _type_name(types[0]) if types else "string"


def _values_at(
    node: Any, pattern: tuple[str, ...], prefix: DataPath
) -> Iterator[tuple[DataPath, Any]]:
    """Every value in ``node`` at a manifest field's path (``*`` standing for loop items)."""
    if not pattern:
        yield prefix, node
        return
    head, rest = pattern[0], pattern[1:]
    if head == _ANY_ITEM:
        if isinstance(node, list):
            for index, item in enumerate(node):
                yield from _values_at(item, rest, (*prefix, index))
    elif isinstance(node, dict) and head in node:
        yield from _values_at(node[head], rest, (*prefix, head))


def _data_types(manifest: Mapping[str, Any] | None) -> dict[tuple[str, ...], str]:
    """Each manifest field's path (loop items under ``*``) and its ``dataType``."""
    types: dict[tuple[str, ...], str] = {}
    if not manifest:
        return types
    for variable in _list(manifest.get("variables")):
        if isinstance(variable, dict) and isinstance(variable.get("key"), str):
            types[tuple(variable["key"].split("."))] = str(variable.get("dataType", "text"))
    for loop in _list(manifest.get("loops")):
        if not (isinstance(loop, dict) and isinstance(loop.get("key"), str)):
            continue
        for item_field in _list(loop.get("itemFields")):
            if isinstance(item_field, dict) and isinstance(item_field.get("key"), str):
                path = (loop["key"], _ANY_ITEM, *item_field["key"].split("."))
                types[path] = str(item_field.get("dataType", "text"))
    return types


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


# -- ECMAScript patterns -----------------------------------------------------------------


@functools.cache
def _with_ecma_patterns(base: type[Validator]) -> type[Validator]:
    """``base`` with ``pattern`` read as ECMAScript reads it (as JSON Schema says).

    The difference that matters: in Python ``$`` also matches before a final newline, so
    ``"https://example.com\\n"`` would pass a URL pattern that Craftkit's validator refuses.
    """
    extended = validators.extend(base, {"pattern": _ecma_pattern})  # type: ignore[no-untyped-call]
    return cast(type[Validator], extended)


def _ecma_pattern(
    validator: Validator, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _ecma_regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


@functools.lru_cache(maxsize=256)
def _ecma_regex(pattern: str) -> re.Pattern[str]:
    """Compile an ECMAScript pattern for Python: ``$`` outside a class means end of input."""
    out: list[str] = []
    in_class = False
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            out.append(pattern[index : index + 2])
            index += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "$":
            char = r"\Z"
        out.append(char)
        index += 1
    return re.compile("".join(out))


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
        self._compiled: dict[str, tuple[CachedTemplate, SchemaCheck]] = {}

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
            field_errors = self._compile(cached).errors(data)
        except (jsonschema.SchemaError, re.error, ValueError, TypeError) as exc:
            log.warning("cannot use the cached schema of template %s: %s", template, exc)
            return result(
                CheckOutcome.UNCHECKED,
                reason=f"the cached schema of template {template} cannot be used "
                f"({str(exc).splitlines()[0]}); the data was not checked",
            )
        if field_errors:
            return result(CheckOutcome.INVALID, field_errors=field_errors)
        return result(CheckOutcome.VALID)

    def _compile(self, cached: CachedTemplate) -> SchemaCheck:
        if cached.json_schema is None:
            raise ValueError("no jsonSchema was published with it")
        known = self._compiled.get(cached.slug)
        if known is not None and known[0] == cached:
            return known[1]
        schema_check = SchemaCheck(cached.json_schema, cached.manifest)
        self._compiled[cached.slug] = (cached, schema_check)
        return schema_check
