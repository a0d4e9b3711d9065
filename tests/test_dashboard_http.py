"""The dashboard over real HTTP on a loopback socket: the token, CSRF and host rules, PDFs
served from the downloads folder only, paging, the live stream, and the actions."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import connected, process_env, run_cli, wait_until

from outbox import Entry, Outbox, State
from outbox.dashboard import DashboardApp, DashboardServer
from outbox.sandbox import Sandbox

PDF = b"%PDF-1.4\n% a tiny but real-looking PDF body\n%%EOF\n"


@pytest.fixture
def board(ob: Outbox) -> Iterator[DashboardServer]:
    server = ob.dashboard(port=0)
    yield server
    server.close()


def origin(board: DashboardServer) -> str:
    return f"http://127.0.0.1:{board.port}"


@pytest.fixture
def anonymous(board: DashboardServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=origin(board), timeout=10) as http:
        yield http


@pytest.fixture
def browser(board: DashboardServer) -> Iterator[httpx.Client]:
    """A client that opened the printed URL, as a browser would: it holds the cookie."""
    with httpx.Client(base_url=origin(board), timeout=10) as http:
        assert http.get(board.url).status_code == 303
        yield http


def post(http: httpx.Client, path: str, board: DashboardServer, **headers: str) -> httpx.Response:
    """A same-origin JSON POST, as the page makes it (pass headers to override)."""
    sent = {"Origin": origin(board), "Content-Type": "application/json", **headers}
    return http.post(path, content=b"{}", headers={k: v for k, v in sent.items() if v})


def failed_entry(ob: Outbox, key: str = "doomed") -> Entry:
    entry = ob.enqueue("always-fails", {"n": 1}, key=key)
    ob.journal.transition(entry.id, State.PENDING, State.SUBMITTED, render_id="rnd_1")
    return ob.journal.transition(
        entry.id, State.SUBMITTED, State.FAILED, error="Font could not be loaded"
    )


def done_entry(ob: Outbox, key: str, pdf_path: str | Path, size: int) -> Entry:
    entry = ob.enqueue("invoice", {"n": key}, key=key)
    ob.journal.transition(entry.id, State.PENDING, State.SUBMITTED, render_id="rnd_" + key)
    ob.journal.transition(entry.id, State.SUBMITTED, State.DOWNLOADING)
    return ob.journal.transition(
        entry.id,
        State.DOWNLOADING,
        State.DONE,
        pdf_path=str(pdf_path),
        pdf_bytes=size,
        pdf_sha256=hashlib.sha256(PDF).hexdigest(),
    )


# -- the token ---------------------------------------------------------------------------


def test_without_the_token_nothing_is_shown(
    board: DashboardServer, anonymous: httpx.Client
) -> None:
    for path in ("/", "/api/summary", "/api/entries", "/static/app.js", "/api/events", "/nope"):
        response = anonymous.get(path)
        assert response.status_code == 401, path
        assert "open the URL" in response.text
    assert anonymous.get("/?token=not-the-token").status_code == 403
    assert anonymous.get("/api/summary", headers={"X-Outbox-Token": "guess"}).status_code == 403
    anonymous.cookies.set(board.app.guard.cookie_name, "guessed-value-guessed")
    assert anonymous.get("/api/summary").status_code == 403


def test_the_url_token_becomes_an_httponly_strict_cookie(
    board: DashboardServer, anonymous: httpx.Client
) -> None:
    response = anonymous.get(board.url)
    assert response.status_code == 303
    assert response.headers["location"] == "/", "the token leaves the address bar"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{board.app.guard.cookie_name}={board.app.token};")
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= {p.strip() for p in cookie.split(";")}
    page = anonymous.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="static/app.js"' in page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "http" not in policy, "nothing may come from elsewhere"
    assert page.headers["x-frame-options"] == "DENY"
    assert anonymous.get("/static/app.js").status_code == 200
    # Scripts can send the token as a header instead of a cookie.
    with httpx.Client(base_url=origin(board)) as script:
        answer = script.get("/api/summary", headers={"X-Outbox-Token": board.app.token})
        assert answer.status_code == 200 and "counts" in answer.json()


def test_two_dashboards_keep_separate_cookies(ob: Outbox, board: DashboardServer) -> None:
    with ob.dashboard(port=0) as other, httpx.Client() as http:
        assert other.app.guard.cookie_name != board.app.guard.cookie_name
        assert http.get(other.url).status_code == 303
        assert http.get(f"{origin(other)}/api/summary").status_code == 200
        assert http.get(f"{origin(board)}/api/summary").status_code == 401


def test_a_request_for_another_host_name_is_refused(
    board: DashboardServer, browser: httpx.Client
) -> None:
    # A page that re-points its own DNS name at 127.0.0.1 still sends its name as Host.
    rebound = browser.get("/api/summary", headers={"Host": f"evil.example:{board.port}"})
    assert rebound.status_code == 403
    assert browser.get("/api/summary", headers={"Host": f"localhost:{board.port}"}).is_success


# -- CSRF --------------------------------------------------------------------------------


def test_changes_need_the_token_and_this_origin(
    ob: Outbox, board: DashboardServer, browser: httpx.Client, anonymous: httpx.Client
) -> None:
    entry = failed_entry(ob)
    path = f"/api/entries/{entry.id}/retry"
    refused = {
        "foreign origin": post(browser, path, board, Origin="https://evil.example"),
        "null origin": post(browser, path, board, Origin="null"),
        "no origin": post(browser, path, board, Origin=""),
        "cross-site fetch": post(browser, path, board, **{"Sec-Fetch-Site": "cross-site"}),
        "form body": post(browser, path, board, **{"Content-Type": "text/plain"}),
        "no token": post(anonymous, path, board),
        "a GET": browser.get(path),
    }
    statuses = {name: response.status_code for name, response in refused.items()}
    assert statuses == {
        "foreign origin": 403,
        "null origin": 403,
        "no origin": 403,
        "cross-site fetch": 403,
        "form body": 415,
        "no token": 401,
        "a GET": 405,
    }
    after = ob.get(entry.id)
    assert after.state is State.FAILED and after.key == "doomed"
    assert len(ob.history(entry.id)) == 3, "nothing was recorded either"

    done = post(browser, path, board)
    assert done.status_code == 200, done.text
    assert done.json()["entry"]["state"] == "pending"
    assert ob.get(entry.id).key == "doomed~2"


def test_cancel_and_illegal_actions(
    ob: Outbox, board: DashboardServer, browser: httpx.Client
) -> None:
    pending = ob.enqueue("invoice", {"n": 1}, key="to-cancel")
    answer = post(browser, f"/api/entries/{pending.id}/cancel", board)
    assert answer.status_code == 200 and ob.get(pending.id).state is State.CANCELLED
    # A request cancelled before it was sent can still be amended (and goes back to pending).
    assert browser.get(f"/api/entries/{pending.id}").json()["actions"]["amend"] is True
    again = post(browser, f"/api/entries/{pending.id}/retry", board)
    assert again.status_code == 409
    assert "only failed or rejected entries can be retried" in again.json()["error"]["message"]
    assert post(browser, "/api/entries/0000000000000000/cancel", board).status_code == 404


# -- PDFs --------------------------------------------------------------------------------


def test_pdfs_are_served_by_entry_id_from_the_downloads_folder_only(
    ob: Outbox, tmp_path: Path, browser: httpx.Client
) -> None:
    downloads = ob.downloads
    downloads.mkdir(parents=True, exist_ok=True)
    (downloads / "good.pdf").write_bytes(PDF)
    outside = tmp_path / "private"
    outside.mkdir()
    secret = b"%PDF-1.4 the secret document outside the downloads folder"
    (outside / "secret.pdf").write_bytes(secret)
    (downloads / "link.pdf").symlink_to(outside / "secret.pdf")
    (downloads / "short.pdf").write_bytes(PDF[:10])

    good = done_entry(ob, "good", downloads / "good.pdf", len(PDF))
    answer = browser.get(f"/pdf/{good.id}")
    assert answer.status_code == 200 and answer.content == PDF
    assert answer.headers["content-type"] == "application/pdf"
    assert 'filename="good.pdf"' in answer.headers["content-disposition"]

    hostile = {
        "absolute path elsewhere": done_entry(ob, "abs", outside / "secret.pdf", len(secret)),
        "relative escape": done_entry(ob, "rel", "../private/secret.pdf", len(secret)),
        "symlink in downloads": done_entry(ob, "link", downloads / "link.pdf", len(secret)),
        "size not the verified one": done_entry(ob, "short", downloads / "short.pdf", len(PDF)),
        "not done": ob.enqueue("invoice", {"n": 2}, key="pending"),
    }
    for name, entry in hostile.items():
        answer = browser.get(f"/pdf/{entry.id}")
        assert answer.status_code == 404, name
        assert b"secret document" not in answer.content, name
    # Same name in the downloads folder, but the journal points elsewhere: still refused.
    (downloads / "secret.pdf").write_bytes(secret)
    assert browser.get(f"/pdf/{hostile['absolute path elsewhere'].id}").status_code == 404
    for path in ("/pdf/..%2Fprivate%2Fsecret.pdf", "/pdf/../private/secret.pdf", "/pdf/nope"):
        answer = browser.get(path)
        assert answer.status_code == 404, path
        assert b"secret document" not in answer.content


# -- reading -----------------------------------------------------------------------------


def test_entries_page_by_cursor_with_filters_and_search(ob: Outbox, browser: httpx.Client) -> None:
    ob.enqueue_many(
        {
            "template": "invoice" if i % 3 else "inspection-report",
            "data": {"n": i},
            "key": f"k-{i:03d}",
        }
        for i in range(120)
    )
    ob.cancel(ob.page(limit=1).entries[0].id)

    def walk(**params: str) -> list[str]:
        keys: list[str] = []
        after = ""
        while True:
            query = {"limit": "50", **params, **({"after": after} if after else {})}
            page = browser.get("/api/entries", params=query).json()
            keys += [row["key"] for row in page["entries"]]
            if page["next"] is None:
                return keys
            after = page["next"]

    everything = walk()
    assert everything == [f"k-{i:03d}" for i in reversed(range(120))]
    assert walk(state="cancelled") == ["k-119"]
    assert walk(template="inspection-report") == [f"k-{i:03d}" for i in reversed(range(0, 120, 3))]
    assert walk(q="k-10") == [f"k-10{i}" for i in range(10)]
    assert walk(q="k-1", template="inspection-report", state="pending") == [
        f"k-{i}" for i in range(102, 119, 3)
    ]
    first = browser.get("/api/entries", params={"limit": "2"}).json()
    assert [set(row) for row in first["entries"]][0] >= {"id", "state", "template", "key", "note"}
    assert browser.get("/api/entries", params={"limit": "x"}).status_code == 400
    assert browser.get("/api/entries", params={"limit": "501"}).status_code == 400
    assert browser.get("/api/entries", params={"state": "stuck"}).status_code == 400
    assert browser.get("/api/entries", params={"after": "not-a-cursor"}).status_code == 400


def test_summary_detail_and_rows(ob: Outbox, browser: httpx.Client) -> None:
    rejected = ob.enqueue("inspection-report", {"inspector": "Ada"}, key="bad-data")
    ob.journal.transition(
        rejected.id,
        State.PENDING,
        State.REJECTED,
        error="The data does not match the template",
        error_code="invalid_input_data",
        field_errors={"site": ["Required"]},
        http_status=400,
    )
    ob.journal.set_status("connectivity", {"online": False, "reason": "connection refused"})
    summary = browser.get("/api/summary").json()
    assert summary["counts"]["rejected"] == 1 and summary["total"] == 1
    assert summary["templates"] == ["inspection-report"]
    assert summary["facts"][0]["label"] == "network" and summary["facts"][0]["ok"] is False
    assert summary["last_event"] == ob.journal.last_event_id()

    detail = browser.get(f"/api/entries/{rejected.id}").json()
    assert detail["problems"] == [
        "The data does not match the template (invalid_input_data)",
        "site: Required",
    ]
    assert "refused the request for good" in detail["explanation"]
    assert detail["actions"] == {"retry": True, "cancel": False, "amend": True}
    assert [event["to_state"] for event in detail["events"]] == ["pending", "rejected"]
    assert detail["entry"]["data"] == {"inspector": "Ada"}

    rows = browser.get("/api/rows", params={"ids": f"{rejected.id},0123456789abcdef"}).json()
    assert rows["rows"][0]["state"] == "rejected"
    assert rows["rows"][1] == {"id": "0123456789abcdef", "gone": True}
    assert browser.get("/api/entries/0123456789abcdef").status_code == 404


def test_purge_shows_a_preview_then_deletes(
    ob: Outbox, board: DashboardServer, browser: httpx.Client
) -> None:
    for i in range(3):
        ob.cancel(ob.enqueue("invoice", {"n": i}, key=f"old-{i}").id)
    kept = ob.enqueue("invoice", {"n": 9}, key="unfinished")
    preview = browser.get("/api/purge", params={"older_than": "0"}).json()
    assert preview == {"older_than": 0.0, "count": 3}
    assert sum(ob.counts().values()) == 4, "a preview deletes nothing"
    assert browser.get("/api/purge", params={"older_than": "-1"}).status_code == 400
    refused = post(browser, "/api/purge", board, Origin="https://evil.example")
    assert refused.status_code == 403 and sum(ob.counts().values()) == 4
    done = browser.post(
        "/api/purge",
        json={"older_than": 0},
        headers={"Origin": origin(board)},
    )
    assert done.json() == {"older_than": 0.0, "purged": 3}
    assert [entry.id for entry in ob.list()] == [kept.id]


# -- live --------------------------------------------------------------------------------


def read_changes(http: httpx.Client, since: int, count: int) -> list[dict[str, object]]:
    """The first ``count`` changes the live stream sends after event ``since``."""
    found: list[dict[str, object]] = []
    with http.stream("GET", "/api/events", params={"since": str(since)}) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                found.append(json.loads(line[len("data: ") :]))
                if len(found) == count:
                    return found
    return found


def test_the_live_stream_carries_changes_made_through_other_connections(
    ob: Outbox, db_path: Path, browser: httpx.Client
) -> None:
    since = ob.journal.last_event_id()
    result: list[list[dict[str, object]]] = []
    reader = threading.Thread(target=lambda: result.append(read_changes(browser, since, 2)))
    reader.start()
    # Another connection (as another process would) adds an entry and cancels it: the
    # dashboard's outbox hears nothing directly, and its stream still reports both moves.
    with Outbox(db_path) as other:
        added = other.enqueue("invoice", {}, key="x")
        other.cancel(added.id)
    reader.join(timeout=30)
    assert not reader.is_alive()
    first, second = result[0]
    assert (first["entry"], first["from"], first["to"]) == (added.id, None, "pending")
    assert (second["from"], second["to"]) == ("pending", "cancelled")
    assert int(str(second["id"])) > int(str(first["id"])) > since
    # A reconnecting browser resumes after the last event it saw (Last-Event-ID).
    with browser.stream(
        "GET", "/api/events", headers={"Last-Event-ID": str(first["id"])}
    ) as stream:
        data = next(line for line in stream.iter_lines() if line.startswith("data: "))
        assert json.loads(data[6:])["id"] == second["id"]


# -- the command -------------------------------------------------------------------------


@pytest.mark.e2e
def test_outbox_dashboard_prints_its_url_and_stops_on_sigterm(db_path: Path) -> None:
    Outbox(db_path).close()
    env = process_env()
    process = subprocess.Popen(
        [sys.executable, "-m", "outbox", "--db", str(db_path), "dashboard", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and "/?token=" in url
        with httpx.Client() as http:
            assert http.get(url).status_code == 303
            base = url.split("/?")[0]
            assert http.get(base + "/api/summary").json()["journal"] == str(db_path)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "dashboard stopped" in stderr
    assert "token" not in stderr and url.split("token=")[1] not in stderr


def test_outbox_dashboard_fails_clearly_on_a_busy_port(db_path: Path, ob: Outbox) -> None:
    with ob.dashboard(port=0) as busy:
        taken = run_cli("--db", str(db_path), "dashboard", "--port", str(busy.port))
    assert taken.returncode == 78
    assert f"cannot serve the dashboard on 127.0.0.1:{busy.port}" in taken.stderr


@pytest.mark.e2e
def test_outbox_dashboard_warns_when_it_listens_on_another_host(db_path: Path) -> None:
    Outbox(db_path).close()
    process = subprocess.Popen(
        [sys.executable, "-m", "outbox", "--db", str(db_path), "dashboard", "--port", "0"]
        + ["--host", "0.0.0.0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=process_env(),
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("http://0.0.0.0:")
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert "warning: listening on 0.0.0.0" in stderr


def test_the_app_mounts_under_a_prefix_in_another_wsgi_app(ob: Outbox) -> None:
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    app = DashboardApp(ob)

    def host_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        if path.startswith("/outbox/"):
            environ["SCRIPT_NAME"] += "/outbox"
            environ["PATH_INFO"] = path[len("/outbox") :]
            return app(environ, start_response)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"the host app"]

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = make_server("127.0.0.1", 0, host_app, handler_class=Quiet)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.server_port}", timeout=10) as http:
            assert http.get("/outbox/api/summary").status_code == 401
            entered = http.get(f"/outbox/?token={app.token}")
            assert entered.headers["location"] == "/outbox/"
            assert "Path=/outbox/;" in entered.headers["set-cookie"]
            assert 'href="static/app.css"' in http.get("/outbox/").text  # relative URLs
            assert http.get("/outbox/static/app.css").status_code == 200
            assert http.get("/outbox/api/summary").json()["total"] == 0
            assert http.get("/elsewhere").text == "the host app"
    finally:
        app.close()
        server.shutdown()
        server.server_close()


def test_closing_the_dashboard_ends_open_live_streams(ob: Outbox) -> None:
    board = ob.dashboard(port=0)
    ended = threading.Event()

    def follow() -> None:
        with httpx.Client(base_url=origin(board), timeout=60) as http:
            assert http.get(board.url).status_code == 303
            with http.stream("GET", "/api/events") as stream:
                for _ in stream.iter_lines():
                    opened.set()
        ended.set()

    opened = threading.Event()
    reader = threading.Thread(target=follow)
    reader.start()
    assert opened.wait(30)
    board.close()
    reader.join(60)
    assert ended.is_set(), "the stream ended when the dashboard closed"


def test_explanations_say_why_an_entry_waits(ob: Outbox) -> None:
    from outbox.dashboard.views import explain

    entry = ob.enqueue("invoice", {"n": 1}, key="waiting")
    now = ob.clock.now()
    assert explain(entry, {}, now).startswith("Saved locally; it is sent at the next flush")
    later = ob.journal.transition(
        entry.id,
        State.PENDING,
        State.PENDING,
        attempts=2,
        error="503 queue_unavailable: try again later",
        due_at=now + 120,
    )
    offline = {"connectivity": {"online": False, "reason": "connection refused"}}
    offline["connectivity_at"] = "2030-01-01T10:00:00.000Z"  # type: ignore[assignment]
    text = explain(later, offline, now)
    assert "Waiting to be sent again at " in text
    assert "after 2 attempts: 503 queue_unavailable: try again later." in text
    assert (
        "Last known network: offline: connection refused (as of 2030-01-01T10:00:00.000Z)" in text
    )


def test_counts_follow_changes_from_other_connections_without_a_count_per_request(
    ob: Outbox, db_path: Path, browser: httpx.Client
) -> None:
    first = browser.get("/api/summary").json()
    assert first["total"] == 0 and first["counted_through"] == first["last_event"] == 0
    with Outbox(db_path) as other:
        other.cancel(other.enqueue("invoice", {}, key="gone").id)
        other.enqueue("invoice", {}, key="kept")

    def caught_up() -> dict[str, Any] | None:
        summary: dict[str, Any] = browser.get("/api/summary").json()
        return summary if summary["counted_through"] == summary["last_event"] == 3 else None

    summary = wait_until(caught_up, what="the counts to include the three changes")
    assert summary["counts"]["pending"] == summary["counts"]["cancelled"] == 1
    assert summary["total"] == 2


def test_data_is_checked_offline_against_the_cached_template(
    db_path: Path, sandbox: Sandbox
) -> None:
    with connected(db_path, sandbox) as ob:
        ob.sync_templates()
        entry = ob.enqueue("inspection-report", {"inspector": "Ada", "site": "North"}, key="k")
        with ob.dashboard(port=0) as board, httpx.Client(base_url=origin(board)) as http:
            assert http.get(board.url).status_code == 303
            path = f"/api/entries/{entry.id}/check"
            headers = {"Origin": origin(board)}
            bad = http.post(path, json={"data": {"inspector": "Ada"}}, headers=headers).json()
            assert bad["passed"] is False and bad["outcome"] == "invalid"
            assert bad["field_errors"] == {"site": ["Required"]}
            good = http.post(
                path, json={"data": {"inspector": "Ada", "site": "South"}}, headers=headers
            )
            assert good.json()["passed"] is True
            assert http.post(path, json={"data": [1]}, headers=headers).status_code == 400
        assert ob.get(entry.id).data == {"inspector": "Ada", "site": "North"}, (
            "a check changes nothing"
        )


def test_a_rejected_entry_amended_on_the_page_is_rendered_with_the_new_data(
    db_path: Path, sandbox: Sandbox
) -> None:
    with connected(db_path, sandbox) as ob:
        ob.sync_templates()
        entry = ob.enqueue("inspection-report", {"inspector": "Ada"}, key="k", validation="off")
        ob.flush(timeout=30)
        assert ob.get(entry.id).state is State.REJECTED, "Craftkit refuses the missing site"
        with ob.dashboard(port=0) as board, httpx.Client(base_url=origin(board)) as http:
            assert http.get(board.url).status_code == 303
            path = f"/api/entries/{entry.id}/amend"
            headers = {"Origin": origin(board)}
            assert http.get(f"/api/entries/{entry.id}").json()["actions"]["amend"] is True

            still_bad = http.post(path, json={"data": {"inspector": "Bo"}}, headers=headers)
            assert still_bad.status_code == 400
            assert still_bad.json()["error"]["field_errors"] == {"site": ["Required"]}
            assert ob.get(entry.id).state is State.REJECTED, "a refused amend changes nothing"

            elsewhere = http.post(
                path,
                json={"data": {"inspector": "Ada", "site": "North"}},
                headers={"Origin": "http://evil.example"},
            )
            assert elsewhere.status_code == 403
            assert ob.get(entry.id).data == {"inspector": "Ada"}

            fixed = http.post(
                path, json={"data": {"inspector": "Ada", "site": "North"}}, headers=headers
            )
            assert fixed.status_code == 200, fixed.text
            detail = fixed.json()
            assert detail["entry"]["state"] == "pending"
            assert detail["entry"]["data"] == {"inspector": "Ada", "site": "North"}
            assert [event["to_state"] for event in detail["events"]][-1] == "pending"

        ob.flush(timeout=30)
        done = ob.get(entry.id)
        assert done.state is State.DONE and done.pdf_path is not None
        assert Path(done.pdf_path).read_bytes().startswith(b"%PDF")
        with (
            ob.dashboard(port=0) as board,
            httpx.Client(base_url=origin(board)) as http,
        ):
            assert http.get(board.url).status_code == 303
            late = http.post(
                f"/api/entries/{entry.id}/amend",
                json={"data": {"inspector": "Bo", "site": "South"}},
                headers={"Origin": origin(board)},
            )
            assert late.status_code == 409, "a done entry cannot be amended"
