"""Real, valid PDF files for sandbox renders, streamed in chunks.

A render's PDF shows the template, the render id and the data as lines of Helvetica text,
spread over as many A4 pages as needed (up to :data:`MAX_LINES` lines). When a size is asked
for, a padding stream object brings the file to that size; the padding is produced chunk by
chunk from one shared block, so even a 100 MB PDF never sits in memory. The cross-reference
table holds the exact byte offset of every object, computed before anything is sent, so the
``Content-Length`` is known up front.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

#: Largest chunk :meth:`PdfDocument.chunks` yields.
CHUNK_SIZE = 64 * 1024

#: Lines shown at most; the rest is summarised in one line.
MAX_LINES = 2000

#: Characters per line before it is cut.
MAX_LINE_CHARS = 95

_PAGE_WIDTH, _PAGE_HEIGHT = 595, 842
_LINES_PER_PAGE = 56
_LEADING = 13
_PADDING_BLOCK = (b"outbox sandbox padding " * 2850)[:CHUNK_SIZE]


def escape_text(text: str) -> bytes:
    """A PDF literal string body for Helvetica (WinAnsi): escape ``\\ ( )``, drop the rest.

    Printable ASCII passes through, Latin-1 letters become octal escapes, anything else
    (control characters, characters outside Latin-1) becomes ``?``.
    """
    out = bytearray()
    for char in text:
        code = ord(char)
        if char in "\\()":
            out += b"\\" + char.encode("ascii")
        elif 0x20 <= code <= 0x7E:
            out.append(code)
        elif char == "\t":
            out.append(0x20)
        elif 0xA0 <= code <= 0xFF:
            out += f"\\{code:03o}".encode("ascii")
        else:
            out.append(ord("?"))
    return bytes(out)


def data_lines(data: Any, prefix: str = "") -> Iterator[str]:
    """Flatten render data into ``path: value`` lines (``items[0].qty: 2``)."""
    if isinstance(data, dict):
        if not data and prefix:
            yield f"{prefix}: {{}}"
        for key, value in data.items():
            yield from data_lines(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(data, list):
        if not data:
            yield f"{prefix}: []"
        for index, value in enumerate(data):
            yield from data_lines(value, f"{prefix}[{index}]")
    else:
        shown = data if isinstance(data, str) else json.dumps(data)
        yield f"{prefix}: {shown}"


class PdfDocument:
    """A PDF of known size whose bytes are produced on demand by :meth:`chunks`."""

    def __init__(self, title: str, lines: list[str], pad_to: int | None = None) -> None:
        self.title = title
        self._lines = _fit_lines(lines)
        self._head, self._offsets = self._build_head()
        self._padding = self._padding_size(pad_to)
        self._padding_header = b""
        if self._padding:
            self._padding_header = (
                f"{self._padding_id} 0 obj\n<< /Length {self._padding} >>\nstream\n".encode()
            )
        self._tail = self._build_tail()
        self.size = (
            len(self._head) + len(self._padding_header) + self._padding_total() + len(self._tail)
        )

    # --- layout -------------------------------------------------------------------------

    @property
    def _pages(self) -> list[list[str]]:
        lines = self._lines
        return [lines[i : i + _LINES_PER_PAGE] for i in range(0, len(lines), _LINES_PER_PAGE)]

    @property
    def _padding_id(self) -> int:
        return 4 + 2 * len(self._pages) + 1

    def _build_head(self) -> tuple[bytes, list[int]]:
        """Header and every object except the padding; returns bytes and object offsets."""
        pages = self._pages
        page_ids = [5 + 2 * i for i in range(len(pages))]
        objects: list[bytes] = [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids ["
            + b" ".join(f"{p} 0 R".encode() for p in page_ids)
            + f"] /Count {len(pages)} >>".encode(),
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
            b"<< /Title (" + escape_text(self.title) + b") /Producer (outbox sandbox) >>",
        ]
        for number, page_lines in enumerate(pages):
            content = self._content(page_lines, number + 1, len(pages))
            objects.append(
                f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {_PAGE_WIDTH} {_PAGE_HEIGHT}] "
                f"/Resources << /Font << /F1 3 0 R >> >> /Contents {page_ids[number] + 1} 0 R >>".encode()
            )
            objects.append(
                f"<< /Length {len(content)} >>\nstream\n".encode() + content + b"\nendstream"
            )
        out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
        offsets: list[int] = []
        for number, body in enumerate(objects, start=1):
            offsets.append(len(out))
            out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
        return bytes(out), offsets

    def _content(self, lines: list[str], page: int, pages: int) -> bytes:
        """The drawing operators for one page of text."""
        ops = bytearray(b"BT\n/F1 10 Tf\n")
        ops += f"{_LEADING} TL\n50 {_PAGE_HEIGHT - 60} Td\n".encode()
        for line in lines:
            ops += b"(" + escape_text(line) + b") Tj T*\n"
        ops += b"ET\n"
        footer = f"Craftkit sandbox test render - page {page} of {pages}"
        ops += b"BT\n0.5 g\n/F1 8 Tf\n50 30 Td\n(" + escape_text(footer) + b") Tj\nET"
        return bytes(ops)

    def _padding_size(self, pad_to: int | None) -> int:
        """Bytes of padding stream content so the whole file is ``pad_to`` bytes (or close)."""
        if not pad_to:
            return 0
        size = pad_to - self._total_with(0)
        for _ in range(4):  # digits of the length and of startxref shift the total a little
            if size <= 0:
                return 0
            size += pad_to - self._total_with(size)
        return size if self._total_with(size) <= pad_to + 16 else 0

    def _total_with(self, padding: int) -> int:
        """The file size if the padding stream held ``padding`` bytes."""
        if padding <= 0:
            return len(self._head) + len(self._tail_for(len(self._head), len(self._offsets) + 1))
        header = f"{self._padding_id} 0 obj\n<< /Length {padding} >>\nstream\n"
        body_end = len(self._head) + len(header) + padding + len(b"\nendstream\nendobj\n")
        return body_end + len(self._tail_for(body_end, len(self._offsets) + 2))

    def _padding_total(self) -> int:
        """Bytes of the padding object after its header (content and trailer)."""
        return self._padding + len(b"\nendstream\nendobj\n") if self._padding else 0

    def _build_tail(self) -> bytes:
        offsets = list(self._offsets)
        if self._padding:
            offsets.append(len(self._head))
        xref_at = len(self._head) + len(self._padding_header) + self._padding_total()
        return self._tail_for(xref_at, len(offsets) + 1, offsets)

    def _tail_for(self, xref_at: int, count: int, offsets: list[int] | None = None) -> bytes:
        entries = offsets if offsets is not None else [0] * (count - 1)
        out = bytearray(f"xref\n0 {count}\n".encode())
        out += b"0000000000 65535 f \n"
        for offset in entries:
            out += f"{offset:010d} 00000 n \n".encode()
        out += (
            f"trailer\n<< /Size {count} /Root 1 0 R /Info 4 0 R >>\nstartxref\n{xref_at}\n%%EOF\n"
        ).encode()
        return bytes(out)

    # --- output -------------------------------------------------------------------------

    def chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """The file's bytes in pieces of at most ``chunk_size`` (<= 64 KiB)."""
        chunk_size = min(chunk_size, CHUNK_SIZE)
        yield from _split(self._head, chunk_size)
        if self._padding:
            yield self._padding_header
            left = self._padding
            while left > 0:
                take = min(left, chunk_size)
                yield _PADDING_BLOCK[:take]
                left -= take
            yield b"\nendstream\nendobj\n"
        yield from _split(self._tail, chunk_size)

    def to_bytes(self) -> bytes:
        """The whole file (for small documents and tests)."""
        return b"".join(self.chunks())


def render_pdf(
    *,
    template: str,
    version: int | None,
    render_id: str,
    created_at: str,
    data: Any,
    pad_to: int | None = None,
) -> PdfDocument:
    """The PDF of one render: a heading, the render's facts, then its data."""
    lines = [
        f"Template: {template}" + (f" (version {version})" if version else ""),
        f"Render: {render_id}",
        f"Created: {created_at}",
        "",
        "Data:",
    ]
    lines.extend(data_lines(data) if data else ["(no data)"])
    return PdfDocument(f"{template} {render_id}", lines, pad_to)


def _fit_lines(lines: list[str]) -> list[str]:
    """Cut long lines and cap the number of lines."""
    cut = [
        line if len(line) <= MAX_LINE_CHARS else line[: MAX_LINE_CHARS - 3] + "..."
        for line in lines[:MAX_LINES]
    ]
    if len(lines) > MAX_LINES:
        cut.append(f"... {len(lines) - MAX_LINES} more line(s) not shown")
    return cut


def _split(blob: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(blob), size):
        yield blob[start : start + size]
