"""The public API is what the README's library section documents: no more, no less."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import outbox
from outbox import Outbox

README = Path(__file__).resolve().parent.parent / "README.md"


def _library_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Library\n")
    return text[start : text.index("\n## ", start + 1)]


def _documented_names() -> set[str]:
    section = _library_section()
    paragraph = section[section.index("Public names") :].split("\n\n")[0]
    listed = paragraph.split(":", 1)[1]  # after "Public names, all importable from `outbox`:"
    return set(re.findall(r"`(\w+)`", listed))


def test_all_lists_exactly_the_names_the_readme_documents() -> None:
    assert len(outbox.__all__) == len(set(outbox.__all__)), "a name is listed twice"
    assert set(outbox.__all__) == _documented_names()


def test_every_public_name_is_importable() -> None:
    for name in outbox.__all__:
        assert getattr(outbox, name) is not None, name


def test_every_public_facade_method_is_documented_in_the_library_section() -> None:
    section = _library_section()
    public = {name for name, _ in inspect.getmembers(Outbox) if not name.startswith("_")}
    undocumented = sorted(name for name in public if f"`{name}`" not in section)
    assert not undocumented, (
        f"Outbox methods missing from the README's library section: {undocumented}"
    )
    for name in public:
        assert inspect.getdoc(getattr(Outbox, name)), f"Outbox.{name} has no docstring"
