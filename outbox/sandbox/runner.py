"""The :class:`Sandbox`: a Craftkit-compatible server you start and stop from Python.

::

    with Sandbox(render_seconds=0.05) as sb:
        httpx.post(f"{sb.base_url}/v1/templates/invoice/render",
                   headers={"Authorization": f"Bearer {sb.api_key}"}, json={"data": {...}})
        sb.stop()    # the network goes away: every connection is cut
        sb.start()   # back online: same port, same renders, same keys

The state folder holds a random secret (made at first start) from which the two project keys
are derived, plus the SHA-256 of every key; a sandbox started again on the same folder
therefore accepts the same keys, and a revoked key stays revoked.
"""

from __future__ import annotations

import hmac
import logging
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from outbox import rules
from outbox.sandbox.api import ApiConfig, CraftkitAPI, template_json
from outbox.sandbox.counters import RequestCounters
from outbox.sandbox.faults import FaultInjector, Faults
from outbox.sandbox.manifest import Manifest
from outbox.sandbox.server import SandboxHTTPServer
from outbox.sandbox.state import SandboxState
from outbox.sandbox.templates import (
    RenderSeconds,
    TemplateSpec,
    load_templates,
    parse_render_seconds,
)
from outbox.sandbox.transport import SandboxTransport

logger = logging.getLogger(__name__)

#: The project the sandbox's main key belongs to, and a second one to test isolation.
MAIN_PROJECT, OTHER_PROJECT = "sandbox", "other"

#: Prefix of the keys the sandbox mints (test keys, as Craftkit's test environment uses).
KEY_PREFIX = "ck_test_"

_WILDCARD_HOSTS = {"", "0.0.0.0", "::"}


