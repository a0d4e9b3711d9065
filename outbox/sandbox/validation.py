"""Validate render data against a manifest, the way Craftkit does.

:func:`validate_data` returns the cleaned data (unknown keys stripped, numeric and boolean
strings coerced) and the field errors of Zod's ``flatten()`` output, keyed by dotted paths such
as ``customer.name`` or ``findings.0.severity``. An empty error dict means the data is valid.
The rules themselves are :func:`outbox.rules.check_data`, the very code outbox's offline check
runs, so the sandbox and the check cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from outbox import rules
from outbox.rules import FieldErrors, check_value
from outbox.sandbox.manifest import Manifest

__all__ = ["FieldErrors", "check_value", "validate_data"]


def validate_data(manifest: Manifest, data: dict[str, Any]) -> tuple[dict[str, Any], FieldErrors]:
    """Check ``data`` against ``manifest``; return ``(cleaned data, field errors)``."""
    return rules.check_data(manifest.variables, manifest.loops, data)
