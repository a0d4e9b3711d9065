"""Drop-folder job files: their names, their content, and the key derived from it.

A job file is ``NAME.json`` holding one strict JSON object::

    {"template": "slug", "data": {...}, "key": "...", "filename": "x.pdf", "version": 3,
     "share": true, "email": {"to": "ada@example.com"}}

Everything here is pure (bytes and strings in, values or a problem out: no file system, no
journal), so the rules can be tested over generated input. :mod:`outbox.watcher` reads the files
and :meth:`outbox.Outbox.prepare` checks the request a job asks for.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from . import platform
from .errors import InvalidArgument
from .models import MAX_DATA_DEPTH, check_data

JOB_FIELDS = ("template", "data", "key", "filename", "version", "share", "email")
#: Longest job file name, in bytes, so that ``NAME.result.json`` and friends fit in 255.
MAX_NAME_BYTES = 200
SUFFIX = ".json"
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Job:
    """What a job file asks for; ``key`` is derived from the rest when the file has none."""

    template: str
    data: dict[str, Any]
    key: str
    filename: str | None
    version: int | None
    #: The deliveries asked for, as written (checked by ``Outbox.prepare``).
    share: Any = None
    email: Any = None


# -- names -----------------------------------------------------------------------------


def is_job_name(name: str) -> bool:
    """A file the watcher picks up: ``*.json`` (any case), not hidden."""
    return not name.startswith(".") and name.lower().endswith(SUFFIX)


def name_problem(name: str) -> str | None:
    """Why a job file's name cannot be answered (not UTF-8, too long), or None."""
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return "the file name is not valid UTF-8"
    if len(encoded) > MAX_NAME_BYTES:
        return f"the file name is {len(encoded)} bytes long; job file names may have at most {MAX_NAME_BYTES}"
    return None


def size_problem(size: int, limit: int) -> str:
    return f"the file is {size:,} bytes; a job file may have at most {limit:,} bytes"


def stem(name: str) -> str:
    """``job1.json`` -> ``job1``."""
    return name[: -len(SUFFIX)] if name.lower().endswith(SUFFIX) else name


def numbered(name: str, attempt: int) -> str:
    """The name a job file gets in ``accepted/`` or ``rejected/``: ``name`` made valid on every
    system (:func:`outbox.platform.portable_name`: ``CON.json`` -> ``CON_.json``) for the first
    attempt, then ``stem.2.json``, ``stem.3.json``..."""
    portable = platform.portable_name(name, fallback="job" + SUFFIX)
    if attempt == 1:
        return portable
    suffix = portable[len(stem(portable)) :]
    return platform.fit_name(stem(portable), f".{attempt}{suffix}")


def side_name(name: str, suffix: str) -> str:
    """``job1.json`` -> ``job1`` + ``suffix`` (made valid on every system, within the 255-byte
    limit for names)."""
    return platform.fit_name(stem(platform.portable_name(name, fallback="job" + SUFFIX)), suffix)


