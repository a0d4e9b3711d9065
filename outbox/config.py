"""Settings in one place: defaults, and the CLI's flag > environment > config file > default.

The API key is read from the environment only (``CRAFTKIT_API_KEY``): never from a flag, where
it would show up in ``ps``, and never from the config file, which tends to get copied around.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from .errors import ConfigError
from .schedule import Schedule

DEFAULT_BASE_URL = "https://api.craftkit.dev"
APP_NAME = "outbox"

ENV_DB = "OUTBOX_DB"
ENV_DOWNLOADS = "OUTBOX_DOWNLOADS"
ENV_CONFIG = "OUTBOX_CONFIG"
ENV_API_KEY = "CRAFTKIT_API_KEY"
ENV_BASE_URL = "CRAFTKIT_BASE_URL"

_TUNING_KEYS = (
    "concurrency",
    "max_concurrency",
    "connect_timeout",
    "read_timeout",
    "request_timeout",
    "download_timeout",
    "max_pdf_bytes",
)
_FILE_KEYS = {"db", "downloads", "base_url", "retention", *_TUNING_KEYS}
_WHOLE_NUMBERS = ("concurrency", "max_concurrency", "max_pdf_bytes")


def default_db_path() -> Path:
    """``outbox.db`` in the platform's user data folder (e.g. ``~/.local/share/outbox``)."""
    return Path(platformdirs.user_data_dir(APP_NAME)) / "outbox.db"


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def default_downloads(db: str | os.PathLike[str]) -> Path:
    """``renders/`` beside the journal."""
    return Path(db).expanduser().resolve().parent / "renders"


@dataclass(frozen=True)
class Settings:
    """Tuning of the network side. The defaults suit a field device on a flaky connection.

    ``schedule`` holds every timing decision (backoffs, polling, intervals); see
    :class:`~outbox.schedule.Schedule`.
    """

    #: Requests in flight at once, over reused connections, to begin with: the engine allows
    #: more while answers come back as quickly, and fewer after a 429 or 503 (AIMD) ...
    concurrency: int = 4
    #: ... never more than this (nor less than one); a ``concurrency`` above it is kept fixed.
    max_concurrency: int = 16
    #: Seconds to wait for a connection; beyond it the API counts as unreachable.
    connect_timeout: float = 5.0
    #: Seconds to wait for an answer once the request is sent (and between two reads).
    read_timeout: float = 30.0
    #: The most one API request may take from connection to last byte, however slowly the
    #: server sends (the timeouts above bound each wait; this bounds the whole).
    request_timeout: float = 60.0
    #: The same for one PDF download.
    download_timeout: float = 600.0
    #: The largest PDF downloaded; a larger one is refused, that entry's error.
    max_pdf_bytes: int = 512 * 1024 * 1024
    #: Quick retries inside one call when an answer is lost or a 5xx comes back.
    retries: int = 2
    #: Seconds after which a long-running outbox (``run``, ``start``) purges finished entries
    #: (as ``purge`` does, every ``schedule.retention_every``); None (the default) keeps them.
    retention: float | None = None
    #: When to try again, poll, probe and look for work.
    schedule: Schedule = field(default_factory=Schedule)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        timeouts = (
            self.connect_timeout,
            self.read_timeout,
            self.request_timeout,
            self.download_timeout,
        )
        if not all(math.isfinite(value) and value > 0 for value in timeouts):
            raise ValueError("timeouts must be positive numbers of seconds")
        if self.max_pdf_bytes < 1:
            raise ValueError("max_pdf_bytes must be at least 1")
        if self.retention is not None and not (
            math.isfinite(self.retention) and self.retention > 0
        ):
            raise ValueError("retention must be a positive number of seconds")

    @property
    def concurrency_ceiling(self) -> int:
        """The most requests ever in flight at once."""
        return max(self.concurrency, self.max_concurrency)

    @property
    def lease_seconds(self) -> float:
        """Long enough to cover the slowest call with its quick retries, plus a margin."""
        call = min(self.connect_timeout + self.read_timeout, self.request_timeout)
        return max(call * (self.retries + 1), self.download_timeout) + 30.0


def api_key_problem(key: str, name: str = ENV_API_KEY) -> str | None:
    """What makes ``key`` unusable as an HTTP bearer token, or None if nothing does.

    The answer names ``name`` and the kind and place of the problem, never the key itself, so
    it can be shown and logged. A key copied from a file saved with Windows line endings ends
    in a carriage return, which the HTTP library would refuse on every request.
    """
    if not key:
        return f"{name} is empty"
    if not key.strip():
        return f"{name} holds only whitespace"
    where = {0: "at its start", len(key) - 1: "at its end"}
    for index, char in enumerate(key):
        place = where.get(index, f"at position {index + 1} of {len(key)}")
        if char == "\r":
            return f"{name} contains a carriage return {place} (saved with Windows line endings?)"
        if char == "\n":
            return f"{name} contains a line break {place}"
        if char in " \t":
            kind = "a space" if char == " " else "a tab"
            return f"{name} contains {kind} {place}"
        if ord(char) > 127:
            return f"{name} contains a non-ASCII character {place}"
        if ord(char) < 32 or ord(char) == 127:
            return f"{name} contains a control character (0x{ord(char):02x}) {place}"
    return None


