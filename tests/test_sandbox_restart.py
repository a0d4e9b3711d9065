"""State survives a restart: going offline is stopping the sandbox, coming back is starting
it again on the same folder."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from sandbox_support import client, render
from support import FakeClock

from outbox.sandbox import Sandbox
from outbox.sandbox.state import DB_NAME


def test_stop_refuses_connections_and_start_comes_back_on_the_same_port(clock: FakeClock) -> None:
    with Sandbox(render_seconds=5, clock=clock) as sandbox:
        base, port = sandbox.base_url, sandbox.port
        with client(sandbox) as http:
            created = render(http, key="offline-1").json()
        sandbox.stop()
        assert not sandbox.running
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/health")
        clock.advance(6)
        sandbox.start()
        assert sandbox.port == port and sandbox.base_url == base
        with client(sandbox) as http:
            assert http.get("/health").json() == {"status": "ok"}
            polled = http.get(created["pollUrl"]).json()
            assert polled["status"] == "succeeded"
            replay = render(http, key="offline-1")
            assert replay.status_code == 200 and replay.json()["id"] == created["id"]
        stats = sandbox.stats()
        assert stats["renders_created"] == 1
        assert stats["requests"]["POST /v1/templates/:slug/render"] == {"202": 1, "200": 1}


def test_keep_alive_connections_are_cut_by_stop() -> None:
    with Sandbox() as sandbox, client(sandbox) as http:
        assert http.get("/health").status_code == 200
        sandbox.stop()
        with pytest.raises(httpx.TransportError):
            http.get("/health")
        sandbox.start()
        assert http.get("/health").status_code == 200


def test_a_new_sandbox_on_the_same_folder_keeps_everything(
    tmp_path: Path, clock: FakeClock
) -> None:
    state = tmp_path / "state"
    with Sandbox(state_dir=state, render_seconds=5, clock=clock) as first:
        key, other_key = first.api_key, first.other_project_key
        with client(first) as http:
            created = render(http, key="persist").json()
        first.republish(
            "memo",
            {"variables": [{"key": "title", "label": "T", "dataType": "text", "required": True}]},
        )
        first.revoke_key(other_key)
    assert (state / DB_NAME).exists()
    clock.advance(10)
    with Sandbox(state_dir=state, render_seconds=5, clock=clock) as second:
        assert second.api_key == key and second.other_project_key == other_key
        with client(second) as http:
            polled = http.get(f"/v1/renders/{created['id']}").json()
            assert polled["status"] == "succeeded"
            assert http.get("/v1/templates/memo").json()["currentVersionNumber"] == 1
            assert render(http, key="persist").status_code == 200
        with client(second, other_key) as other:
            assert other.get("/v1/templates").status_code == 401
        stats = second.stats()
        assert stats["renders_created"] == 1
        assert stats["renders_per_key"] == {"persist": 1}
    assert state.exists()  # a given state folder is never removed


def test_fixed_key_persists_and_generated_key_still_works(tmp_path: Path) -> None:
    with Sandbox(state_dir=tmp_path, api_key="ck_test_mine") as first:
        generated_other = first.other_project_key
    with Sandbox(state_dir=tmp_path) as second:
        assert second.other_project_key == generated_other
        with client(second, "ck_test_mine") as http:
            assert http.get("/v1/templates").status_code == 200
        with client(second) as http:
            assert http.get("/v1/templates").status_code == 200


def test_private_temporary_state_is_removed_on_exit() -> None:
    with Sandbox() as sandbox:
        folder = sandbox.state_dir
        sandbox.stop()
        sandbox.start()
        assert sandbox.state_dir == folder and folder.exists()
    assert not folder.exists()


def test_changed_templates_file_publishes_a_new_version(tmp_path: Path) -> None:
    templates = tmp_path / "templates.json"

    def write(required: bool) -> None:
        templates.write_text(
            json.dumps(
                {
                    "templates": [
                        {
                            "slug": "note",
                            "name": "Note",
                            "manifest": {
                                "variables": [
                                    {
                                        "key": "body",
                                        "label": "Body",
                                        "dataType": "text",
                                        "required": required,
                                    }
                                ]
                            },
                        }
                    ]
                }
            )
        )

    write(False)
    with Sandbox(state_dir=tmp_path / "s", templates=templates) as sandbox, client(sandbox) as http:
        assert http.get("/v1/templates/note").json()["currentVersionNumber"] == 1
    with Sandbox(state_dir=tmp_path / "s", templates=templates) as sandbox, client(sandbox) as http:
        assert http.get("/v1/templates/note").json()["currentVersionNumber"] == 1
    write(True)
    with Sandbox(state_dir=tmp_path / "s", templates=templates) as sandbox, client(sandbox) as http:
        assert http.get("/v1/templates/note").json()["currentVersionNumber"] == 2
        assert render(http, "note", {}).status_code == 400


def test_bad_templates_file_is_refused_early(tmp_path: Path) -> None:
    from outbox.sandbox.templates import TemplateFileError

    path = tmp_path / "t.json"
    for content in (
        "{",
        '{"templates": [{"slug": "Bad Slug"}]}',
        '{"templates": [{"slug": "a", "published": true}]}',
        '{"templates": [{"slug": "a", "manifest": {"loops": [{"key": "x.y"}]}}]}',
    ):
        path.write_text(content)
        with pytest.raises(TemplateFileError):
            Sandbox(templates=path)
    with pytest.raises(TemplateFileError):
        Sandbox(templates=tmp_path / "missing.json")


def test_start_is_idempotent_and_attributes_need_a_start() -> None:
    sandbox = Sandbox()
    with pytest.raises(RuntimeError):
        _ = sandbox.base_url
    with pytest.raises(RuntimeError):
        sandbox.stats()
    try:
        sandbox.start()
        port = sandbox.port
        sandbox.start()
        assert sandbox.port == port
    finally:
        sandbox.close()
    sandbox.stop()  # stopping twice is harmless


def test_stats_revoke_and_republish_work_while_stopped() -> None:
    with Sandbox(render_seconds=0) as sandbox:
        with client(sandbox) as http:
            render(http, key="before")
        sandbox.stop()
        assert sandbox.stats()["renders_per_key"] == {"before": 1}
        assert sandbox.revoke_key(sandbox.other_project_key) is True
        assert sandbox.republish("memo", {"variables": []})["currentVersionNumber"] == 1
        sandbox.start()
        with client(sandbox, sandbox.other_project_key) as other:
            assert other.get("/v1/templates").status_code == 401
        with client(sandbox) as http:
            assert http.get("/v1/templates/memo").status_code == 200
