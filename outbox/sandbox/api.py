"""The Craftkit contract: routes, authentication, idempotency, validation and error envelopes.

This module knows what each endpoint answers, not how bytes reach a socket: a handler takes a
:class:`Request` and returns a :class:`Response`, which :mod:`outbox.sandbox.server` writes
(or, for injected faults, drops, cuts short or drips). Faults that belong to one endpoint
or one render (errors around creation, hostile poll answers, broken public URLs, padded
bodies) are decided here, with the faults in force for the render's idempotency key; faults
that hit every request (latency, hangs, rate limits, captive portal) are applied by the server.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from outbox import rules
from outbox.sandbox import hostile
from outbox.sandbox.counters import RequestCounters
from outbox.sandbox.faults import FaultInjector, Faults
from outbox.sandbox.hostile import Body
from outbox.sandbox.manifest import Manifest, ManifestError
from outbox.sandbox.models import (
    FAILED,
    SUCCEEDED,
    RenderRecord,
    TemplateRecord,
    iso_ms,
)
from outbox.sandbox.pdf import PdfDocument, render_pdf
from outbox.sandbox.schema import json_schema
from outbox.sandbox.shares import ShareRequest, ShareRequestError, check_email, check_share
from outbox.sandbox.state import NewRender, NewShare, SandboxState
from outbox.sandbox.templates import RenderSeconds
from outbox.sandbox.validation import validate_data

logger = logging.getLogger(__name__)

JSON_TYPE = "application/json; charset=utf-8"
PDF_TYPE = "application/pdf"


class Headers(Protocol):
    """What the API needs from request headers: a case-insensitive ``get``."""

    def get(self, name: str, default: None = None) -> str | None: ...


@dataclass
class Request:
    """One parsed HTTP request."""

    method: str
    path: str
    headers: Headers
    body: bytes
    base_url: str


@dataclass
class Response:
    """What to answer. ``stream`` replaces ``body`` for big bodies sent in chunks. ``drop``
    closes the connection with no answer at all; ``truncate`` announces the full length but
    sends only part of the body; ``chunked`` sends the body without ``Content-Length``;
    ``drip`` sends the body at that many bytes per second. ``faults`` are those of the
    render the answer concerns (None: those for every render)."""

    status: int
    body: bytes = b""
    content_type: str | None = JSON_TYPE
    headers: list[tuple[str, str]] = field(default_factory=list)
    stream: Body | None = None
    drop: bool = False
    truncate: bool = False
    chunked: bool = False
    drip: float | None = None
    faults: Faults | None = None


@dataclass(frozen=True)
class Route:
    """A matched route: its pattern (for counters), handler and path parameters."""

    pattern: str
    handler: Callable[..., Response] | None
    params: tuple[str, ...] = ()
    control: bool = False
    allowed: tuple[str, ...] = ()


@dataclass
class ApiConfig:
    """Settings of the sandbox deployment that shape the answers."""

    render_seconds: RenderSeconds = 0.3
    public_bucket: bool = True
    pdf_size: int | None = None
    clock: Callable[[], float] = time.time
    #: A port on the sandbox's host where nothing listens (``download_url: refused``).
    refused_port: int = 9


def dumps(body: object) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def json_response(
    status: int, body: object, headers: list[tuple[str, str]] | None = None
) -> Response:
    """A JSON answer."""
    return Response(status, dumps(body), headers=headers or [])


def error(
    status: int, code: str | None, message: str, issues: dict[str, Any] | None = None
) -> Response:
    """Craftkit's error envelope ``{"error": {"code", "message", "issues"?}}``.

    ``code`` None leaves the code out (the private download's bare 404).
    """
    inner: dict[str, Any] = {}
    if code is not None:
        inner["code"] = code
    inner["message"] = message
    if issues is not None:
        inner["issues"] = issues
    return json_response(status, {"error": inner})


def flat_issues(
    field_errors: dict[str, list[str]], form_errors: list[str] | None = None
) -> dict[str, Any]:
    """Zod's ``flatten()`` shape."""
    return {"formErrors": form_errors or [], "fieldErrors": field_errors}


def payload_hash(slug: str, data: object) -> str:
    """SHA-256 of the slug and canonical data: equal for equal requests whatever their key."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{slug}\n{canonical}".encode()).hexdigest()


class _Refused(Exception):
    """Raised inside a handler to answer with an error response at once."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class CraftkitAPI:
    """Answers requests the way Craftkit does, from a :class:`SandboxState`."""

    def __init__(
        self,
        state: SandboxState,
        injector: FaultInjector,
        counters: RequestCounters,
        config: ApiConfig,
    ) -> None:
        self.state = state
        self.injector = injector
        self.counters = counters
        self.config = config

    # --- routing --------------------------------------------------------------------------

    def route(self, method: str, path: str) -> Route:
        """Match a request line to a route (unknown paths get a handler that answers 404)."""
        parts = path.split("/")
        n = len(parts)
        if n > 2 and parts[1] == "v1":
            if parts[2] == "renders" and 4 <= n <= 6 and parts[3]:
                render_id = (parts[3],)
                if n == 4:
                    return self._pick(
                        method, "/v1/renders/:id", {"GET": self.get_render}, render_id
                    )
                if n == 5 and parts[4] == "download":
                    return self._pick(
                        method, "/v1/renders/:id/download", {"GET": self.download_old}, render_id
                    )
                if n == 5 and parts[4] == "shares":
                    return self._pick(
                        method,
                        "/v1/renders/:id/shares",
                        {"GET": self.list_shares, "POST": self.create_share},
                        render_id,
                    )
                if n == 5 and parts[4] == "email":
                    return self._pick(
                        method, "/v1/renders/:id/email", {"POST": self.email_render}, render_id
                    )
                if n == 6 and parts[4] == "shares" and parts[5]:
                    return self._pick(
                        method,
                        "/v1/renders/:id/shares/:shareId",
                        {"DELETE": self.revoke_share},
                        (parts[3], parts[5]),
                    )
            if parts[2] == "templates":
                if n == 3:
                    return self._pick(method, "/v1/templates", {"GET": self.list_templates})
                if n == 4 and parts[3]:
                    return self._pick(
                        method,
                        "/v1/templates/:slug",
                        {"GET": self.get_template, "PUT": self.put_template},
                        (parts[3],),
                    )
                if n == 5 and parts[3] and parts[4] == "render":
                    return self._pick(
                        method, "/v1/templates/:slug/render", {"POST": self.render}, (parts[3],)
                    )
            if (
                n == 6
                and parts[2] == "embed"
                and parts[3] == "renders"
                and parts[4]
                and parts[5] == "download"
            ):
                return self._pick(
                    method,
                    "/v1/embed/renders/:id/download",
                    {"GET": self.download_private},
                    (parts[4],),
                )
            return Route(f"{method} /v1/*", self.unknown_v1)
        if path == "/health":
            return self._pick(method, "/health", {"GET": self.health})
        if n == 3 and parts[1] == "share" and parts[2]:
            return self._pick(method, "/share/:token", {"GET": self.open_share}, (parts[2],))
        if n == 4 and parts[1] == "public" and parts[2] == "renders" and parts[3].endswith(".pdf"):
            return self._pick(
                method, "/public/renders/:id.pdf", {"GET": self.download_public}, (parts[3][:-4],)
            )
        if n == 3 and parts[1] == "_sandbox":
            handlers: dict[str, dict[str, Callable[..., Response]]] = {
                "stats": {"GET": self.control_stats},
                "emails": {"GET": self.control_emails},
                "faults": {"GET": self.control_get_faults, "POST": self.control_set_faults},
                "revoke": {"POST": self.control_revoke},
            }
            if parts[2] in handlers:
                route = self._pick(method, f"/_sandbox/{parts[2]}", handlers[parts[2]])
                return Route(route.pattern, route.handler, route.params, True, route.allowed)
        return Route(f"{method} *", self.unknown)

    @staticmethod
    def _pick(
        method: str,
        pattern: str,
        handlers: dict[str, Callable[..., Response]],
        params: tuple[str, ...] = (),
    ) -> Route:
        lookup = "GET" if method == "HEAD" else method
        handler = handlers.get(lookup)
        params = tuple(unquote(p) if "%" in p else p for p in params)
        return Route(f"{method} {pattern}", handler, params, allowed=tuple(handlers))

    def dispatch(self, route: Route, request: Request) -> Response:
        """Run the route's handler; turn refusals and crashes into error envelopes."""
        if route.handler is None:
            response = error(
                405, "method_not_allowed", f"Method {request.method} is not allowed here."
            )
            response.headers.append(("Allow", ", ".join(route.allowed)))
            return response
        try:
            response = route.handler(request, *route.params)
        except _Refused as refused:
            response = refused.response
        except Exception:
            logger.exception("sandbox handler failed for %s %s", request.method, request.path)
            response = error(500, "internal", "Internal server error.")
        return response if route.control else self.shape(response)

    def shape(self, response: Response) -> Response:
        """Apply the body faults of the answer's render: padded error bodies and drips."""
        faults = response.faults or self.injector.faults
        if faults.huge_errors and response.status >= 400 and response.stream is None:
            response.stream = hostile.padded(response.body, faults.huge_errors)
            response.body = b""
        if response.content_type == PDF_TYPE and faults.slow_pdf is not None:
            response.drip = faults.slow_pdf
        elif faults.slow_body is not None:
            response.drip = faults.slow_body
        return response

    # --- helpers --------------------------------------------------------------------------

    def now_ms(self) -> int:
        """The sandbox clock in epoch milliseconds."""
        return int(self.config.clock() * 1000)

    def _project(self, request: Request, code: str = "unauthorized") -> str:
        """The project of the request's Bearer key, or refuse with 401 ``code``."""
        header = request.headers.get("Authorization")
        if not header:
            raise _Refused(error(401, code, "Missing Authorization header."))
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise _Refused(error(401, code, "Malformed Authorization header; use 'Bearer <key>'."))
        project = self.state.project_for_key(key)
        if project is None:
            raise _Refused(error(401, code, "Invalid or revoked API key."))
        return project

    def _public_url(self, request: Request, render: RenderRecord, faults: Faults) -> str | None:
        if not self.config.public_bucket:
            return None
        path = f"/public/renders/{render.id}.pdf"
        if faults.download_url == "file":
            return hostile.FILE_URL
        if faults.download_url == "refused":
            host = urlsplit(request.base_url).hostname or "127.0.0.1"
            host = f"[{host}]" if ":" in host else host
            return f"http://{host}:{self.config.refused_port}{path}"
        return request.base_url + path

    def _render_body(
        self,
        request: Request,
        render: RenderRecord,
        faults: Faults,
        *,
        detail: bool,
        new: bool = False,
    ) -> dict[str, Any]:
        now = render.created_ms - 1 if new else self.now_ms()
        body = render.to_json(
            now, request.base_url, self._public_url(request, render, faults), detail=detail
        )
        if faults.render_id is not None:
            shown = hostile.shown_id(faults, render.id)
            body["id"] = shown
            body["pollUrl"] = f"{request.base_url}/v1/renders/{shown}"
        return body

    def _render_of(self, project: str, render_id: str) -> RenderRecord | None:
        """The project's render with this id, or with this hostile id (``render_id``)."""
        render = self.state.get_render(render_id)
        if render is None:
            render = self._render_by_shown_id(project, render_id)
        if render is None or render.project_id != project:
            return None
        return render

    def _render_by_shown_id(self, project: str, shown: str) -> RenderRecord | None:
        for pattern, key in self.injector.shown_ids():
            if key is not None and pattern == shown:
                return self.state.render_by_key(project, key)
            real = hostile.real_id(pattern, shown)
            render = self.state.get_render(real) if real else None
            if render is not None and self.faults_of(render).render_id == pattern:
                return render
        return None

    def faults_of(self, render: RenderRecord) -> Faults:
        """The faults in force for a render (those of its idempotency key)."""
        return self.injector.for_key(render.idempotency_key)

    def _before_create(self, request: Request, faults: Faults) -> Response | None:
        """Faults that answer a create (render, share, email) before anything is made."""
        if faults.redirect_post is not None:
            self.injector.note("redirect_post")
            location = request.base_url + request.path
            return Response(
                faults.redirect_post, content_type=None, headers=[("Location", location)]
            )
        if self.injector.chance("error_429_before", faults):
            return self._with_retry_after(
                error(429, "rate_limited", "Too many requests; slow down."), faults, "1"
            )
        if self.injector.chance("error_500_before", faults):
            return error(500, "internal", "Internal server error.")
        if self.injector.chance("error_503_before", faults):
            return self._with_retry_after(
                error(503, "queue_unavailable", "The render queue is temporarily unavailable."),
                faults,
            )
        return None

    def _after_create(self, faults: Faults) -> Response | None:
        """Faults that lose the answer once something was made (the client cannot know)."""
        if self.injector.chance("drop_after", faults):
            return Response(0, drop=True)
        if self.injector.chance("error_500_after", faults):
            return error(500, "internal", "Internal server error.")
        return None

    @staticmethod
    def _with_retry_after(
        response: Response, faults: Faults, default: str | None = None
    ) -> Response:
        value = faults.retry_after or default
        if value is not None:
            response.headers.append(("Retry-After", value))
        return response

    @staticmethod
    def _parse_json(request: Request, empty: Any = None) -> Any:
        """The request's JSON body; ``empty``, when not None, stands for an empty body."""

        def refuse_constant(name: str) -> Any:
            raise ValueError(f"{name} is not JSON")

        if empty is not None and not request.body.strip():
            return empty
        try:
            return json.loads(request.body.decode("utf-8"), parse_constant=refuse_constant)
        except (UnicodeDecodeError, ValueError) as exc:
            raise _Refused(
                error(400, "invalid_json", "The request body is not valid JSON.")
            ) from exc

    # --- health and unknown routes --------------------------------------------------------

    def health(self, request: Request) -> Response:
        """``GET /health``: no auth."""
        return json_response(200, {"status": "ok"})

    def unknown_v1(self, request: Request) -> Response:
        """Any other ``/v1`` path."""
        return error(404, "not_found", f"No route for {request.method} {request.path}.")

    def unknown(self, request: Request) -> Response:
        """Any other path."""
        return error(404, "not_found", "Not found.")

    # --- templates ------------------------------------------------------------------------

    def list_templates(self, request: Request) -> Response:
        """``GET /v1/templates``: newest-updated first, without manifests."""
        project = self._project(request)
        templates = self.state.list_templates(project)
        return json_response(200, {"templates": [t.summary_json() for t in templates]})

    def get_template(self, request: Request, slug: str) -> Response:
        """``GET /v1/templates/:slug``: the template, its manifest and its JSON Schema."""
        project = self._project(request)
        template = self.state.get_template(project, slug)
        if template is None:
            return error(404, "template_not_found", f"Template '{slug}' not found.")
        return json_response(200, template_json(template))

    def put_template(self, request: Request, slug: str) -> Response:
        """``PUT /v1/templates/:slug``: create (201) or publish a new version (200)."""
        project = self._project(request)
        body = self._parse_json(request)
        if not rules.is_slug(slug):
            return error(
                400, "invalid_request", "Invalid slug.", flat_issues({"slug": ["Invalid slug"]})
            )
        if not isinstance(body, dict):
            return error(
                400,
                "invalid_request",
                "The body must be a JSON object.",
                flat_issues({}, [rules.expected("object", body)]),
            )
        raw_manifest = body.get("manifest", body)
        name, description = body.get("name"), body.get("description")
        field_errors: dict[str, list[str]] = {}
        if name is not None and not isinstance(name, str):
            field_errors["name"] = [rules.expected("string", name)]
        if description is not None and not isinstance(description, str):
            field_errors["description"] = [rules.expected("string", description)]
        if field_errors:
            return error(
                400, "invalid_request", "The request is not valid.", flat_issues(field_errors)
            )
        try:
            manifest = Manifest.from_json(raw_manifest)
        except ManifestError as exc:
            return error(400, exc.code, exc.message, flat_issues(exc.field_errors))
        template, created = self.state.put_template(
            project, slug, manifest, self.now_ms(), name=name, description=description
        )
        return json_response(201 if created else 200, template_json(template))

    # --- renders --------------------------------------------------------------------------

    def render(self, request: Request, slug: str) -> Response:
        """``POST /v1/templates/:slug/render``: validate, then create or replay a render."""
        project = self._project(request)
        body = self._parse_json(request)
        envelope = _check_envelope(body, request.headers.get("Idempotency-Key"))
        key, data, options = envelope
        faults = self.injector.for_key(key)
        refused = self._before_create(request, faults)
        if refused is not None:
            refused.faults = faults
            return refused
        if key is not None:
            existing = self.state.render_by_key(project, key)
            if existing is not None:
                return self._render_answer(200, request, existing, faults)
        template = self.state.get_template(project, slug)
        if template is None:
            return error(404, "template_not_found", f"Template '{slug}' not found.")
        if template.current_version is None:
            return error(
                409, "no_published_version", f"Template '{slug}' has no published version."
            )
        version = options.get("versionNumber") or template.current_version
        manifest = (
            template.manifest
            if version == template.current_version
            else self.state.manifest_for(template.id, version)
        )
        if manifest is None:
            return error(
                404, "version_not_found", f"Template '{slug}' has no published version {version}."
            )
        cleaned, field_errors = validate_data(manifest, data)
        if field_errors:
            return error(
                400,
                "invalid_input_data",
                "The data does not match the template.",
                flat_issues(field_errors),
            )
        render, created = self.state.create_render(
            self._new_render(project, template, version, key, cleaned, options, faults)
        )
        if not created:
            return self._render_answer(200, request, render, faults)
        lost = self._after_create(faults)
        if lost is not None:
            lost.faults = faults
            return lost
        return self._render_answer(202, request, render, faults, new=True)

    def _render_answer(
        self,
        status: int,
        request: Request,
        render: RenderRecord,
        faults: Faults,
        *,
        new: bool = False,
    ) -> Response:
        """The answer of a render POST."""
        body = self._render_body(request, render, faults, detail=False, new=new)
        return Response(status, dumps(body), faults=faults)

    def _new_render(
        self,
        project: str,
        template: TemplateRecord,
        version: int,
        key: str | None,
        data: dict[str, Any],
        options: dict[str, Any],
        faults: Faults,
    ) -> NewRender:
        """Fix a new render's timings and outcome (``fail_render`` makes it fail)."""
        seconds = (
            template.render_seconds
            if template.render_seconds is not None
            else self.config.render_seconds
        )
        if isinstance(seconds, tuple):
            seconds = self.injector.uniform(*seconds)
        total_ms = max(0, round(seconds * 1000))
        created = self.now_ms()
        fail_message = faults.fail_render or template.fail_message
        return NewRender(
            project_id=project,
            template=template,
            version_number=version,
            idempotency_key=key,
            payload_hash=payload_hash(template.slug, data),
            data=data,
            filename=options.get("filename"),
            created_ms=created,
            rendering_ms=created + total_ms // 5,
            finished_ms=created + total_ms,
            outcome=FAILED if fail_message else SUCCEEDED,
            error_message=fail_message,
        )

    def get_render(self, request: Request, render_id: str) -> Response:
        """``GET /v1/renders/:id``: the render's current state."""
        project = self._project(request)
        render = self._render_of(project, render_id)
        if render is None:
            return error(404, "not_found", "Render not found.")
        faults = self.faults_of(render)
        body = self._render_body(request, render, faults, detail=True)
        if faults.poll_answer is None and faults.duration_ms is None:
            encoded = dumps(body)
        else:
            encoded = hostile.poll_answer(body, faults)
        if faults.huge_poll is None:
            return Response(200, encoded, faults=faults)
        return Response(200, stream=hostile.padded(encoded, faults.huge_poll), faults=faults)

    # --- downloads ------------------------------------------------------------------------

    def _finished_render(self, render_id: str, project: str | None) -> RenderRecord | None:
        """A render of ``project`` (any project, real ids only, when None) that has
        succeeded, or None."""
        if project is None:
            render = self.state.get_render(render_id)
        else:
            render = self._render_of(project, render_id)
        if render is None or render.status_at(self.now_ms()) != SUCCEEDED:
            return None
        return render

    def _pdf(self, render: RenderRecord, faults: Faults) -> PdfDocument:
        return render_pdf(
            template=render.template_slug,
            version=render.version_number,
            render_id=render.id,
            created_at=iso_ms(render.created_ms),
            data=self.state.render_data(render.id),
            pad_to=faults.huge_pdf or self.config.pdf_size,
        )

    def _pdf_response(self, render: RenderRecord, headers: list[tuple[str, str]]) -> Response:
        faults = self.faults_of(render)
        return Response(
            200,
            content_type=PDF_TYPE,
            headers=headers,
            stream=self._pdf(render, faults),
            truncate=self.injector.chance("truncate_downloads", faults),
            chunked=faults.pdf_no_length,
            faults=faults,
        )

    def download_private(self, request: Request, render_id: str) -> Response:
        """``GET /v1/embed/renders/:id/download``: the private stream (404 until ready)."""
        project = self._project(request, code="invalid_credentials")
        render = self._render_of(project, render_id)
        if render is None or render.status_at(self.now_ms()) != SUCCEEDED:
            response = error(404, None, "Render not found or no asset yet.")
            response.faults = self.faults_of(render) if render is not None else None
            return response
        name = render.filename or f"{render.id}.pdf"
        return self._pdf_response(
            render,
            [
                ("Content-Disposition", f'inline; filename="{_header_safe(name)}"'),
                ("Cache-Control", "private, max-age=3600"),
            ],
        )

    def download_old(self, request: Request, render_id: str) -> Response:
        """``GET /v1/renders/:id/download``: the older private download (attachment)."""
        project = self._project(request)
        render = self._render_of(project, render_id)
        if render is None:
            return error(404, "not_found", "Render not found.")
        if render.status_at(self.now_ms()) != SUCCEEDED:
            return self._not_ready(render)
        return self._pdf_response(
            render,
            [
                ("Content-Disposition", f'attachment; filename="{render.id}.pdf"'),
            ],
        )

    def download_public(self, request: Request, render_id: str) -> Response:
        """``GET /public/renders/:id.pdf``: the public bucket (no auth, 404 until ready)."""
        render = self._finished_render(render_id, None) if self.config.public_bucket else None
        if render is None:
            return Response(404, b"Not Found\n", content_type="text/plain; charset=utf-8")
        faults = self.faults_of(render)
        broken = self._broken_bucket(request, faults.download_url)
        if broken is not None:
            self.injector.note("download_url")
            broken.faults = faults
            return broken
        return self._pdf_response(
            render,
            [
                ("Cache-Control", "public, max-age=31536000, immutable"),
            ],
        )

    @staticmethod
    def _broken_bucket(request: Request, mode: str | None) -> Response | None:
        """What the public bucket answers when ``download_url`` breaks it, or None."""
        if mode == "redirect":
            location = request.base_url + request.path
            return Response(302, content_type=None, headers=[("Location", location)])
        if mode == "unauthorized":
            return error(401, "unauthorized", "Missing or invalid credentials.")
        if mode == "wrong_body":
            return Response(200, hostile.WRONG_BODY, content_type=PDF_TYPE)
        if mode == "not_found":
            return Response(404, b"Not Found\n", content_type="text/plain; charset=utf-8")
        return None

    def _not_ready(self, render: RenderRecord) -> Response:
        response = error(409, "not_ready", "The render has not succeeded.")
        response.faults = self.faults_of(render)
        return response

    # --- shares and emails ---------------------------------------------------------------

    def _share_render(self, request: Request, render_id: str) -> tuple[RenderRecord, Faults]:
        """The project's render named in a share route (or 404), and its faults."""
        project = self._project(request)
        render = self._render_of(project, render_id)
        if render is None:
            raise _Refused(error(404, "not_found", "Render not found."))
        return render, self.faults_of(render)

    def _share_request(
        self, request: Request, check: Callable[[Any, int], ShareRequest], faults: Faults
    ) -> ShareRequest:
        body = self._parse_json(request, empty={})
        try:
            return check(body, self.now_ms())
        except ShareRequestError as exc:
            response = error(
                400,
                "invalid_request",
                "The request is not valid.",
                flat_issues(exc.field_errors, exc.form_errors),
            )
            response.faults = faults
            raise _Refused(response) from exc

    def create_share(self, request: Request, render_id: str) -> Response:
        """``POST /v1/renders/:id/shares``: a durable, revokable guest link (201)."""
        return self._create_share(request, render_id, email=False)

    def email_render(self, request: Request, render_id: str) -> Response:
        """``POST /v1/renders/:id/email``: an email-channel share, sent to ``to`` (201)."""
        return self._create_share(request, render_id, email=True)

    def _create_share(self, request: Request, render_id: str, *, email: bool) -> Response:
        """Both creates: checks, faults around creation, then the new share (201)."""
        render, faults = self._share_render(request, render_id)
        wanted = self._share_request(request, check_email if email else check_share, faults)
        refusal = self._before_create(request, faults)
        if refusal is None and render.status_at(self.now_ms()) != SUCCEEDED:
            refusal = self._not_ready(render)
        if refusal is None and email and faults.email_not_configured:
            self.injector.note("email_not_configured")
            refusal = self._with_retry_after(
                error(
                    503,
                    "email_not_configured",
                    "Email is not configured for this project.",
                ),
                faults,
            )
        if refusal is None and email and self.injector.chance("email_send_failed", faults):
            refusal = error(502, "email_send_failed", "The email could not be sent.")
        if refusal is not None:
            refusal.faults = faults
            return refusal
        share = self.state.create_share(
            NewShare(
                render_id=render.id,
                channel=wanted.channel,
                recipient_email=wanted.recipient_email,
                recipient_name=wanted.recipient_name,
                message=wanted.message,
                expires_ms=wanted.expires_ms,
                created_ms=self.now_ms(),
                sent=email,
            )
        )
        lost = self._after_create(faults)
        if lost is not None:
            lost.faults = faults
            return lost
        body = share.email_json(request.base_url) if email else share.to_json(request.base_url)
        return Response(201, dumps(body), faults=faults)

    def list_shares(self, request: Request, render_id: str) -> Response:
        """``GET /v1/renders/:id/shares``: newest first, revoked included, with clicks."""
        render, faults = self._share_render(request, render_id)
        rows = [
            share.to_json(request.base_url, clicks=True)
            for share in self.state.list_shares(render.id)
        ]
        return Response(200, dumps({"shares": rows}), faults=faults)

    def revoke_share(self, request: Request, render_id: str, share_id: str) -> Response:
        """``DELETE /v1/renders/:id/shares/:shareId``: 200 ``{id, revokedAt}``, then 404."""
        render, faults = self._share_render(request, render_id)
        share = self.state.revoke_share(render.id, share_id, self.now_ms())
        if share is None or share.revoked_ms is None:
            response = error(404, "not_found", "Share not found or already revoked.")
            response.faults = faults
            return response
        body = {"id": share.id, "revokedAt": iso_ms(share.revoked_ms)}
        return Response(200, dumps(body), faults=faults)

    def open_share(self, request: Request, token: str) -> Response:
        """``GET /share/:token``: the guest link serves the PDF and counts the click; a
        revoked or expired link answers 410, an unknown one 404."""
        share = self.state.share_by_token(token)
        if share is None:
            return _page(404, "This link does not exist.")
        if not share.resolves_at(self.now_ms()):
            gone = "revoked" if share.revoked_ms is not None else "expired"
            return _page(410, f"This link has been {gone}.")
        render = self.state.get_render(share.render_id)
        if render is None:
            return _page(404, "This link does not exist.")
        if request.method == "GET":
            self.state.count_click(share.id)
        name = render.filename or f"{render.id}.pdf"
        return self._pdf_response(
            render,
            [
                ("Content-Disposition", f'inline; filename="{_header_safe(name)}"'),
                ("Cache-Control", "private, no-store"),
            ],
        )

    # --- control endpoints ----------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Render and share counts (persisted), request counts and injected faults (in
        memory)."""
        injected = self.injector.injected()
        return {
            **self.state.render_counts(),
            **self.state.share_counts(),
            "requests": self.counters.snapshot(),
            "rate_limited": injected.get("rate_limit", 0),
            "faults_injected": injected,
        }

    def control_stats(self, request: Request) -> Response:
        """``GET /_sandbox/stats``."""
        return json_response(200, self.stats())

    def control_emails(self, request: Request) -> Response:
        """``GET /_sandbox/emails``: every email sent, oldest first."""
        return json_response(200, {"emails": self.sent_emails()})

    def sent_emails(self) -> list[dict[str, Any]]:
        """Every email sent, oldest first (render, key, recipient, message, times)."""
        emails = self.state.sent_emails()
        for email in emails:
            expires_ms, sent_ms = email.pop("expiresMs"), email.pop("sentMs")
            email["expiresAt"] = iso_ms(expires_ms) if expires_ms is not None else None
            email["sentAt"] = iso_ms(sent_ms)
        return emails

    def control_get_faults(self, request: Request) -> Response:
        """``GET /_sandbox/faults``: the faults in force."""
        return json_response(200, self.injector.faults.to_json())

    def control_set_faults(self, request: Request) -> Response:
        """``POST /_sandbox/faults``: change some faults (a partial :class:`Faults`)."""
        body = self._parse_json(request)
        if not isinstance(body, dict):
            return error(400, "invalid_request", "The body must be a JSON object of faults.")
        try:
            faults = self.injector.update(body)
        except (TypeError, ValueError) as exc:
            return error(400, "invalid_request", str(exc))
        return json_response(200, faults.to_json())

    def control_revoke(self, request: Request) -> Response:
        """``POST /_sandbox/revoke`` with ``{"key": "..."}``: revoke a key at once."""
        body = self._parse_json(request)
        key = body.get("key") if isinstance(body, dict) else None
        if not isinstance(key, str) or not key:
            return error(400, "invalid_request", 'Send {"key": "..."}.')
        revoked = self.state.revoke_key(key, self.now_ms())
        return json_response(200, {"revoked": revoked})


def template_json(template: TemplateRecord) -> dict[str, Any]:
    """The shape of ``GET /v1/templates/:slug``."""
    body = template.summary_json()
    body["description"] = template.description
    body["manifest"] = template.manifest.to_json() if template.manifest else None
    body["jsonSchema"] = json_schema(template.manifest) if template.manifest else None
    order = (
        "id",
        "name",
        "slug",
        "description",
        "templateType",
        "currentVersionNumber",
        "published",
        "manifest",
        "jsonSchema",
        "createdAt",
        "updatedAt",
    )
    return {k: body[k] for k in order}


def _check_envelope(
    body: Any, header_key: str | None
) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
    """Check the render request envelope; return ``(idempotency key, data, options)``.

    The ``Idempotency-Key`` header wins over the body's ``jobId``; both must be 1-200
    characters. Unknown option names are ignored, like ``options.sync``.
    """
    if not isinstance(body, dict):
        raise _Refused(
            error(
                400,
                "invalid_request",
                "The body must be a JSON object.",
                flat_issues({}, [rules.expected("object", body)]),
            )
        )
    field_errors: dict[str, list[str]] = {}
    data = body.get("data")
    if "data" not in body:
        field_errors["data"] = [rules.MSG_REQUIRED]
    elif not isinstance(data, dict):
        field_errors["data"] = [rules.expected("object", data)]
    if header_key is not None:
        problem = _key_problem(header_key)
        if problem:
            field_errors["Idempotency-Key"] = [problem]
    if "jobId" in body:
        problem = _key_problem(body["jobId"])
        if problem:
            field_errors["jobId"] = [problem]
    options = body.get("options", {})
    if not isinstance(options, dict):
        field_errors["options"] = [rules.expected("object", options)]
        options = {}
    checked: dict[str, Any] = {}
    if "versionNumber" in options:
        version = options["versionNumber"]
        if isinstance(version, bool) or not isinstance(version, int | float):
            field_errors["options.versionNumber"] = [rules.expected("number", version)]
        elif version != int(version):
            field_errors["options.versionNumber"] = ["Expected integer, received float"]
        elif version < 1:
            field_errors["options.versionNumber"] = ["Number must be greater than 0"]
        else:
            checked["versionNumber"] = int(version)
    if "filename" in options:
        filename = options["filename"]
        if not isinstance(filename, str):
            field_errors["options.filename"] = [rules.expected("string", filename)]
        elif not 1 <= len(filename) <= 255:
            field_errors["options.filename"] = [
                rules.string_too_short(1) if not filename else rules.string_too_long(255)
            ]
        else:
            checked["filename"] = filename
    if "sync" in options and not isinstance(options["sync"], bool):
        field_errors["options.sync"] = [rules.expected("boolean", options["sync"])]
    if field_errors:
        raise _Refused(
            error(400, "invalid_request", "The request is not valid.", flat_issues(field_errors))
        )
    key = header_key if header_key is not None else body.get("jobId")
    assert isinstance(data, dict)
    return key, data, checked


def _key_problem(key: object) -> str | None:
    """Why an idempotency key is refused, or None."""
    if not isinstance(key, str):
        return rules.expected("string", key)
    if len(key) < rules.IDEMPOTENCY_KEY_MIN:
        return rules.string_too_short(rules.IDEMPOTENCY_KEY_MIN)
    if len(key) > rules.IDEMPOTENCY_KEY_MAX:
        return rules.string_too_long(rules.IDEMPOTENCY_KEY_MAX)
    return None


def _page(status: int, text: str) -> Response:
    """A small plain-text page for people who open a share link."""
    return Response(status, text.encode() + b"\n", content_type="text/plain; charset=utf-8")


def _header_safe(text: str) -> str:
    """A filename that can sit inside a quoted header value."""
    return "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\' else "_" for c in text)