def check_api_key(key: str, name: str = ENV_API_KEY) -> str:
    """Return ``key`` if it can be sent as a bearer token; else raise :class:`ConfigError`."""
    problem = api_key_problem(key, name)
    if problem is not None:
        raise ConfigError(f"{problem}; the key was not used")
    return key


@dataclass(frozen=True)
class Config:
    """Where the journal, the downloads and the API are, as the CLI resolved them."""

    db: Path
    downloads: Path
    base_url: str
    api_key: str | None = field(repr=False)
    config_file: Path | None = None
    sources: dict[str, str] = field(default_factory=dict)
    settings: Settings = field(default_factory=lambda: Settings())
    #: Why the API key in the environment cannot be used (then ``api_key`` is None). Commands
    #: that need the key fail with it (exit 78); the others, which work offline, go on.
    api_key_problem: str | None = None


def load_config(
    *,
    db: str | None = None,
    downloads: str | None = None,
    base_url: str | None = None,
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Resolve settings from flags (the arguments), the environment, the config file, defaults.

    ``sources`` records where each setting came from, for ``outbox status``.
    """
    env = os.environ if environ is None else environ
    file_path, file_values = _read_config_file(config_file or env.get(ENV_CONFIG))
    sources: dict[str, str] = {}

    def pick(name: str, flag: str | None, env_name: str) -> str | None:
        if flag:
            sources[name] = "flag"
            return flag
        if env.get(env_name):
            sources[name] = f"environment ({env_name})"
            return env[env_name]
        if name in file_values:
            sources[name] = f"config file ({file_path})"
            return str(file_values[name])
        return None

    db_value = pick("db", db, ENV_DB)
    if db_value is None:
        sources["db"] = "default"
    db_path = Path(db_value).expanduser() if db_value else default_db_path()
    downloads_value = pick("downloads", downloads, ENV_DOWNLOADS)
    if downloads_value is None:
        sources["downloads"] = "default (beside the journal)"
    downloads_path = (
        Path(downloads_value).expanduser() if downloads_value else default_downloads(db_path)
    )
    url = pick("base_url", base_url, ENV_BASE_URL)
    if url is None:
        sources["base_url"] = "default"
        url = DEFAULT_BASE_URL
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"the API base URL must start with http:// or https://, not {url!r}")
    api_key = env.get(ENV_API_KEY)
    key_problem = None if api_key is None else api_key_problem(api_key)
    return Config(
        db=db_path,
        downloads=downloads_path,
        base_url=url.rstrip("/"),
        api_key=None if key_problem else api_key,
        api_key_problem=key_problem,
        config_file=file_path,
        sources=sources,
        settings=_settings(file_path, file_values),
    )


_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float | None:
    """Seconds in an age such as ``30d``, ``12h``, ``90m``, ``3600s`` or ``2w``; None if
    ``text`` is not one."""
    value, unit = text[:-1], text[-1:].lower()
    if unit not in _AGE_UNITS or not value.replace(".", "", 1).isdigit():
        return None
    return float(value) * _AGE_UNITS[unit]


def _settings(path: Path | None, values: dict[str, Any]) -> Settings:
    tuning: dict[str, Any] = {name: values[name] for name in _TUNING_KEYS if name in values}
    for name, value in tuning.items():
        wanted = int if name in _WHOLE_NUMBERS else (int, float)
        if isinstance(value, bool) or not isinstance(value, wanted):
            raise ConfigError(f"config file {path}: {name} must be a number, not {value!r}")
    if "retention" in values:
        text = values["retention"]
        retention = parse_age(text) if isinstance(text, str) else None
        if retention is None:
            raise ConfigError(
                f'config file {path}: retention must be an age such as "30d" (s, m, h, d or '
                f"w), not {text!r}"
            )
        tuning["retention"] = retention
    try:
        return Settings(**tuning)
    except ValueError as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc


def _read_config_file(explicit: str | None) -> tuple[Path | None, dict[str, Any]]:
    path = Path(explicit).expanduser() if explicit else default_config_path()
    if not path.exists():
        if explicit:
            raise ConfigError(f"config file {path} does not exist")
        return None, {}
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    if "api_key" in values:
        raise ConfigError(
            f"config file {path} sets api_key; the API key is read only from {ENV_API_KEY}"
        )
    unknown = set(values) - _FILE_KEYS
    if unknown:
        raise ConfigError(
            f"config file {path} has unknown settings {sorted(unknown)}; "
            f"known: {sorted(_FILE_KEYS)}"
        )
    return path, values
