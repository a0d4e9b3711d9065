"""Input limits at enqueue, and old journal entries that break them quarantined, never a crash.

The library, the CLI and the drop folder share one check (``RenderRequest``); data that an
older outbox accepted and that cannot be read back or sent is rejected at claim time with the
reason, while every other entry carries on.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import API_KEY_IN_TESTS, connected, run_cli, sandbox_env

from outbox import InvalidArgument, Outbox, RenderRequest, State
from outbox.downloads import safe_filename, save_pdf
from outbox.models import MAX_DATA_BYTES, MAX_DATA_DEPTH
from outbox.sandbox import Sandbox
from outbox.store import UNUSABLE_DATA
from outbox.watcher import DropFolder

INSPECTION = {"inspector": "Ada", "site": "North"}


def nested(depth: int) -> dict[str, Any]:
    """An object ``depth`` levels deep (the outer object is level 1)."""
    data: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        data = {"x": data}
    return data


def nested_text(depth: int) -> str:
    """The JSON text of :func:`nested`, built without recursion."""
    return '{"x":' * (depth - 1) + '{"leaf":1}' + "}" * (depth - 1)


# -- the one check ----------------------------------------------------------------------


def test_data_may_nest_exactly_the_documented_depth() -> None:
    assert RenderRequest("inspection-report", nested(MAX_DATA_DEPTH)).data_json
    with pytest.raises(InvalidArgument, match=f"nested more than {MAX_DATA_DEPTH} levels"):
        RenderRequest("inspection-report", nested(MAX_DATA_DEPTH + 1))
    # Arrays count as levels too.
    deep_list: Any = [1]
    for _ in range(MAX_DATA_DEPTH - 1):
        deep_list = [deep_list]
    with pytest.raises(InvalidArgument, match="nested more than"):
        RenderRequest("inspection-report", {"rows": deep_list})


def test_data_nested_far_beyond_the_recursion_limit_is_refused_not_crashed() -> None:
    data: dict[str, Any] = {}
    for _ in range(100_000):
        data = {"x": data}
    with pytest.raises(InvalidArgument, match="nested more than"):
        RenderRequest("inspection-report", data)


def test_data_that_holds_itself_is_refused_as_too_deep_and_braces_in_text_are_not() -> None:
    data: dict[str, Any] = {"n": 1}
    data["self"] = data
    with pytest.raises(InvalidArgument, match="nested more than"):
        RenderRequest("inspection-report", data)
    braces = {"note": "{[" * (MAX_DATA_DEPTH + 1)}
    assert RenderRequest("inspection-report", braces).data_json == json.dumps(
        braces, separators=(",", ":")
    )


def test_data_larger_than_the_documented_size_is_refused() -> None:
    text = "é" * (MAX_DATA_BYTES // 2)  # two bytes each: over the limit in bytes, not characters
    assert len(text) < MAX_DATA_BYTES
    with pytest.raises(InvalidArgument, match=r"at most 2,097,152 bytes \(2 MiB\)"):
        RenderRequest("inspection-report", {"notes": text})
    assert RenderRequest("inspection-report", {"notes": "x" * (MAX_DATA_BYTES - 20)}).data_json


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"a": {"b": [1, float("nan")]}}, "data.a.b.1 is nan; JSON numbers must be finite"),
        ({"amount": float("inf")}, "data.amount is inf; JSON numbers must be finite"),
        ({"amount": float("-inf")}, "data.amount is -inf"),
        ({"name": "Ada \ud800"}, "data.name holds half of a surrogate pair"),
        ({"rows": [{"\udfff": 1}]}, "a key in data.rows.0 holds half of a surrogate pair"),
    ],
)
def test_non_finite_numbers_and_lone_surrogates_are_refused_saying_where(
    data: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message.replace(".", r"\.")):
        RenderRequest("inspection-report", data)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (" inspection-42", "starts or ends with a space"),
        ("inspection-42 ", "starts or ends with a space"),
        ("k" * 201, "1-200 characters"),
        ("tab\there", "printable ASCII"),
        ("crlf\r\n", "printable ASCII"),
        ("café", "printable ASCII"),
    ],
)
def test_keys_that_cannot_be_sent_as_a_header_are_refused(key: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        RenderRequest("inspection-report", INSPECTION, key=key)
    assert RenderRequest("inspection-report", INSPECTION, key="a b~c").key == "a b~c"


def test_filename_length_is_counted_in_bytes() -> None:
    fits = "報" * 83 + "12.pdf"  # 249 + 6 = 255 bytes
    assert len(fits.encode()) == 255
    assert RenderRequest("inspection-report", INSPECTION, filename=fits).filename == fits
    too_long = "報" * 100 + ".pdf"  # 104 characters, 304 bytes
    with pytest.raises(InvalidArgument, match="304 bytes in UTF-8; file systems allow at most 255"):
        RenderRequest("inspection-report", INSPECTION, filename=too_long)
    with pytest.raises(InvalidArgument, match="surrogate"):
        RenderRequest("inspection-report", INSPECTION, filename="a\ud800.pdf")


def test_saved_names_fit_the_file_system_even_with_a_number_added(tmp_path: Path) -> None:
    longest = "報" * 83 + "12.pdf"  # 255 bytes: the longest name enqueue accepts
    assert safe_filename(longest, "entry") == longest
    pdf = b"%PDF-1.4\n%%EOF\n"
    saved = [
        save_pdf(
            [pdf + bytes([n])], folder=tmp_path, name=longest, entry_id=f"e{n}", expected_size=None
        )
        for n in range(3)
    ]
    names = [s.path.name for s in saved]
    assert names[0] == longest and len(set(names)) == 3
    assert names[1].endswith(" (2).pdf") and names[2].endswith(" (3).pdf")
    assert all(len(name.encode()) <= 255 for name in names)


# -- library, CLI and drop folder -------------------------------------------------------


def test_library_enqueue_and_enqueue_many_refuse_and_keep_nothing(ob: Outbox) -> None:
    with pytest.raises(InvalidArgument, match="nested more than 64"):
        ob.enqueue("inspection-report", nested(980), key="deep")
    with pytest.raises(InvalidArgument, match="JSON numbers must be finite"):
        ob.enqueue_many(
            [
                {"template": "inspection-report", "data": INSPECTION, "key": "fine"},
                {"template": "inspection-report", "data": {"x": float("nan")}, "key": "nan"},
            ]
        )
    assert ob.list() == []
    assert ob.enqueue("inspection-report", INSPECTION, key="fine").state is State.PENDING


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (nested_text(980), "nested more than 64 levels deep"),
        (nested_text(200_000), "nested more than 64 levels deep"),
        ('{"amount": NaN}', "NaN is not a JSON number"),  # as the drop folder words it
        ('{"n": ' + "9" * 5000 + "}", "is not usable JSON"),
        ('{"name": "\\ud800"}', "half of a surrogate pair"),
    ],
)
def test_cli_enqueue_refuses_poison_data_with_exit_65(
    tmp_path: Path, data: str, message: str
) -> None:
    source = tmp_path / "data.json"
    source.write_text(data)
    env = {"OUTBOX_DB": str(tmp_path / "j.db")}
    result = run_cli("enqueue", "inspection-report", "--data", f"@{source}", env=env)
    assert result.returncode == 65, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    if (tmp_path / "j.db").exists():  # nothing was queued, whether or not the journal exists
        listed = run_cli("list", "--json", env=env)
        assert listed.returncode == 0 and json.loads(listed.stdout) == []


def test_cli_filename_limit_is_in_bytes(tmp_path: Path) -> None:
    env = {"OUTBOX_DB": str(tmp_path / "j.db")}
    result = run_cli(
        "enqueue", "inspection-report", "--data", "{}", "--filename", "報" * 100 + ".pdf", env=env
    )
    assert result.returncode == 65
    assert "304 bytes in UTF-8; file systems allow at most 255" in result.stderr
    result = run_cli("enqueue", "inspection-report", "--data", "{}", "--key", "k ", env=env)
    assert result.returncode == 65 and "starts or ends with a space" in result.stderr


def test_drop_folder_rejects_poison_files_and_carries_on(ob: Outbox, tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    job = '{"template": "inspection-report", "data": %s}'
    (folder / "deep.json").write_text(job % nested_text(980))
    (folder / "big.json").write_text(job % json.dumps({"notes": "x" * MAX_DATA_BYTES}))
    (folder / "name.json").write_text(
        json.dumps({"template": "inspection-report", "data": {}, "filename": "報" * 90 + ".pdf"})
    )
    (folder / "good.json").write_text(job % json.dumps(INSPECTION))
    report = DropFolder(ob, folder, settle=0).scan()
    reasons = {outcome.file: outcome.reason for outcome in report.rejected}
    assert "nested more than 64 levels deep" in reasons["deep.json"]
    assert "at most 2,097,152 bytes" in reasons["big.json"]
    assert "274 bytes in UTF-8" in reasons["name.json"]
    assert [outcome.file for outcome in report.accepted] == ["good.json"]
    error = (folder / "rejected" / "deep.error.txt").read_text()
    assert "nested more than 64 levels deep" in error
    assert [entry.data for entry in ob.list()] == [INSPECTION]


# -- old journals -----------------------------------------------------------------------


def _plant(db: Path, key: str, data_text: str) -> None:
    """Store ``data_text`` as an entry's data, as an outbox from before the limits could."""
    with Outbox(db) as ob:
        entry = ob.enqueue("inspection-report", INSPECTION, key=key)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE entries SET data = ? WHERE id = ?", (data_text, entry.id))
    conn.close()