class Sandbox:
    """A Craftkit-compatible sandbox server running in this process on a real socket."""

    def __init__(
        self,
        state_dir: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        templates: str | Path | None = None,
        render_seconds: RenderSeconds | list[float] = 0.3,
        public_bucket: bool = True,
        pdf_size: int | None = None,
        faults: Faults | None = None,
        seed: int | None = None,
        clock: Callable[[], float] | None = None,
        api_key: str | None = None,
    ) -> None:
        """Configure a sandbox; nothing listens until :meth:`start` (or ``with``).

        ``state_dir`` None uses a private temporary folder, removed by :meth:`close`.
        ``port`` 0 picks a free port at first start and keeps it across stop/start.
        ``render_seconds`` is the time from creation to the terminal status, fixed or a
        ``(min, max)`` range sampled per render. ``api_key`` fixes the main project's key.
        ``clock`` (wall seconds) replaces real time for the render lifecycle and the rate
        limit's window, so a test can move the sandbox's time together with the client's.
        """
        if pdf_size is not None and pdf_size < 0:
            raise ValueError("pdf_size must be >= 0")
        if api_key is not None and not api_key.strip():
            raise ValueError("api_key must not be empty")
        self._state_dir = Path(state_dir) if state_dir is not None else None
        self._own_state_dir = state_dir is None
        self.host = host
        self._port = port
        self._templates: list[TemplateSpec] = load_templates(templates)
        self._config = ApiConfig(
            render_seconds=parse_render_seconds(render_seconds),
            public_bucket=public_bucket,
            pdf_size=pdf_size or None,
            clock=clock or time.time,
        )
        self._injector = FaultInjector(faults, seed, monotonic=clock or time.monotonic)
        self._counters = RequestCounters()
        self._fixed_key = api_key
        self._keys: tuple[str, str] | None = None
        self._lock = threading.RLock()
        self._state: SandboxState | None = None
        self._api: CraftkitAPI | None = None
        self._server: SandboxHTTPServer | None = None
        self._refused: socket.socket | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Open the state and listen; returns once the socket accepts connections."""
        with self._lock:
            if self._server is not None:
                return self
            if self._state_dir is None:
                self._state_dir = Path(tempfile.mkdtemp(prefix="craftkit-sandbox-"))
            state = SandboxState(self._state_dir)
            refused: socket.socket | None = None
            try:
                self._prepare(state)
                refused = self._refused_socket()
                self._config.refused_port = int(refused.getsockname()[1])
                api = CraftkitAPI(state, self._injector, self._counters, self._config)
                server = SandboxHTTPServer(
                    (self.host, self._port), api, self._injector, self._counters, ""
                )
            except BaseException:
                state.close()
                if refused is not None:
                    refused.close()
                raise
            self._refused = refused
            self._port = server.port
            server.base_url = self.base_url_for(self._port)
            server.start()
            self._state, self._api, self._server = state, api, server
            logger.debug("Craftkit sandbox listening on %s", self.base_url)
            return self

    def _prepare(self, state: SandboxState) -> None:
        """Projects, keys and templates: made at first start, kept afterwards."""
        now = int(self._config.clock() * 1000)
        secret = state.secret()
        main_key = self._fixed_key or _derive_key(secret, MAIN_PROJECT)
        other_key = _derive_key(secret, OTHER_PROJECT)
        for project, key in ((MAIN_PROJECT, main_key), (OTHER_PROJECT, other_key)):
            state.ensure_project(project, project.title(), now)
            state.add_key(key, project, now)
            for spec in self._templates:
                state.sync_template(project, spec, now)
        self._keys = (main_key, other_key)

    def _refused_socket(self) -> socket.socket:
        """A socket bound on the sandbox's host that never listens: connections to its port
        are refused (what ``download_url: refused`` points at)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.bind((self.host, 0))
        except BaseException:
            sock.close()
            raise
        return sock

    def stop(self) -> None:
        """Go offline: stop listening and cut every connection. State and port are kept."""
        with self._lock:
            server, state, refused = self._server, self._state, self._refused
            self._server = self._api = self._state = self._refused = None
        if server is not None:
            server.close()
        if state is not None:
            state.close()
        if refused is not None:
            refused.close()

    def close(self) -> None:
        """Stop, and remove the state folder if it was a private temporary one."""
        self.stop()
        if self._own_state_dir and self._state_dir is not None:
            shutil.rmtree(self._state_dir, ignore_errors=True)
            self._state_dir = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- facts ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the sandbox is listening."""
        return self._server is not None

    @property
    def port(self) -> int:
        """The port (known once started; kept across stop/start)."""
        if self._port == 0:
            raise RuntimeError("the sandbox has not been started yet")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` with no trailing slash."""
        return self.base_url_for(self.port)

    def base_url_for(self, port: int) -> str:
        """The base URL for ``port`` (a wildcard host is reached through loopback)."""
        host = "127.0.0.1" if self.host in _WILDCARD_HOSTS else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    @property
    def state_dir(self) -> Path:
        """The folder holding the sandbox's state."""
        if self._state_dir is None:
            raise RuntimeError("the sandbox has not been started yet")
        return self._state_dir

    @property
    def api_key(self) -> str:
        """A project key (``ck_test_…``) of the sandbox's main project."""
        return self._require_keys()[0]

    @property
    def other_project_key(self) -> str:
        """A key of a second project: its renders are 404 ``not_found`` for the first."""
        return self._require_keys()[1]

    def _require_keys(self) -> tuple[str, str]:
        if self._keys is None:
            raise RuntimeError("the sandbox has not been started yet")
        return self._keys

    @property
    def faults(self) -> Faults:
        """The faults in force."""
        return self._injector.faults

    def transport(self) -> SandboxTransport:
        """An httpx transport to this sandbox in this process, with no socket: same API, state,
        faults and counters (see :mod:`outbox.sandbox.transport`). Pass it as ``transport=`` to
        an ``httpx.Client`` or an ``Outbox``; while the sandbox is stopped, requests fail the
        way a refused connection does."""
        return SandboxTransport(self._live)

    def _live(self) -> tuple[CraftkitAPI, threading.Event] | None:
        with self._lock:
            if self._api is None or self._server is None:
                return None
            return self._api, self._server.stopping

    # --- control --------------------------------------------------------------------------

    def set_faults(self, **changes: Any) -> Faults:
        """Change some faults at runtime (``sb.set_faults(drop_after=1.0)``); unknown names
        raise :class:`TypeError`, bad values :class:`ValueError`.

        ``keys`` poisons single renders by idempotency key and replaces every earlier
        per-key setting: ``sb.set_faults(keys={"entry-3": {"poll_answer": "garbage_json"}})``.
        """
        return self._injector.update(changes)

    def sent_emails(self) -> list[dict[str, Any]]:
        """Every email the sandbox sent, oldest first: ``renderId``, ``idempotencyKey``,
        ``shareId``, ``to``, ``recipientName``, ``message``, ``expiresAt``,
        ``emailMessageId``, ``sentAt``."""
        with self._api_context() as api:
            return api.sent_emails()

    def revoke_key(self, key: str) -> bool:
        """Revoke a key: its next call gets 401. Returns whether it was live."""
        with self._api_context() as api:
            return api.state.revoke_key(key, int(self._config.clock() * 1000))

    def republish(
        self, slug: str, manifest: dict[str, Any] | Manifest, name: str | None = None
    ) -> dict[str, Any]:
        """Publish a new version of a main-project template (creating it if needed), like
        ``PUT /v1/templates/:slug``; returns the template as ``GET`` shows it."""
        if not rules.is_slug(slug):
            raise ValueError(f"invalid slug {slug!r}")
        parsed = manifest if isinstance(manifest, Manifest) else Manifest.from_json(manifest)
        with self._api_context() as api:
            template, _ = api.state.put_template(
                MAIN_PROJECT, slug, parsed, int(self._config.clock() * 1000), name=name
            )
            return template_json(template)

    def stats(self) -> dict[str, Any]:
        """Renders created (also per idempotency key and per payload), shares and emails (in
        total, per render and per key), requests by route and status, 429s and other
        injected faults."""
        with self._api_context() as api:
            return api.stats()

    @contextmanager
    def _api_context(self) -> Iterator[CraftkitAPI]:
        """The running API, or (while stopped) one opened on the state folder just for this
        call, so stats, revocations and republishing work offline too."""
        with self._lock:
            api = self._api
            if api is not None:
                yield api
                return
            if self._state_dir is None:
                raise RuntimeError("the sandbox has not been started yet")
            state = SandboxState(self._state_dir)
            try:
                yield CraftkitAPI(state, self._injector, self._counters, self._config)
            finally:
                state.close()


def _derive_key(secret: str, project: str) -> str:
    """A project's default key, derived from the state's secret (so it survives restarts)."""
    digest = hmac.new(secret.encode(), f"project-key:{project}".encode(), "sha256").hexdigest()
    return KEY_PREFIX + digest[:32]
