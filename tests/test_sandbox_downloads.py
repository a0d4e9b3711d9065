"""PDF downloads: the public URL, the private stream, the older download route, real PDFs,
padding to a size, and streaming without holding the file in memory."""

from __future__ import annotations

import threading
import tracemalloc
import uuid

import httpx
import pytest
from sandbox_support import INVOICE, client, error_code, pdf_text, render, wait_status
from support import FakeClock, wait_until

from outbox.sandbox import Sandbox
from outbox.sandbox.pdf import PdfDocument, escape_text, render_pdf


def test_public_download_url_serves_a_real_pdf(sb: Sandbox) -> None:
    with client(sb) as http:
        created = render(http, "invoice", INVOICE, key="inv-1").json()
        done = wait_status(http, created["id"], "succeeded")
    url = done["downloadUrl"]
    assert url == f"{sb.base_url}/public/renders/{created['id']}.pdf"
    response = httpx.get(url)  # public: no key
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert int(response.headers["content-length"]) == len(response.content)
    text = pdf_text(response.content)
    assert "invoice" in text
    assert created["id"] in text
    assert "customer.name: Grace Hopper" in text
    assert "items[0].description: Survey" in text
    assert "amount: 120.5" in text


def test_public_url_is_404_until_succeeded(timed: Sandbox, clock: FakeClock) -> None:
    with client(timed) as http:
        created = render(http).json()
        url = f"{timed.base_url}/public/renders/{created['id']}.pdf"
        assert httpx.get(url).status_code == 404
        failed = render(http, "always-fails", {}).json()
        clock.advance(11)
        assert httpx.get(url).status_code == 200
        assert httpx.get(f"{timed.base_url}/public/renders/{failed['id']}.pdf").status_code == 404
        assert httpx.get(f"{timed.base_url}/public/renders/{uuid.uuid4()}.pdf").status_code == 404


def test_no_public_bucket_means_null_download_url(clock: FakeClock) -> None:
    with (
        Sandbox(public_bucket=False, render_seconds=1, clock=clock) as sandbox,
        client(sandbox) as http,
    ):
        created = render(http, key="private").json()
        clock.advance(2)
        done = http.get(created["pollUrl"]).json()
        replay = render(http, key="private").json()
        assert done["status"] == "succeeded"
        assert done["downloadUrl"] is None and replay["downloadUrl"] is None
        public = httpx.get(f"{sandbox.base_url}/public/renders/{created['id']}.pdf")
        assert public.status_code == 404
        private = http.get(f"/v1/embed/renders/{created['id']}/download")
        assert private.status_code == 200
        assert "Ada Lovelace" in pdf_text(private.content)


def test_private_stream_headers(sb: Sandbox) -> None:
    with client(sb) as http:
        created = render(http, options={"filename": "north-42.pdf"}).json()
        wait_status(http, created["id"], "succeeded")
        response = http.get(f"/v1/embed/renders/{created['id']}/download")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"].startswith("inline")
    assert "north-42.pdf" in response.headers["content-disposition"]
    assert response.headers["cache-control"] == "private, max-age=3600"
    assert int(response.headers["content-length"]) == len(response.content)
    assert "Template: inspection-report (version 1)" in pdf_text(response.content)


def test_private_stream_is_404_with_no_code_until_ready(timed: Sandbox, clock: FakeClock) -> None:
    with client(timed) as http, client(timed, timed.other_project_key) as other:
        created = render(http).json()
        path = f"/v1/embed/renders/{created['id']}/download"
        for response in (http.get(path), http.get(f"/v1/embed/renders/{uuid.uuid4()}/download")):
            assert response.status_code == 404
            assert "code" not in response.json()["error"]
        clock.advance(20)
        assert http.get(path).status_code == 200
        assert other.get(path).status_code == 404


def test_private_stream_bad_key_is_invalid_credentials(sb: Sandbox) -> None:
    with client(sb) as http:
        created = render(http).json()
        wait_status(http, created["id"], "succeeded")
    path = f"{sb.base_url}/v1/embed/renders/{created['id']}/download"
    for headers in ({}, {"Authorization": "Bearer ck_test_nope"}):
        response = httpx.get(path, headers=headers)
        assert response.status_code == 401
        assert error_code(response) == "invalid_credentials"
    sb.revoke_key(sb.api_key)
    response = httpx.get(path, headers={"Authorization": f"Bearer {sb.api_key}"})
    assert response.status_code == 401 and error_code(response) == "invalid_credentials"


def test_older_download_route(timed: Sandbox, clock: FakeClock) -> None:
    with client(timed) as http:
        created = render(http).json()
        path = f"/v1/renders/{created['id']}/download"
        early = http.get(path)
        assert early.status_code == 409 and error_code(early) == "not_ready"
        clock.advance(11)
        response = http.get(path)
        assert response.status_code == 200
        assert response.headers["content-disposition"] == (
            f'attachment; filename="{created["id"]}.pdf"'
        )
        assert int(response.headers["content-length"]) == len(response.content)
        assert "North Pier" in pdf_text(response.content)
        missing = http.get(f"/v1/renders/{uuid.uuid4()}/download")
        assert missing.status_code == 404 and error_code(missing) == "not_found"
    unauthorized = httpx.get(f"{timed.base_url}{path}")
    assert unauthorized.status_code == 401 and error_code(unauthorized) == "unauthorized"