@pytest.mark.parametrize("depth", [100, 980, 100_000])
def test_poison_in_an_old_journal_is_quarantined_and_the_queue_carries_on(
    tmp_path: Path, sandbox: Sandbox, depth: int
) -> None:
    db = tmp_path / "old.db"
    _plant(db, "deep", nested_text(depth))
    with Outbox(db) as ob:
        for n in range(3):
            ob.enqueue("inspection-report", INSPECTION, key=f"good-{n}")
        deep = ob.journal.find_by_key("deep")
        assert deep is not None and deep.data == {}
        assert deep.data_problem == "data is nested more than 64 levels deep"
    env = sandbox_env(sandbox, db)
    for command in (["list"], ["list", "--json"], ["show", deep.id], ["show", deep.id, "--json"]):
        shown = run_cli(*command, env=env)
        assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
    data_line = [
        line
        for line in run_cli("show", deep.id, env=env).stdout.splitlines()
        if line[:5] == "data "
    ]
    assert data_line[0].split(None, 1)[1] == (
        "(cannot be read back: data is nested more than 64 levels deep)"
    )
    with connected(db, sandbox) as ob:
        report = ob.flush(timeout=30)
        assert report.exit_code == 65, report.problems
        assert ob.counts()[State.DONE] == 3
        rejected = ob.get(deep.id)
        assert rejected.state is State.REJECTED and rejected.error_code == UNUSABLE_DATA
        assert rejected.error == (
            "the stored data cannot be sent: data is nested more than 64 levels deep; "
            "nothing was sent to Craftkit"
        )
        assert [e.to_state for e in ob.history(deep.id)] == [State.PENDING, State.REJECTED]
    assert sandbox.stats()["renders_created"] == 3
    shown = json.loads(run_cli("show", deep.id, "--json", env=env).stdout)
    assert shown["state"] == "rejected" and shown["data"] is None
    assert shown["data_problem"] == "data is nested more than 64 levels deep"


