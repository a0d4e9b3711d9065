"""Hostile cached schemas: the published ``jsonSchema`` is never evaluated, so a ``$ref`` to a
file or the network is followed nowhere and a backtracking ``pattern`` never runs; the manifest
alone decides, and an offline enqueue neither waits nor touches the network."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support import run_cli

from outbox import CheckOutcome, Outbox, State
from outbox.templates import CachedTemplate
from outbox.validation import Checker

MANIFEST = {
    "variables": [{"key": "name", "label": "Name", "dataType": "text", "required": True}],
    "loops": [],
}


def template(schema: dict[str, Any], slug: str = "hostile") -> CachedTemplate:
    return CachedTemplate(
        slug=slug,
        name="Hostile",
        version=1,
        published=True,
        manifest=MANIFEST,
        json_schema={"$schema": "http://json-schema.org/draft-07/schema#", **schema},
        updated_at=None,
        synced_at="2026-06-05T11:00:00.000Z",
    )


@pytest.fixture
def schema_server() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server that would hand out a schema, and counts who asked."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            hits.append(self.path)
            body = b'{"not": {}}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


def hostile_schemas(url: str, refusing_file: Path) -> dict[str, dict[str, Any]]:
    """Schemas that would read a file, call the network, loop or backtrack if evaluated."""
    name = "properties"
    return {
        "remote-ref": {name: {"name": {"$ref": f"{url}/name.json"}}},
        "file-ref": {name: {"name": {"$ref": refusing_file.as_uri()}}},
        "ref-loop": {"definitions": {"a": {"$ref": "#/definitions/a"}}, "$ref": "#/definitions/a"},
        "slow-pattern": {name: {"name": {"type": "string", "pattern": "^(a|aa)+$"}}},
        "pattern-properties": {"patternProperties": {"^(a|aa)+$": {"type": "string"}}},
    }


def test_hostile_schemas_are_never_evaluated_the_manifest_decides(
    tmp_path: Path, schema_server: tuple[str, list[str]]
) -> None:
    url, hits = schema_server
    refusing = tmp_path / "refuse-everything.json"
    refusing.write_text('{"not": {}}')  # would refuse any value, were it read
    checker = Checker()
    for slug, schema in hostile_schemas(url, refusing).items():
        good = checker.check(template(schema, slug), slug, {"name": "a" * 40 + "!"})
        assert good.outcome is CheckOutcome.VALID, (slug, good.message())
        missing = checker.check(template(schema, slug), slug, {})
        assert missing.outcome is CheckOutcome.INVALID, slug
        assert missing.field_errors == {"name": ["Required"]}
    assert hits == []


def test_an_offline_enqueue_with_hostile_cached_schemas_queues_at_once(
    tmp_path: Path, schema_server: tuple[str, list[str]]
) -> None:
    url, hits = schema_server
    db = tmp_path / "j.db"
    schemas = hostile_schemas(url, tmp_path / "missing.json")
    with Outbox(db) as ob:
        ob.journal.save_templates([template(schema, slug) for slug, schema in schemas.items()])
        for slug in schemas:
            entry = ob.enqueue(slug, {"name": "a" * 40 + "!"}, key=f"lib-{slug}")
            assert entry.state is State.PENDING
    env = {"OUTBOX_DB": str(db)}
    for slug in schemas:
        result = run_cli("enqueue", slug, "--data", '{"name": "' + "a" * 40 + '!"}', env=env)
        assert result.returncode == 0, result.stderr
    assert hits == []
