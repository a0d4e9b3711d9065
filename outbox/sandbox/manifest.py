"""Template manifests: the variables and loops a template's data must provide.

A manifest is what ``GET /v1/templates/:slug`` returns under ``manifest``::

    {"variables": [{"key": "customer.name", "label": "Customer", "dataType": "text",
                    "required": true}],
     "loops": [{"key": "items", "label": "Items",
                "itemFields": [{"key": "qty", "label": "Qty", "dataType": "number",
                                "required": true}]}]}

A dotted variable key (``customer.name``) is sent in render data as nested objects. A loop key
must be free of dots; its value is an array of objects holding the item fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from outbox import rules


class ManifestError(ValueError):
    """A manifest that Craftkit would refuse; carries the API error code and field errors."""

    def __init__(self, code: str, message: str, field_errors: dict[str, list[str]]) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field_errors = field_errors


@dataclass(frozen=True)
class Variable:
    """One variable (or one loop item field) of a manifest."""

    key: str
    label: str
    data_type: str
    required: bool = False

    @property
    def path(self) -> tuple[str, ...]:
        """The key split on dots: where the value sits in nested data."""
        return tuple(self.key.split("."))

    def to_json(self) -> dict[str, Any]:
        """The camelCase shape the API returns."""
        return {
            "key": self.key,
            "label": self.label,
            "dataType": self.data_type,
            "required": self.required,
        }


@dataclass(frozen=True)
class Loop:
    """A repeated section: an array of objects, each holding ``item_fields``."""

    key: str
    label: str
    item_fields: tuple[Variable, ...]
    preview_data: list[Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The camelCase shape the API returns."""
        out: dict[str, Any] = {
            "key": self.key,
            "label": self.label,
            "itemFields": [f.to_json() for f in self.item_fields],
        }
        if self.preview_data is not None:
            out["previewData"] = self.preview_data
        return out


@dataclass(frozen=True)
class Manifest:
    """A published template version's contract: its variables and loops."""

    variables: tuple[Variable, ...] = ()
    loops: tuple[Loop, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        """The camelCase shape the API returns."""
        return {
            "variables": [v.to_json() for v in self.variables],
            "loops": [loop.to_json() for loop in self.loops],
        }

    @classmethod
    def from_json(cls, obj: object) -> Manifest:
        """Parse and check a manifest; raise :class:`ManifestError` if Craftkit would refuse it."""
        errors: dict[str, list[str]] = {}
        if not isinstance(obj, Mapping):
            raise ManifestError(
                "invalid_request",
                "The manifest must be an object.",
                {"manifest": [rules.expected("object", obj)]},
            )
        raw_vars = obj.get("variables", [])
        raw_loops = obj.get("loops", [])
        variables: list[Variable] = []
        loops: list[Loop] = []
        if not isinstance(raw_vars, list):
            errors.setdefault("variables", []).append(rules.expected("array", raw_vars))
        else:
            variables = _parse_fields(raw_vars, "variables", errors)
        if not isinstance(raw_loops, list):
            errors.setdefault("loops", []).append(rules.expected("array", raw_loops))
        else:
            for index, raw in enumerate(raw_loops):
                loop = _parse_loop(raw, f"loops.{index}", errors)
                if loop is not None:
                    loops.append(loop)
        if not errors:
            for loop in loops:
                if "." in loop.key:
                    raise ManifestError(
                        "invalid_loop_key",
                        f"Loop key '{loop.key}' must not contain dots.",
                        {"loops": [f"Loop key '{loop.key}' must not contain dots"]},
                    )
            _check_conflicts(variables, loops, errors)
        if errors:
            raise ManifestError("invalid_request", "The manifest is not valid.", errors)
        return cls(tuple(variables), tuple(loops))


def _parse_fields(
    raw_fields: list[Any], where: str, errors: dict[str, list[str]]
) -> list[Variable]:
    """Parse a list of variable definitions, recording problems under ``where.N.attr``."""
    out: list[Variable] = []
    for index, raw in enumerate(raw_fields):
        path = f"{where}.{index}"
        if not isinstance(raw, Mapping):
            errors.setdefault(path, []).append(rules.expected("object", raw))
            continue
        key = raw.get("key")
        data_type = raw.get("dataType", "text")
        required = raw.get("required", False)
        label = raw.get("label", key)
        ok = True
        if not isinstance(key, str) or not _valid_key(key):
            errors.setdefault(f"{path}.key", []).append(
                rules.MSG_REQUIRED if key is None else "Invalid key"
            )
            ok = False
        if data_type not in rules.DATA_TYPES:
            allowed = " | ".join(f"'{t}'" for t in sorted(rules.DATA_TYPES))
            errors.setdefault(f"{path}.dataType", []).append(
                f"Invalid enum value. Expected {allowed}, received '{data_type}'"
            )
            ok = False
        if not isinstance(required, bool):
            errors.setdefault(f"{path}.required", []).append(rules.expected("boolean", required))
            ok = False
        if not isinstance(label, str):
            errors.setdefault(f"{path}.label", []).append(rules.expected("string", label))
            ok = False
        if ok:
            assert isinstance(key, str) and isinstance(label, str)
            out.append(Variable(key, label, str(data_type), bool(required)))
    return out


def _parse_loop(raw: object, path: str, errors: dict[str, list[str]]) -> Loop | None:
    """Parse one loop definition, or record why it is refused."""
    if not isinstance(raw, Mapping):
        errors.setdefault(path, []).append(rules.expected("object", raw))
        return None
    key = raw.get("key")
    label = raw.get("label", key)
    item_fields = raw.get("itemFields", [])
    preview = raw.get("previewData")
    if not isinstance(key, str) or not _valid_key(key):
        errors.setdefault(f"{path}.key", []).append(
            rules.MSG_REQUIRED if key is None else "Invalid key"
        )
        return None
    if not isinstance(label, str):
        errors.setdefault(f"{path}.label", []).append(rules.expected("string", label))
        return None
    if not isinstance(item_fields, list):
        errors.setdefault(f"{path}.itemFields", []).append(rules.expected("array", item_fields))
        return None
    if preview is not None and not isinstance(preview, list):
        errors.setdefault(f"{path}.previewData", []).append(rules.expected("array", preview))
        return None
    fields = _parse_fields(item_fields, f"{path}.itemFields", errors)
    conflict = _first_conflict(fields)
    if conflict:
        errors.setdefault(f"{path}.itemFields", []).append(conflict)
    return Loop(key, label, tuple(fields), preview)


def _valid_key(key: str) -> bool:
    """A key is one or more non-empty dot-separated segments."""
    return bool(key) and all(part for part in key.split("."))


def _first_conflict(fields: Iterable[Variable]) -> str | None:
    """Find two keys that cannot both hold a value (a duplicate, or ``a`` and ``a.b``)."""
    seen: set[tuple[str, ...]] = set()
    for f in fields:
        if f.path in seen:
            return f"Duplicate key '{f.key}'"
        seen.add(f.path)
    for f in fields:
        for n in range(1, len(f.path)):
            if f.path[:n] in seen:
                return f"Key '{f.key}' conflicts with '{'.'.join(f.path[:n])}'"
    return None


def _check_conflicts(
    variables: list[Variable], loops: list[Loop], errors: dict[str, list[str]]
) -> None:
    """Refuse keys that overlap between variables and loops."""
    loop_as_vars = [Variable(loop.key, loop.label, "text") for loop in loops]
    conflict = _first_conflict([*variables, *loop_as_vars])
    if conflict:
        errors.setdefault("manifest", []).append(conflict)