def shown(text: str) -> str:
    """``text`` safe to print even when a file name is not valid UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# -- content ---------------------------------------------------------------------------


def parse(content: bytes, *, what: str = "the file") -> tuple[str | None, Any]:
    """(problem, None) if ``content`` is not one strict JSON document, else (None, document).

    Strict: UTF-8 (a byte-order mark is allowed: PowerShell 5 and Notepad write one), no
    duplicate keys, no NaN or Infinity. The one parser for job files and ``--data``; ``what``
    names the input in the problem (``the file``, ``--data``, ``standard input``).
    """
    if content.startswith(_BOM):
        content = content[len(_BOM) :]
    if not content.strip():
        return f"{what} is empty", None
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (
            f"{what} is not UTF-8 text (byte 0x{content[exc.start]:02x} at offset {exc.start} is "
            "not valid there); JSON must be UTF-8",
            None,
        )
    try:
        document = json.loads(text, object_pairs_hook=_unique_pairs, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        return (
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
            None,
        )
    except RecursionError:
        return f"{what} is nested more than {MAX_DATA_DEPTH} levels deep", None
    except _NotStrict as exc:
        return f"{what} is not valid JSON: {exc}", None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        return f"{what} is not usable JSON: {exc}", None
    return None, document


def job_from_document(document: Any) -> Job:
    """The job a parsed file asks for; :class:`InvalidArgument` says what is wrong with it.

    Only the shape is checked here (fields and their JSON types); the values (slug, key,
    filename, version, data against the cached template) are checked by ``Outbox.prepare``.
    """
    if not isinstance(document, dict):
        raise InvalidArgument(
            'the file must hold a JSON object like {"template": "slug", "data": {...}}, not '
            + _json_kind(document)
        )
    unknown = [key for key in document if key not in JOB_FIELDS]
    if unknown:
        raise InvalidArgument(_unknown_fields_problem(unknown))
    for required in ("template", "data"):
        if required not in document:
            raise InvalidArgument(f'the required field "{required}" is missing')
    template, data = document["template"], document["data"]
    if not isinstance(template, str):
        raise InvalidArgument(
            f'"template" must be a string (the template slug), not {_json_kind(template)}'
        )
    if not isinstance(data, dict):
        raise InvalidArgument(f'"data" must be a JSON object ({{...}}), not {_json_kind(data)}')
    key = _optional(document, "key", str, "a string")
    filename = _optional(document, "filename", str, "a string")
    version = _optional(document, "version", int, "a whole number")
    check_data(data)  # enqueue's limits, before the data is hashed for a key
    try:
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(
            "the file contains a \\u escape for half of a surrogate pair, which is not valid text"
        ) from None
    share, email = document.get("share"), document.get("email")
    if key is None:
        key = derive_key(template, data, filename, version, share=share, email=email)
    return Job(template, data, key, filename, version, share, email)


def derive_key(
    template: str,
    data: dict[str, Any],
    filename: str | None,
    version: int | None,
    *,
    share: Any = None,
    email: Any = None,
) -> str:
    """The idempotency key of a job file without one: a hash of what it asks for.

    Dropping identical content again (under any file name) therefore maps to the same entry.
    Deliveries count only when there are some, so a job without them keeps the key it has
    always had.
    """
    asked: dict[str, Any] = {
        "template": template,
        "data": data,
        "filename": filename,
        "version": version,
    }
    if share is not None:
        asked["share"] = share
    if email is not None:
        asked["email"] = email
    canonical = json.dumps(asked, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "drop-" + hashlib.sha256(canonical.encode("ascii")).hexdigest()[:40]


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _NotStrict(f'the field "{key}" appears twice in one object')
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise _NotStrict(f"{name} is not a JSON number")


class _NotStrict(ValueError):
    """JSON that Python's parser takes but strict JSON does not (a key twice, NaN)."""


def _optional(document: dict[str, Any], name: str, kind: type, described: str) -> Any:
    """An optional field's value (None when absent or null), if it has the right JSON type."""
    value = document.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, kind):
        raise InvalidArgument(f'"{name}" must be {described}, not {_json_kind(value)}')
    return value


def _unknown_fields_problem(unknown: list[str]) -> str:
    described = []
    for name in unknown:
        close = difflib.get_close_matches(name, JOB_FIELDS, n=1, cutoff=0.6)
        described.append(f'"{name}"' + (f' (did you mean "{close[0]}"?)' if close else ""))
    noun = "field" if len(unknown) == 1 else "fields"
    return f"unknown {noun} {', '.join(described)}; a job file may only have " + ", ".join(
        f'"{name}"' for name in JOB_FIELDS
    )


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{'true' if value else 'false'} (a boolean)"
    if isinstance(value, int | float):
        return f"{value!r} (a number)"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a JSON array"
    return "a JSON object"
