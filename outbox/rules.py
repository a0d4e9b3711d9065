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
import re
from typing import Final, TypeGuard

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
    return all(" " <= char <= "~" for char in key)


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
