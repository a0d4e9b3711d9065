"""The rules of a Craftkit render, in one place: template slugs, idempotency keys, data.

Craftkit validates render data with Zod and reports failures as Zod's ``flatten()`` output.
Everything that decides whether a value is accepted, and every message a rejection carries,
is defined here as a module-level constant. Two sides read this one copy: the sandbox (its
validator, the ``jsonSchema`` it publishes, the slugs and keys it takes) and outbox's own
checks before a request is queued (:mod:`outbox.models`, :mod:`outbox.validation`), so both
accept the same things and speak with exactly the same words.

The regular expressions are written to mean the same thing in Python (used with
:func:`re.fullmatch`) and in ECMAScript (used by JSON Schema validators), so they avoid
``\\d`` (which matches non-ASCII digits in Python) and flags.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from datetime import date
from typing import Any, Final, Protocol, TypeGuard

# --- Template slugs -----------------------------------------------------------------------

#: A template slug. Craftkit's docs give no grammar for slugs: they appear only as the
#: ``:slug`` path segment, and an unknown one is answered with 404 ``template_not_found``.
#: So the rule must (1) be safe as a URL path segment without escaping, and (2) never refuse
#: offline a slug that Craftkit may hold, since that request could then never be queued,
#: whereas a slug Craftkit lacks costs one clear 404 rejection. Lowercase letters, digits,
#: ``-`` and ``_``, starting and ending with a letter or digit, covers both common slug styles
#: (``inspection-report``, ``site_visit``). The 100-character cap is outbox's own.
SLUG_PATTERN: Final = r"^[a-z0-9]([a-z0-9_-]*[a-z0-9])?$"
SLUG_MAX_LENGTH: Final = 100
#: The slug rule in words, for error messages.
SLUG_RULE: Final = (
    f"1-{SLUG_MAX_LENGTH} lowercase letters, digits, '-' or '_', starting and ending with a "
    "letter or digit"
)
_SLUG = re.compile(SLUG_PATTERN)


def is_slug(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a template slug both outbox and the sandbox accept."""
    return (
        isinstance(value, str)
        and len(value) <= SLUG_MAX_LENGTH
        and _SLUG.fullmatch(value) is not None
    )


# --- Idempotency keys ---------------------------------------------------------------------

#: Idempotency keys (``Idempotency-Key`` header or body ``jobId``) must have this many characters.
IDEMPOTENCY_KEY_MIN: Final = 1
IDEMPOTENCY_KEY_MAX: Final = 200
#: Keys ending like this are the ones ``retry`` derives (``KEY~2``); callers may not use them.
RETRY_SUFFIX_PATTERN: Final = r"~[0-9]+$"
_RETRY_SUFFIX = re.compile(RETRY_SUFFIX_PATTERN)


def is_header_safe(key: str) -> bool:
    """Whether ``key`` can travel as an HTTP header value: printable ASCII only."""
    return key.isascii() and key.isprintable()  # for ASCII: from " " to "~"


def has_retry_suffix(key: str) -> bool:
    """Whether ``key`` ends the way keys derived by ``retry`` do (``~`` and a number)."""
    return _RETRY_SUFFIX.search(key) is not None


def derived_key(key: str, generation: int) -> str:
    """The idempotency key for the ``generation``-th submission of an entry (``KEY~2``...).

    A failed render sticks to its key at Craftkit, so a retry needs a new one; keys stay within
    Craftkit's 200 characters by shortening long ones with a hash of the whole key.
    """
    if generation <= 1:
        return key
    suffix = f"~{generation}"
    if len(key) + len(suffix) <= IDEMPOTENCY_KEY_MAX:
        return key + suffix
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return key[: IDEMPOTENCY_KEY_MAX - len(suffix) - 17] + "-" + digest + suffix


# --- Render data --------------------------------------------------------------------------

#: The ``dataType`` values a manifest variable may have (craftkit-api.md section 2.1).
DATA_TYPES: Final = frozenset(
    {
        "text",
        "longtext",
        "number",
        "currency",
        "date",
        "datetime",
        "boolean",
        "image",
        "url",
        "email",
    }
)

#: Longest loop array accepted in render data.
MAX_LOOP_ITEMS: Final = 10_000

#: A string that ``number`` and ``currency`` variables coerce to a number.
NUMERIC_STRING_PATTERN: Final = r"^-?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"

_DATE = r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
_TIME = (
    r"T([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,9})?)?"
    r"(Z|[+-]([01][0-9]|2[0-3]):?[0-5][0-9])?"
)

#: A ``date`` variable: an ISO calendar date, optionally with an ISO time part.
DATE_PATTERN: Final = f"^{_DATE}({_TIME})?$"

#: A ``datetime`` variable: an ISO date and time, the zone being optional.
DATETIME_PATTERN: Final = f"^{_DATE}{_TIME}$"

