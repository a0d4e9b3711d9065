"""The sandbox's Craftkit contract over a real loopback socket: auth, templates, renders,
idempotency, lifecycle and error envelopes."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sandbox_support import INSPECTION, INVOICE, client, error_code, field_errors, render
from support import FakeClock

from outbox.sandbox import Sandbox

# --- health and auth ------------------------------------------------------------------------


def test_health_needs_no_auth(sb: Sandbox) -> None:
    response = httpx.get(f"{sb.base_url}/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["content-type"].startswith("application/json")


def test_base_url_and_keys(sb: Sandbox) -> None:
    assert sb.base_url == f"http://127.0.0.1:{sb.port}"
    assert sb.api_key.startswith("ck_test_")
    assert sb.other_project_key.startswith("ck_test_")
    assert sb.api_key != sb.other_project_key


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer ck_test_wrong"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer"},
    ],
)
def test_missing_or_bad_key_is_401_unauthorized(sb: Sandbox, headers: dict[str, str]) -> None:
    for method, path in [
        ("GET", "/v1/templates"),
        ("GET", "/v1/templates/invoice"),
        ("POST", "/v1/templates/invoice/render"),
        ("GET", f"/v1/renders/{uuid.uuid4()}"),
    ]:
        response = httpx.request(
            method,
            sb.base_url + path,
            headers=headers,
            json={"data": {}} if method == "POST" else None,
        )
        assert response.status_code == 401, path
        assert error_code(response) == "unauthorized"
        assert response.json()["error"]["message"]


def test_revoked_key_gets_401_at_once(sb: Sandbox) -> None:
    with client(sb) as http:
        assert http.get("/v1/templates").status_code == 200
        assert sb.revoke_key(sb.api_key) is True
        response = http.get("/v1/templates")
        assert response.status_code == 401
        assert error_code(response) == "unauthorized"
    assert sb.revoke_key(sb.api_key) is False
    with client(sb, sb.other_project_key) as other:
        assert other.get("/v1/templates").status_code == 200


def test_fixed_api_key_is_accepted() -> None:
    with Sandbox(api_key="ck_test_fixed_key_for_tests") as sandbox:
        assert sandbox.api_key == "ck_test_fixed_key_for_tests"
        with client(sandbox) as http:
            assert http.get("/v1/templates").status_code == 200


def test_only_key_hashes_are_stored(sb: Sandbox) -> None:
    blobs = b"".join(p.read_bytes() for p in sb.state_dir.iterdir() if p.is_file())
    assert sb.api_key.encode() not in blobs
    assert sb.other_project_key.encode() not in blobs


# --- templates ------------------------------------------------------------------------------


def test_list_templates(sb: Sandbox) -> None:
    with client(sb) as http:
        response = http.get("/v1/templates")
    assert response.status_code == 200
    templates = response.json()["templates"]
    slugs = {t["slug"] for t in templates}
    assert {"inspection-report", "invoice", "always-fails", "draft-report"} <= slugs
    for template in templates:
        assert set(template) == {
            "id",
            "name",
            "slug",
            "templateType",
            "currentVersionNumber",
            "published",
            "createdAt",
            "updatedAt",
        }
    draft = next(t for t in templates if t["slug"] == "draft-report")
    assert draft["published"] is False and draft["currentVersionNumber"] is None
    updated = [t["updatedAt"] for t in templates]
    assert updated == sorted(updated, reverse=True)


def test_get_template_has_manifest_and_json_schema(sb: Sandbox) -> None:
    with client(sb) as http:
        body = http.get("/v1/templates/invoice").json()
    assert body["slug"] == "invoice" and body["published"] is True
    assert body["currentVersionNumber"] == 1
    keys = [v["key"] for v in body["manifest"]["variables"]]
    assert keys == ["customer.name", "customer.email", "amount"]
    assert body["manifest"]["loops"][0]["key"] == "items"
    schema = body["jsonSchema"]
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["properties"]["customer"]["required"] == ["name"]
    assert schema["properties"]["items"]["maxItems"] == 10000


def test_unpublished_template_shows_no_manifest(sb: Sandbox) -> None:
    with client(sb) as http:
        body = http.get("/v1/templates/draft-report").json()
    assert body["published"] is False
    assert body["manifest"] is None
    assert body["jsonSchema"] is None


def test_unknown_template_is_404_template_not_found(sb: Sandbox) -> None:
    with client(sb) as http:
        response = http.get("/v1/templates/nope")
        assert response.status_code == 404
        assert error_code(response) == "template_not_found"
        response = render(http, "nope")
        assert response.status_code == 404
        assert error_code(response) == "template_not_found"


def test_put_template_creates_then_republishes(sb: Sandbox) -> None:
    manifest = {
        "variables": [{"key": "title", "label": "Title", "dataType": "text", "required": True}],
        "loops": [],
    }
    with client(sb) as http:
        created = http.put("/v1/templates/memo", json={"name": "Memo", "manifest": manifest})
        assert created.status_code == 201
        assert created.json()["currentVersionNumber"] == 1
        assert created.json()["name"] == "Memo"
        manifest["variables"].append(
            {"key": "body", "label": "Body", "dataType": "longtext", "required": True}
        )
        again = http.put("/v1/templates/memo", json={"manifest": manifest})
        assert again.status_code == 200
        assert again.json()["currentVersionNumber"] == 2
        assert render(http, "memo", {"title": "x"}).status_code == 400
        assert render(http, "memo", {"title": "x", "body": "y"}).status_code == 202
        # Renders may still pin the first version.
        pinned = render(http, "memo", {"title": "x"}, options={"versionNumber": 1})
        assert pinned.status_code == 202
    with client(sb, sb.other_project_key) as other:
        assert other.get("/v1/templates/memo").status_code == 404


def test_put_template_refuses_bad_manifests(sb: Sandbox) -> None:
    with client(sb) as http:
        dotted_loop = {"variables": [], "loops": [{"key": "a.b", "label": "L", "itemFields": []}]}
        response = http.put("/v1/templates/memo", json={"manifest": dotted_loop})
        assert response.status_code == 400 and error_code(response) == "invalid_loop_key"
        bad_type = {"variables": [{"key": "x", "label": "X", "dataType": "colour"}]}
        response = http.put("/v1/templates/memo", json={"manifest": bad_type})
        assert response.status_code == 400 and error_code(response) == "invalid_request"
        assert "variables.0.dataType" in field_errors(response)
        response = http.put("/v1/templates/memo", content=b"{not json")
        assert response.status_code == 400 and error_code(response) == "invalid_json"


def test_republish_publishes_the_unpublished_template(sb: Sandbox) -> None:
    with client(sb) as http:
        response = render(http, "draft-report", {})
        assert response.status_code == 409
        assert error_code(response) == "no_published_version"
        template = sb.republish(
            "draft-report",
            {
                "variables": [
                    {"key": "summary", "label": "Summary", "dataType": "text", "required": True}
                ]
            },
        )
        assert template["published"] is True and template["currentVersionNumber"] == 1
        assert render(http, "draft-report", {"summary": "ok"}).status_code == 202


# --- render creation ------------------------------------------------------------------------


def test_new_render_is_202_queued(sb: Sandbox) -> None:
    with client(sb) as http:
        response = render(http, key="inspection-1")
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"id", "status", "pollUrl", "downloadUrl", "errorMessage", "createdAt"}
    assert uuid.UUID(body["id"]).version == 7
    assert body["status"] == "queued"
    assert body["pollUrl"] == f"{sb.base_url}/v1/renders/{body['id']}"
    assert body["downloadUrl"] is None and body["errorMessage"] is None
    assert body["createdAt"].endswith("Z") and len(body["createdAt"]) == 24


def test_replay_is_200_with_the_current_state(timed: Sandbox, clock: FakeClock) -> None:
    with client(timed) as http:
        first = render(http, key="job-1")
        assert first.status_code == 202
        clock.advance(3)
        replay = render(http, key="job-1")
        assert replay.status_code == 200
        assert replay.json()["id"] == first.json()["id"]
        assert replay.json()["status"] == "rendering"
        clock.advance(10)
        done = render(http, key="job-1")
        assert done.status_code == 200
        assert done.json()["status"] == "succeeded"
        assert done.json()["downloadUrl"].endswith(f"/public/renders/{first.json()['id']}.pdf")
    assert timed.stats()["renders_created"] == 1


def test_job_id_in_body_is_an_idempotency_key(sb: Sandbox) -> None:
    with client(sb) as http:
        first = render(http, jobId="handover-BK-1-checkout")
        second = render(http, jobId="handover-BK-1-checkout")
    assert (first.status_code, second.status_code) == (202, 200)
    assert first.json()["id"] == second.json()["id"]
    assert sb.stats()["renders_per_key"] == {"handover-BK-1-checkout": 1}


def test_header_wins_over_job_id(sb: Sandbox) -> None:
    with client(sb) as http:
        first = render(http, key="header-key", jobId="body-key")
        by_header = render(http, key="header-key", jobId="other-body-key")
        by_body = render(http, jobId="body-key")
    assert by_header.status_code == 200 and by_header.json()["id"] == first.json()["id"]
    assert by_body.status_code == 202 and by_body.json()["id"] != first.json()["id"]
    assert sb.stats()["renders_per_key"] == {"header-key": 1, "body-key": 1}


def test_without_a_key_every_post_is_a_new_render(sb: Sandbox) -> None:
    with client(sb) as http:
        ids = {render(http).json()["id"] for _ in range(3)}
    assert len(ids) == 3
    stats = sb.stats()
    assert stats["renders_without_key"] == 3
    assert list(stats["renders_per_payload"].values()) == [3]


def test_same_key_different_body_returns_the_original(sb: Sandbox) -> None:
    with client(sb) as http:
        first = render(http, key="k")
        other = render(http, "invoice", INVOICE, key="k")
        invalid = render(http, "invoice", {"nonsense": True}, key="k")
    assert other.status_code == 200 and other.json()["id"] == first.json()["id"]
    assert invalid.status_code == 200 and invalid.json()["id"] == first.json()["id"]
    assert sb.stats()["renders_created"] == 1


def test_keys_are_scoped_per_project(sb: Sandbox) -> None:
    with client(sb) as http, client(sb, sb.other_project_key) as other:
        mine = render(http, key="shared")
        theirs = render(other, key="shared")
    assert (mine.status_code, theirs.status_code) == (202, 202)
    assert mine.json()["id"] != theirs.json()["id"]
    assert sb.stats()["renders_per_key"] == {"shared": 2}


def test_concurrent_submits_with_one_key_create_one_render(sb: Sandbox) -> None:
    results: list[httpx.Response] = []
    barrier = threading.Barrier(8)

    def submit() -> None:
        with client(sb) as http:
            barrier.wait()
            results.append(render(http, key="race"))

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200] * 7 + [202]
    assert len({r.json()["id"] for r in results}) == 1
    assert sb.stats()["renders_created"] == 1


@pytest.mark.parametrize("key", ["", "x" * 201])
def test_idempotency_key_length_is_checked(sb: Sandbox, key: str) -> None:
    with client(sb) as http:
        by_header = render(http, key=key)
        by_body = render(http, jobId=key)
    assert by_header.status_code == 400 and error_code(by_header) == "invalid_request"
    assert "Idempotency-Key" in field_errors(by_header)
    assert by_body.status_code == 400 and error_code(by_body) == "invalid_request"
    assert "jobId" in field_errors(by_body)
    with client(sb) as http:
        assert render(http, key="x" * 200).status_code == 202


def test_invalid_json_body(sb: Sandbox) -> None:
    with client(sb) as http:
        for content in (b"{", b"", b"NaN", b"\xff\xfe"):
            response = http.post(
                "/v1/templates/invoice/render",
                content=content,
                headers={"Content-Type": "application/json"},
            )
            assert response.status_code == 400, content
            assert error_code(response) == "invalid_json"
            assert "issues" not in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "data"),
        ({"data": [1, 2]}, "data"),
        ({"data": {}, "options": "fast"}, "options"),
        ({"data": {}, "options": {"versionNumber": "1"}}, "options.versionNumber"),
        ({"data": {}, "options": {"versionNumber": 1.5}}, "options.versionNumber"),
        ({"data": {}, "options": {"versionNumber": 0}}, "options.versionNumber"),
        ({"data": {}, "options": {"filename": 3}}, "options.filename"),
        ({"data": {}, "options": {"sync": "yes"}}, "options.sync"),
        ({"data": {}, "jobId": 42}, "jobId"),
    ],
)
def test_invalid_envelope_is_invalid_request(sb: Sandbox, body: object, field: str) -> None:
    with client(sb) as http:
        response = http.post("/v1/templates/invoice/render", json=body)
    assert response.status_code == 400
    assert error_code(response) == "invalid_request"
    assert field in field_errors(response)


def test_body_that_is_not_an_object_is_invalid_request(sb: Sandbox) -> None:
    with client(sb) as http:
        response = http.post("/v1/templates/invoice/render", json=["data"])
    assert response.status_code == 400 and error_code(response) == "invalid_request"
    assert response.json()["error"]["issues"]["formErrors"] == ["Expected object, received array"]


def test_invalid_input_data_envelope(sb: Sandbox) -> None:
    with client(sb) as http:
        response = render(http, "invoice", {"amount": 5})
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "invalid_input_data",
            "message": response.json()["error"]["message"],
            "issues": {"formErrors": [], "fieldErrors": {"customer.name": ["Required"]}},
        }
    }
    assert sb.stats()["renders_created"] == 0


def test_sync_option_is_accepted_and_ignored(sb: Sandbox) -> None:
    with client(sb) as http:
        response = render(http, options={"sync": True, "filename": "north.pdf"})
    assert response.status_code == 202
    assert response.json()["status"] == "queued"


def test_version_pinning(sb: Sandbox) -> None:
    with client(sb) as http:
        assert render(http, options={"versionNumber": 1}).status_code == 202
        response = render(http, options={"versionNumber": 9})
        assert response.status_code == 404
        assert error_code(response) == "version_not_found"


def test_unknown_route_and_method(sb: Sandbox) -> None:
    with client(sb) as http:
        response = http.get("/v1/nothing-here")
        assert response.status_code == 404 and error_code(response) == "not_found"
        response = http.delete("/v1/renders/abc")
        assert response.status_code == 405
        assert response.headers["allow"] == "GET"


# --- polling and lifecycle ------------------------------------------------------------------


def test_lifecycle_follows_the_clock(timed: Sandbox, clock: FakeClock) -> None:
    with client(timed) as http:
        created = render(http).json()
        poll = created["pollUrl"]
        first = http.get(poll).json()
        assert first["status"] == "queued"
        assert first["completedAt"] is None and first["durationMs"] is None
        assert first["downloadUrl"] is None and first["errorMessage"] is None
        clock.advance(2.5)
        assert http.get(poll).json()["status"] == "rendering"
        clock.advance(7.5)
        done = http.get(poll).json()
    assert done["status"] == "succeeded"
    assert done["durationMs"] == 10_000
    assert done["createdAt"] == created["createdAt"]
    assert done["completedAt"] > done["createdAt"]
    assert done["downloadUrl"] == f"{timed.base_url}/public/renders/{created['id']}.pdf"
    assert done["errorMessage"] is None


def test_failing_template_ends_failed_with_a_message(timed: Sandbox, clock: FakeClock) -> None:
    with client(timed) as http:
        created = render(http, "always-fails", {"title": "x"}, key="doomed").json()
        assert http.get(created["pollUrl"]).json()["errorMessage"] is None
        clock.advance(11)
        failed = http.get(created["pollUrl"]).json()
        assert failed["status"] == "failed"
        assert failed["errorMessage"] == "Font 'Fieldwork Sans' could not be loaded"
        assert failed["downloadUrl"] is None
        assert failed["completedAt"] is not None and failed["durationMs"] == 10_000
        # A failed render sticks to its key.
        replay = render(http, "always-fails", {"title": "x"}, key="doomed")
        assert replay.status_code == 200
        assert replay.json()["status"] == "failed"
        assert replay.json()["id"] == created["id"]


def test_render_seconds_range_is_sampled_per_render(clock: FakeClock) -> None:
    with (
        Sandbox(render_seconds=(1.0, 3.0), clock=clock, seed=3) as sandbox,
        client(sandbox) as http,
    ):
        ids = [render(http).json()["id"] for _ in range(10)]
        clock.advance(5)
        durations = [http.get(f"/v1/renders/{i}").json()["durationMs"] for i in ids]
    assert all(1000 <= d <= 3000 for d in durations)
    assert len(set(durations)) > 1


def test_template_render_seconds_override(tmp_path: object, clock: FakeClock) -> None:
    import json
    from pathlib import Path

    path = Path(str(tmp_path)) / "templates.json"
    path.write_text(
        json.dumps(
            {
                "templates": [
                    {
                        "slug": "slow",
                        "name": "Slow",
                        "renderSeconds": 60,
                        "manifest": {"variables": [], "loops": []},
                    }
                ]
            }
        )
    )
    with Sandbox(templates=path, render_seconds=1, clock=clock) as sandbox, client(sandbox) as http:
        created = render(http, "slow", {}).json()
        clock.advance(30)
        assert http.get(created["pollUrl"]).json()["status"] == "rendering"
        clock.advance(31)
        assert http.get(created["pollUrl"]).json()["durationMs"] == 60_000
        assert http.get("/v1/templates/inspection-report").status_code == 404


def test_other_projects_render_is_404_not_found(sb: Sandbox) -> None:
    with client(sb) as http, client(sb, sb.other_project_key) as other:
        mine = render(http).json()
        theirs = render(other).json()
        for who, render_id in ((other, mine["id"]), (http, theirs["id"])):
            response = who.get(f"/v1/renders/{render_id}")
            assert response.status_code == 404
            assert error_code(response) == "not_found"
        assert http.get(f"/v1/renders/{mine['id']}").status_code == 200
        unknown = http.get(f"/v1/renders/{uuid.uuid4()}")
        assert unknown.status_code == 404 and error_code(unknown) == "not_found"


def test_cancelled_is_never_produced(timed: Sandbox, clock: FakeClock) -> None:
    with client(timed) as http:
        ids = [render(http).json()["id"] for _ in range(3)]
        ids.append(render(http, "always-fails", {}).json()["id"])
        seen: list[str] = []
        for _ in range(12):
            seen += [http.get(f"/v1/renders/{i}").json()["status"] for i in ids]
            clock.advance(1)
    assert set(seen) == {"queued", "rendering", "succeeded", "failed"}


# --- stats ----------------------------------------------------------------------------------


def test_stats_count_renders_and_requests_by_route(sb: Sandbox) -> None:
    with client(sb) as http:
        created = render(http, key="a").json()
        render(http, key="a")
        render(http, "invoice", INVOICE)
        render(http, "invoice", {})
        http.get(f"/v1/renders/{created['id']}")
        http.get(f"/v1/renders/{uuid.uuid4()}")
        http.get("/health")
    stats = sb.stats()
    assert stats["renders_created"] == 2
    assert stats["renders_per_key"] == {"a": 1}
    assert stats["renders_without_key"] == 1
    assert sorted(stats["renders_per_payload"].values()) == [1, 1]
    assert stats["requests"]["POST /v1/templates/:slug/render"] == {"202": 2, "200": 1, "400": 1}
    assert stats["requests"]["GET /v1/renders/:id"] == {"200": 1, "404": 1}
    assert stats["requests"]["GET /health"] == {"200": 1}
    assert stats["rate_limited"] == 0


def test_payload_hash_ignores_stripped_keys_and_coercion(sb: Sandbox) -> None:
    with client(sb) as http:
        render(http, "invoice", INVOICE, key="one")
        render(http, "invoice", {**INVOICE, "amount": 120.5, "unknown": 1}, key="two")
    assert list(sb.stats()["renders_per_payload"].values()) == [2]


def test_stats_over_http(sb: Sandbox) -> None:
    with client(sb) as http:
        render(http, key="z")
        stats = httpx.get(f"{sb.base_url}/_sandbox/stats").json()
    assert stats["renders_created"] == 1
    assert stats["renders_per_key"] == {"z": 1}
    assert "POST /v1/templates/:slug/render" in stats["requests"]


def test_invoice_happy_path(sb: Sandbox) -> None:
    with client(sb) as http:
        assert render(http, "invoice", INVOICE).status_code == 202
        assert render(http, data=INSPECTION).status_code == 202


def test_poll_url_follows_the_host_the_client_used(sb: Sandbox) -> None:
    with httpx.Client(
        base_url=f"http://localhost:{sb.port}", headers={"Authorization": f"Bearer {sb.api_key}"}
    ) as http:
        body = render(http).json()
    assert body["pollUrl"] == f"http://localhost:{sb.port}/v1/renders/{body['id']}"


def test_protocol_errors_use_the_error_envelope(sb: Sandbox) -> None:
    response = httpx.request("BREW", f"{sb.base_url}/health")
    assert response.status_code == 501
    assert error_code(response) == "method_not_allowed"


def test_oversized_body_is_413(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    from outbox.sandbox import server

    monkeypatch.setattr(server, "MAX_BODY_BYTES", 1000)
    with client(sb) as http:
        response = render(http, data={"inspector": "x" * 2000, "site": "y"})
        assert response.status_code == 413
        assert error_code(response) == "payload_too_large"
        assert render(http).status_code == 202  # a fresh connection works


def test_chunked_request_body(sb: Sandbox) -> None:
    import json

    def body() -> Iterator[bytes]:
        yield json.dumps({"data": INSPECTION})[:10].encode()
        yield json.dumps({"data": INSPECTION})[10:].encode()

    with client(sb) as http:
        response = http.post("/v1/templates/inspection-report/render", content=body())
    assert response.status_code == 202