def test_a_cli_flush_over_an_old_poisoned_journal_exits_65_not_1(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    db = tmp_path / "old.db"
    _plant(db, "deep", nested_text(980))
    _plant(db, "nan", '{"amount": NaN}')
    with Outbox(db) as ob:
        ob.enqueue("inspection-report", INSPECTION, key="good")
    result = run_cli("flush", "--timeout", "30", env=sandbox_env(sandbox, db))
    assert result.returncode == 65, result.stderr
    assert "Traceback" not in result.stderr
    assert "nested more than 64 levels deep" in result.stderr
    assert "data.amount is nan; JSON numbers must be finite" in result.stderr
    with Outbox(db, api_key=API_KEY_IN_TESTS) as ob:
        assert ob.counts()[State.DONE] == 1 and ob.counts()[State.REJECTED] == 2


# -- generated poison -------------------------------------------------------------------


class Deep:
    """A value nested ``depth`` levels, written out as JSON text without recursion."""

    def __init__(self, depth: int) -> None:
        self.depth = depth

    def __repr__(self) -> str:
        return f"Deep({self.depth})"


class Huge:
    """A string of ``size`` characters, made only when used (so examples print short)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __repr__(self) -> str:
        return f"Huge({self.size})"


surrogates = st.text(
    alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2
)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    surrogates,
    st.integers(0, 3 * 1024 * 1024).map(Huge),  # up to 1.5 times the size limit
    st.integers(1, 3000).map(Deep),
)
poison = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=6) | surrogates, children, max_size=3)
    ),
    max_leaves=6,
)


def as_python(value: Any) -> Any:
    if isinstance(value, Deep):
        return nested(value.depth)
    if isinstance(value, Huge):
        return "x" * value.size
    if isinstance(value, list):
        return [as_python(item) for item in value]
    if isinstance(value, dict):
        return {name: as_python(item) for name, item in value.items()}
    return value


def as_text(value: Any) -> str:
    """JSON text as a careless writer would produce it (NaN, Infinity, \\ud800 and all)."""
    if isinstance(value, Deep):
        return nested_text(value.depth)
    if isinstance(value, Huge):
        return '"' + "x" * value.size + '"'
    if isinstance(value, list):
        return "[" + ",".join(as_text(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{as_text(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


#: What a refusal of poison data may say; anything else would be a new, unexplained error.
SPECIFIC = (
    "nested more than 64 levels deep",
    "JSON numbers must be finite",
    "half of a surrogate pair",
    "at most 2,097,152 bytes",
    "is not valid JSON",
)


def test_generated_poison_gets_an_entry_or_a_specific_error_and_the_queue_works_on(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    db = tmp_path / "j.db"
    accepted: list[str] = []
    with Outbox(db) as ob:
        counter = iter(range(10**6))

        @settings(max_examples=60, deadline=None)
        @given(value=poison)
        def attempt(value: Any) -> None:
            n = next(counter)
            data = {"inspector": "Ada", "site": "North", "v": as_python(value)}
            for how in ("enqueue", "enqueue_many"):
                try:
                    if how == "enqueue":
                        entry = ob.enqueue("inspection-report", data, key=f"one-{n}")
                    else:
                        batch = [
                            {"template": "inspection-report", "data": data, "key": f"many-{n}"}
                        ]
                        entry = ob.enqueue_many(batch)[0]
                except InvalidArgument as exc:
                    assert any(words in str(exc) for words in SPECIFIC), str(exc)
                else:
                    accepted.append(entry.id)
            folder = tmp_path / f"drop-{n}"
            folder.mkdir()
            (folder / "job.json").write_text(
                f'{{"template": "inspection-report", "key": "drop-{n}", "data": '
                f'{{"inspector": "Ada", "site": "North", "v": {as_text(value)}}}}}',
                encoding="utf-8",
            )
            report = DropFolder(ob, folder, settle=0).scan()
            if report.accepted:
                accepted.append(report.accepted[0].entry.id)
            else:
                reason = report.rejected[0].reason
                assert any(words in reason for words in SPECIFIC), reason
            # The queue keeps working: a plain entry goes in, and everything reads back.
            ob.enqueue("inspection-report", INSPECTION, key=f"plain-{n}")
            assert len(ob.list()) >= n + 1

        attempt()
        assert accepted, "some generated values are fine and must have been queued"
    with connected(db, sandbox) as ob:
        report = ob.flush(timeout=120)
        assert report.exit_code in (0, 65), report.problems
        assert not report.unexpected
        for entry_id in accepted:
            assert ob.get(entry_id).state is State.DONE, ob.get(entry_id)