#: An ``image`` or ``url`` variable: an absolute http(s) URL (a ``data:`` URI is refused).
URL_PATTERN: Final = r"^https?://[^\s/?#]+([/?#][^\s]*)?$"

#: An ``email`` variable (the expression Zod's ``.email()`` uses, without its ``i`` flag).
EMAIL_PATTERN: Final = (
    r"^(?!\.)(?!.*\.\.)([A-Za-z0-9_'+\-\.]*)[A-Za-z0-9_+\-]@([A-Za-z0-9][A-Za-z0-9\-]*\.)+"
    r"[A-Za-z]{2,}$"
)

#: The strings a ``boolean`` variable coerces.
BOOLEAN_STRINGS: Final = {"true": True, "false": False}

# --- Messages (Zod's wording) -------------------------------------------------------------

MSG_REQUIRED: Final = "Required"
MSG_INVALID_URL: Final = "Invalid url"
MSG_INVALID_EMAIL: Final = "Invalid email"
MSG_INVALID_DATE: Final = "Invalid date"
MSG_INVALID_DATETIME: Final = "Invalid datetime"
MSG_EXPECTED: Final = "Expected {expected}, received {received}"
MSG_ARRAY_TOO_BIG: Final = "Array must contain at most {maximum} element(s)"
MSG_STRING_TOO_SHORT: Final = "String must contain at least {minimum} character(s)"
MSG_STRING_TOO_LONG: Final = "String must contain at most {maximum} character(s)"
#: Zod's message when nothing more specific applies.
MSG_INVALID_INPUT: Final = "Invalid input"

#: What a string of each ``dataType`` is told when it does not have the required form.
FORM_MESSAGES: Final = {
    "date": MSG_INVALID_DATE,
    "datetime": MSG_INVALID_DATETIME,
    "image": MSG_INVALID_URL,
    "url": MSG_INVALID_URL,
    "email": MSG_INVALID_EMAIL,
}


# --- Checking data against a manifest -----------------------------------------------------

#: Field errors in Zod's ``flatten()`` shape: dotted paths to messages.
FieldErrors = dict[str, list[str]]

_NUMERIC = re.compile(NUMERIC_STRING_PATTERN)
_DATE_RE = re.compile(DATE_PATTERN)
_DATETIME_RE = re.compile(DATETIME_PATTERN)
_URL = re.compile(URL_PATTERN)
_EMAIL = re.compile(EMAIL_PATTERN)


class FieldRule(Protocol):
    """A manifest variable (or loop item field): its dotted ``key``, ``dataType``, whether
    it is ``required``. The sandbox's parsed manifests and outbox's cached ones both fit."""

    @property
    def key(self) -> str: ...

    @property
    def data_type(self) -> str: ...

    @property
    def required(self) -> bool: ...


class LoopRule(Protocol):
    """A manifest loop: an array under a dot-free ``key``, each item holding ``item_fields``."""

    @property
    def key(self) -> str: ...

    @property
    def item_fields(self) -> Sequence[FieldRule]: ...


def check_value(data_type: str, value: Any) -> tuple[Any, str | None]:
    """Check one present value of ``data_type`` by the docs' dataType table; return
    ``(coerced value, error message)``. Raises ValueError for a ``dataType`` outside
    :data:`DATA_TYPES`.

    ``text``/``longtext``: a string. ``number``/``currency``: a number, or a numeric string
    (coerced). ``date``/``datetime``: an ISO string of a real calendar day. ``boolean``: a
    boolean, or "true"/"false" (coerced). ``image``/``url``: an http(s) URL only (no
    ``data:`` URI). ``email``: a valid address.
    """
    if data_type in ("text", "longtext"):
        if isinstance(value, str):
            return value, None
        return None, expected("string", value)
    if data_type in ("number", "currency"):
        return _check_number(value)
    if data_type in ("date", "datetime"):
        if not isinstance(value, str):
            return None, expected("string", value)
        pattern = _DATE_RE if data_type == "date" else _DATETIME_RE
        message = MSG_INVALID_DATE if data_type == "date" else MSG_INVALID_DATETIME
        if not pattern.fullmatch(value) or not _real_calendar_date(value[:10]):
            return None, message
        return value, None
    if data_type == "boolean":
        if isinstance(value, bool):
            return value, None
        if isinstance(value, str) and value in BOOLEAN_STRINGS:
            return BOOLEAN_STRINGS[value], None
        return None, expected("boolean", value)
    if data_type in ("image", "url"):
        if not isinstance(value, str):
            return None, expected("string", value)
        if not _URL.fullmatch(value):
            return None, MSG_INVALID_URL
        return value, None
    if data_type == "email":
        if not isinstance(value, str):
            return None, expected("string", value)
        if not _EMAIL.fullmatch(value):
            return None, MSG_INVALID_EMAIL
        return value, None
    raise ValueError(f"unknown dataType {data_type!r}")


