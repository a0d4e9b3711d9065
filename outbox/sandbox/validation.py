"""Validate render data against a manifest, the way Craftkit does.

:func:`validate_data` returns the cleaned data (unknown keys stripped, numeric and boolean
strings coerced) and the field errors of Zod's ``flatten()`` output, keyed by dotted paths such
as ``customer.name`` or ``findings.0.severity``. An empty error dict means the data is valid.
"""

from __future__ import annotations

import math
import re
from datetime import date
from typing import Any

from outbox import rules
from outbox.sandbox.manifest import Manifest, Variable

_NUMERIC = re.compile(rules.NUMERIC_STRING_PATTERN)
_DATE = re.compile(rules.DATE_PATTERN)
_DATETIME = re.compile(rules.DATETIME_PATTERN)
_URL = re.compile(rules.URL_PATTERN)
_EMAIL = re.compile(rules.EMAIL_PATTERN)

FieldErrors = dict[str, list[str]]


class _Missing:
    """Marks a value that is absent (as opposed to present and ``null``)."""


_MISSING = _Missing()
#: An absent value whose parent was not an object (that error is already reported).
_MISSING_REPORTED = _Missing()


def validate_data(manifest: Manifest, data: dict[str, Any]) -> tuple[dict[str, Any], FieldErrors]:
    """Check ``data`` against ``manifest``; return ``(cleaned data, field errors)``."""
    cleaned: dict[str, Any] = {}
    errors: FieldErrors = {}
    _validate_fields(manifest.variables, data, "", cleaned, errors)
    for loop in manifest.loops:
        value = data.get(loop.key, _MISSING)
        if value is _MISSING:
            continue
        if not isinstance(value, list):
            _add(errors, loop.key, rules.expected("array", value))
            continue
        if len(value) > rules.MAX_LOOP_ITEMS:
            _add(errors, loop.key, rules.array_too_big())
            continue
        items: list[dict[str, Any]] = []
        for index, item in enumerate(value):
            prefix = f"{loop.key}.{index}"
            if not isinstance(item, dict):
                _add(errors, prefix, rules.expected("object", item))
                continue
            cleaned_item: dict[str, Any] = {}
            _validate_fields(loop.item_fields, item, prefix + ".", cleaned_item, errors)
            items.append(cleaned_item)
        cleaned[loop.key] = items
    return cleaned, errors


def check_value(data_type: str, value: Any) -> tuple[Any, str | None]:
    """Check one present value of ``data_type``; return ``(coerced value, error message)``."""
    if data_type in ("text", "longtext"):
        if isinstance(value, str):
            return value, None
        return None, rules.expected("string", value)
    if data_type in ("number", "currency"):
        return _check_number(value)
    if data_type in ("date", "datetime"):
        if not isinstance(value, str):
            return None, rules.expected("string", value)
        pattern = _DATE if data_type == "date" else _DATETIME
        message = rules.MSG_INVALID_DATE if data_type == "date" else rules.MSG_INVALID_DATETIME
        if not pattern.fullmatch(value) or not _real_calendar_date(value[:10]):
            return None, message
        return value, None
    if data_type == "boolean":
        if isinstance(value, bool):
            return value, None
        if isinstance(value, str) and value in rules.BOOLEAN_STRINGS:
            return rules.BOOLEAN_STRINGS[value], None
        return None, rules.expected("boolean", value)
    if data_type in ("image", "url"):
        if not isinstance(value, str):
            return None, rules.expected("string", value)
        if not _URL.fullmatch(value):
            return None, rules.MSG_INVALID_URL
        return value, None
    if data_type == "email":
        if not isinstance(value, str):
            return None, rules.expected("string", value)
        if not _EMAIL.fullmatch(value):
            return None, rules.MSG_INVALID_EMAIL
        return value, None
    raise ValueError(f"unknown dataType {data_type!r}")


def _check_number(value: Any) -> tuple[Any, str | None]:
    """Numbers pass; numeric strings are coerced; anything else is refused."""
    if isinstance(value, bool):
        return None, rules.expected("number", value)
    if isinstance(value, int):
        return value, None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None, rules.expected("number", value)
        return value, None
    if isinstance(value, str) and _NUMERIC.fullmatch(value):
        number = float(value)
        if not math.isfinite(number):
            return None, rules.expected("number", value)
        if number.is_integer() and abs(number) < 2**53:
            return int(number), None
        return number, None
    return None, rules.expected("number", value)


def _real_calendar_date(text: str) -> bool:
    """``2026-02-30`` matches the pattern but is not a date."""
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _validate_fields(
    fields: tuple[Variable, ...],
    source: dict[str, Any],
    prefix: str,
    out: dict[str, Any],
    errors: FieldErrors,
) -> None:
    """Validate ``fields`` found in ``source``, writing cleaned values into ``out``."""
    for variable in fields:
        value = _lookup(variable.path, source, prefix, errors)
        if value is _MISSING_REPORTED:
            continue
        if value is _MISSING:
            if variable.required:
                _add(errors, prefix + variable.key, rules.MSG_REQUIRED)
            continue
        coerced, message = check_value(variable.data_type, value)
        if message is not None:
            _add(errors, prefix + variable.key, message)
            continue
        _store(out, variable.path, coerced)


def _lookup(path: tuple[str, ...], source: dict[str, Any], prefix: str, errors: FieldErrors) -> Any:
    """Follow a dotted path through nested objects; ``_MISSING`` when a level is absent."""
    node: Any = source
    for depth, part in enumerate(path):
        if not isinstance(node, dict):
            where = prefix + ".".join(path[:depth])
            message = rules.expected("object", node)
            if message not in errors.get(where, []):
                _add(errors, where, message)
            return _MISSING_REPORTED
        if part not in node:
            return _MISSING
        node = node[part]
    return node


def _store(out: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Put ``value`` at a dotted path in ``out``, creating nested objects."""
    node = out
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


def _add(errors: FieldErrors, path: str, message: str) -> None:
    errors.setdefault(path, []).append(message)
