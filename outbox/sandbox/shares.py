"""Check the bodies of ``POST /v1/renders/:id/shares`` and ``POST /v1/renders/:id/email``.

Both are checked the way Craftkit checks them (Zod): unknown members are stripped, optional
members are left out rather than set to ``null``, and every problem is reported at once as
``issues.fieldErrors`` in the error envelope.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from outbox import rules
from outbox.sandbox.models import EMAIL, LINK

_EMAIL = re.compile(rules.EMAIL_PATTERN)
_DATETIME = re.compile(rules.DATETIME_PATTERN)

FieldErrors = dict[str, list[str]]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ShareRequestError(Exception):
    """The body was refused; ``field_errors`` and ``form_errors`` are Zod's ``flatten()``."""

    def __init__(self, field_errors: FieldErrors, form_errors: list[str] | None = None) -> None:
        super().__init__("invalid share request")
        self.field_errors = field_errors
        self.form_errors = form_errors or []


@dataclass(frozen=True)
class ShareRequest:
    """A checked request for a share link or an email."""

    channel: str
    recipient_email: str | None
    recipient_name: str | None
    message: str | None
    expires_ms: int | None


def check_share(body: Any, now_ms: int) -> ShareRequest:
    """``{channel?, recipientEmail?, message?, expiresAt?}``; an email channel needs
    ``recipientEmail``."""
    fields = _object(body)
    errors: FieldErrors = {}
    channel = fields.get("channel", LINK)
    if channel not in rules.SHARE_CHANNELS:
        errors["channel"] = [_enum_message(channel, rules.SHARE_CHANNELS)]
    recipient = _email(fields, "recipientEmail", errors, required=channel == EMAIL)
    message = _text(fields, "message", rules.SHARE_MESSAGE_MAX, errors)
    expires_ms = _expiry(fields, now_ms, errors)
    if errors:
        raise ShareRequestError(errors)
    return ShareRequest(str(channel), recipient, None, message, expires_ms)


def check_email(body: Any, now_ms: int) -> ShareRequest:
    """``{to, recipientName?, message?, expiresAt?}``."""
    fields = _object(body)
    errors: FieldErrors = {}
    to = _email(fields, "to", errors, required=True)
    name = _text(fields, "recipientName", rules.RECIPIENT_NAME_MAX, errors)
    message = _text(fields, "message", rules.SHARE_MESSAGE_MAX, errors)
    expires_ms = _expiry(fields, now_ms, errors)
    if errors:
        raise ShareRequestError(errors)
    return ShareRequest(EMAIL, to, name, message, expires_ms)


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ShareRequestError({}, [rules.expected("object", body)])
    return body


def _enum_message(value: object, allowed: tuple[str, ...]) -> str:
    expected = " | ".join(f"'{a}'" for a in allowed)
    if isinstance(value, str):
        return f"Invalid enum value. Expected {expected}, received '{value}'"
    return f"Expected {expected}, received {rules.received_type(value)}"


def _text(fields: dict[str, Any], name: str, maximum: int, errors: FieldErrors) -> str | None:
    if name not in fields:
        return None
    value = fields[name]
    if not isinstance(value, str):
        errors[name] = [rules.expected("string", value)]
        return None
    if len(value) > maximum:
        errors[name] = [rules.string_too_long(maximum)]
        return None
    return value


def _email(fields: dict[str, Any], name: str, errors: FieldErrors, *, required: bool) -> str | None:
    if name not in fields:
        if required:
            errors[name] = [rules.MSG_REQUIRED]
        return None
    value = fields[name]
    if not isinstance(value, str):
        errors[name] = [rules.expected("string", value)]
        return None
    if not _EMAIL.fullmatch(value):
        errors[name] = [rules.MSG_INVALID_EMAIL]
        return None
    return value


def _expiry(fields: dict[str, Any], now_ms: int, errors: FieldErrors) -> int | None:
    """``expiresAt``: an ISO date-time with a zone (``Z`` or an offset), after now."""
    if "expiresAt" not in fields:
        return None
    value = fields["expiresAt"]
    if not isinstance(value, str):
        errors["expiresAt"] = [rules.expected("string", value)]
        return None
    moment = _instant(value)
    if moment is None:
        errors["expiresAt"] = [rules.MSG_INVALID_DATETIME]
        return None
    expires_ms = (moment - _EPOCH) // timedelta(milliseconds=1)
    if expires_ms <= now_ms:
        errors["expiresAt"] = [rules.MSG_NOT_IN_FUTURE]
        return None
    return expires_ms


def _instant(text: str) -> datetime | None:
    """An ISO date-time that names its zone, or None."""
    if not _DATETIME.fullmatch(text):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None