def test_head_request_gives_headers_only(sb: Sandbox) -> None:
    with client(sb) as http:
        created = render(http).json()
        done = wait_status(http, created["id"], "succeeded")
        head = http.head(done["downloadUrl"])
        get = http.get(done["downloadUrl"])
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]


def test_pdf_size_pads_the_file() -> None:
    with Sandbox(render_seconds=0.01, pdf_size=2_000_000) as sandbox, client(sandbox) as http:
        created = render(http).json()
        done = wait_status(http, created["id"], "succeeded")
        response = http.get(done["downloadUrl"])
    assert len(response.content) == 2_000_000
    assert "Ada Lovelace" in pdf_text(response.content)


def test_large_download_is_streamed_not_held_in_memory() -> None:
    size = 40 * 1024 * 1024
    with Sandbox(render_seconds=0.0, pdf_size=size) as sandbox, client(sandbox) as http:
        created = render(http).json()
        url = wait_status(http, created["id"], "succeeded")["downloadUrl"]
        tracemalloc.start()
        try:
            received = 0
            with http.stream("GET", url) as response:
                assert int(response.headers["content-length"]) == size
                for chunk in response.iter_raw(64 * 1024):
                    received += len(chunk)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert received == size
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes while streaming {size}"


def test_pdf_escapes_and_paginates() -> None:
    data = {"note": "brackets (a) \\ back", "name": "Zoë ☃", "rows": [{"i": n} for n in range(300)]}
    document = render_pdf(template="t", version=2, render_id="r-1", created_at="now", data=data)
    blob = document.to_bytes()
    assert len(blob) == document.size
    text = pdf_text(blob)
    assert "note: brackets (a) \\ back" in text
    assert "name: Zoë ?" in text
    assert "rows[299].i: 299" in text
    assert text.count("Craftkit sandbox test render") >= 5
    assert escape_text("(x)\\") == b"\\(x\\)\\\\"


def test_pdf_caps_the_number_of_lines() -> None:
    document = PdfDocument("big", [f"line {n}" for n in range(5000)])
    text = pdf_text(document.to_bytes())
    assert "line 1999" in text and "line 2000" not in text
    assert "3000 more line(s) not shown" in text


@pytest.mark.parametrize("size", [None, 10_000, 65_536 * 3 + 17, 1_000_001])
def test_pdf_chunks_are_small_and_add_up(size: int | None) -> None:
    document = render_pdf(
        template="t", version=1, render_id="r", created_at="c", data={"a": 1}, pad_to=size
    )
    chunks = list(document.chunks())
    assert all(len(c) <= 64 * 1024 for c in chunks)
    assert sum(len(c) for c in chunks) == document.size
    if size:
        assert document.size == size
    pdf_text(b"".join(chunks))


def test_downloads_during_stop_do_not_hang() -> None:
    sandbox = Sandbox(render_seconds=0.0, pdf_size=30 * 1024 * 1024).start()
    try:
        with client(sandbox) as http:
            url = wait_status(http, render(http).json()["id"], "succeeded")["downloadUrl"]
        reading, stopped = threading.Event(), threading.Event()
        errors: list[BaseException] = []

        def stalled_reader() -> None:
            try:
                with httpx.stream("GET", url, timeout=30) as response:
                    for _ in response.iter_raw(64 * 1024):
                        reading.set()
                        stopped.wait(30)  # reads nothing more until the sandbox has stopped
            except httpx.HTTPError as exc:
                errors.append(exc)

        reader = threading.Thread(target=stalled_reader)
        reader.start()
        wait_until(reading.is_set, what="the download to start")
        stopper = threading.Thread(target=sandbox.stop)
        stopper.start()
        stopper.join(30)  # a stop that waited for this download would never return
        assert not stopper.is_alive()
        stopped.set()
        reader.join(30)
        assert not reader.is_alive()
        assert errors, "the download was cut, not completed"
    finally:
        sandbox.close()


@pytest.mark.parametrize("size", [None, 50_000])
def test_pdf_xref_offsets_point_at_their_objects(size: int | None) -> None:
    blob = render_pdf(
        template="t",
        version=1,
        render_id="r",
        created_at="c",
        data={"rows": [{"n": n} for n in range(120)]},
        pad_to=size,
    ).to_bytes()
    startxref = int(blob.rsplit(b"startxref\n", 1)[1].split(b"\n")[0])
    assert blob[startxref:].startswith(b"xref\n0 ")
    lines = blob[startxref:].split(b"\n")
    count = int(lines[1].split()[1])
    entries = lines[3 : 3 + count - 1]
    assert len(entries) == count - 1
    for number, entry in enumerate(entries, start=1):
        offset = int(entry[:10])
        assert blob[offset:].startswith(f"{number} 0 obj\n".encode()), number
    assert blob.startswith(b"%PDF-1.4\n") and blob.endswith(b"%%EOF\n")