def check_data(
    variables: Sequence[FieldRule], loops: Sequence[LoopRule], data: dict[str, Any]
) -> tuple[dict[str, Any], FieldErrors]:
    """Check render ``data`` against a manifest's ``variables`` and ``loops`` as Craftkit
    does; return ``(cleaned data, field errors)`` (no errors: Craftkit accepts it).

    Unknown keys are stripped, numeric and boolean strings coerced; dotted keys are nested
    objects; loops are arrays of at most :data:`MAX_LOOP_ITEMS` objects (the items of a
    longer one are not looked into). A field whose ``dataType`` is not in the table (one
    Craftkit added since) takes any value.
    """
    cleaned: dict[str, Any] = {}
    errors: FieldErrors = {}
    _check_fields(variables, data, "", cleaned, errors)
    for loop in loops:
        value = data.get(loop.key, _MISSING)
        if value is _MISSING:
            continue
        if not isinstance(value, list):
            _add(errors, loop.key, expected("array", value))
            continue
        if len(value) > MAX_LOOP_ITEMS:
            _add(errors, loop.key, array_too_big())
            continue
        items: list[dict[str, Any]] = []
        for index, item in enumerate(value):
            prefix = f"{loop.key}.{index}"
            if not isinstance(item, dict):
                _add(errors, prefix, expected("object", item))
                continue
            cleaned_item: dict[str, Any] = {}
            _check_fields(loop.item_fields, item, prefix + ".", cleaned_item, errors)
            items.append(cleaned_item)
        cleaned[loop.key] = items
    return cleaned, errors


def _check_number(value: Any) -> tuple[Any, str | None]:
    """Numbers pass; numeric strings are coerced; anything else is refused."""
    if isinstance(value, bool):
        return None, expected("number", value)
    if isinstance(value, int):
        return value, None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None, expected("number", value)
        return value, None
    if isinstance(value, str) and _NUMERIC.fullmatch(value):
        number = float(value)
        if not math.isfinite(number):
            return None, expected("number", value)
        if number.is_integer() and abs(number) < 2**53:
            return int(number), None
        return number, None
    return None, expected("number", value)


def _real_calendar_date(text: str) -> bool:
    """``2026-02-30`` matches the pattern but is not a date."""
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


class _Missing:
    """Marks a value that is absent (as opposed to present and ``null``)."""


_MISSING = _Missing()
#: An absent value whose parent was not an object (that error is already reported).
_MISSING_REPORTED = _Missing()


def _check_fields(
    fields: Sequence[FieldRule],
    source: dict[str, Any],
    prefix: str,
    out: dict[str, Any],
    errors: FieldErrors,
) -> None:
    """Check ``fields`` found in ``source``, writing cleaned values into ``out``."""
    for rule in fields:
        path = tuple(rule.key.split("."))
        value = _lookup(path, source, prefix, errors)
        if value is _MISSING_REPORTED:
            continue
        if value is _MISSING:
            if rule.required:
                _add(errors, prefix + rule.key, MSG_REQUIRED)
            continue
        if rule.data_type not in DATA_TYPES:
            _store(out, path, value)
            continue
        coerced, message = check_value(rule.data_type, value)
        if message is not None:
            _add(errors, prefix + rule.key, message)
            continue
        _store(out, path, coerced)


def _lookup(path: tuple[str, ...], source: dict[str, Any], prefix: str, errors: FieldErrors) -> Any:
    """Follow a dotted path through nested objects; ``_MISSING`` when a level is absent."""
    node: Any = source
    for depth, part in enumerate(path):
        if not isinstance(node, dict):
            where = prefix + ".".join(path[:depth])
            message = expected("object", node)
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


def received_type(value: object) -> str:
    """Name a JSON value's type the way Zod does in "Expected X, received Y"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number" if value == value else "nan"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def expected(expected_type: str, value: object) -> str:
    """The "Expected X, received Y" message for ``value``."""
    return MSG_EXPECTED.format(expected=expected_type, received=received_type(value))


def array_too_big(maximum: int = MAX_LOOP_ITEMS) -> str:
    """The message for an array longer than ``maximum``."""
    return MSG_ARRAY_TOO_BIG.format(maximum=maximum)


def string_too_short(minimum: int) -> str:
    """The message for a string shorter than ``minimum``."""
    return MSG_STRING_TOO_SHORT.format(minimum=minimum)


def string_too_long(maximum: int) -> str:
    """The message for a string longer than ``maximum``."""
    return MSG_STRING_TOO_LONG.format(maximum=maximum)


# --- Shares and emails (craftkit-api.md section 2.4) ----------------------------------------

#: Longest ``message`` of a share or an email.
SHARE_MESSAGE_MAX: Final = 2000

#: Longest ``recipientName`` of an email.
RECIPIENT_NAME_MAX: Final = 200

#: The ``channel`` values of a share.
SHARE_CHANNELS: Final = ("link", "email")

#: What an ``expiresAt`` that is not after the present moment is told.
MSG_NOT_IN_FUTURE: Final = "Must be in the future"
