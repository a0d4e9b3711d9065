"""Names that are valid on Windows, macOS and Linux, end to end against the sandbox: PDFs in the
downloads folder, job files moved into accepted/, and results files.

Requests keep the file name they were given (enqueue refuses nothing valid for Craftkit, and
Craftkit gets the name as given); the name is mapped where a file is written, so no job is lost
for its name. ``outbox show`` and the entry's history say which name was used.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sandbox_support import client
from support import INSPECTION, connected, run_cli_process, sandbox_env
from test_platform import problem_somewhere

from outbox import DropFolder, Outbox, State
from outbox.jobfiles import side_name
from outbox.platform import name_key
from outbox.resultfiles import ResultFiles
from outbox.sandbox import Sandbox

#: Names that are refused or mean something else on some system, and one pair that is one
#: file on Windows and macOS.
HARD_NAMES = ["CON.pdf", "nul.PDF", "a:b.pdf", "Report.pdf", "report.pdf"]


def _assert_distinct_and_valid_everywhere(names: list[str]) -> None:
    assert [problem_somewhere(name) for name in names] == [None] * len(names), names
    assert len({name_key(name) for name in names}) == len(names), names


@pytest.mark.e2e
def test_hard_pdf_names_land_as_distinct_files_valid_everywhere(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    db = tmp_path / "j.db"
    env = sandbox_env(sandbox, db)
    ids = {}
    for index, filename in enumerate(HARD_NAMES):
        data = json.dumps({**INSPECTION, "site": f"S{index}"})
        result = run_cli_process(
            "enqueue", "inspection-report", "--data", data, "--filename", filename, env=env
        )
        assert result.returncode == 0, result.stderr
        ids[filename] = result.stdout.strip()
    flushed = run_cli_process("flush", "--timeout", "60", env=env)
    assert flushed.returncode == 0, flushed.stderr

    downloads = tmp_path / "renders"
    landed = sorted(path.name for path in downloads.iterdir())
    assert len(landed) == len(HARD_NAMES)
    _assert_distinct_and_valid_everywhere(landed)

    used = {}
    for filename, entry_id in ids.items():
        shown = run_cli_process("show", entry_id, "--json", env=env)
        assert shown.returncode == 0, shown.stderr
        entry = json.loads(shown.stdout)
        assert entry["state"] == "done"
        path = Path(entry["pdf_path"])
        assert path.parent == downloads and path.read_bytes().startswith(b"%PDF-")
        used[filename] = path.name
        human = run_cli_process("show", entry_id, env=env)
        assert str(path) in human.stdout  # the pdf_path line
        assert f"saved {path.name}" in human.stdout  # and the history says which name
        if path.name != filename:
            assert f"(the request asked for {filename!r})" in human.stdout
    pair = {used.pop("Report.pdf"), used.pop("report.pdf")}
    assert used == {"CON.pdf": "CON_.pdf", "nul.PDF": "nul_.pdf", "a:b.pdf": "a_b.pdf"}
    # One file on Windows and macOS: whichever lands second is numbered.
    assert pair in ({"Report.pdf", "report (2).pdf"}, {"report.pdf", "Report (2).pdf"})
    # The requests keep their names, and Craftkit was sent each name as given.
    with Outbox(db) as ob, client(sandbox) as http:
        for filename, entry_id in ids.items():
            entry = ob.get(entry_id)
            assert entry.filename == filename
            answer = http.get(f"/v1/embed/renders/{entry.render_id}/download")
            assert f'filename="{filename}"' in answer.headers["content-disposition"]


def test_job_files_with_hard_names_move_and_answer_under_names_valid_everywhere(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    jobs = ["CON.json", "aux.JSON", "a:b.json", "a_b.json", "Job.json", "job.json", "ok.json"]
    for index, name in enumerate(jobs):
        job = {"template": "inspection-report", "data": {**INSPECTION, "site": f"S{index}"}}
        (folder / name).write_text(json.dumps(job), encoding="utf-8")
    db = tmp_path / "j.db"
    with Outbox(db) as ob:
        report = DropFolder(ob, folder).scan()
        assert sorted(a.file for a in report.accepted) == sorted(jobs)
    accepted = sorted(path.name for path in (folder / "accepted").iterdir())
    _assert_distinct_and_valid_everywhere(accepted)
    assert {"CON_.json", "aux_.JSON", "a_b.json", "ok.json"} <= set(accepted)
    assert len(accepted) == len(jobs)

    with connected(db, sandbox) as ob:
        assert ob.flush(timeout=30).exit_code == 0
        DropFolder(ob, folder).write_results()
        assert all(entry.state is State.DONE for entry in ob.list())
    results = folder / "results"
    written = sorted(path.name for path in results.iterdir() if not path.name.startswith("."))
    _assert_distinct_and_valid_everywhere(written)
    answers = {
        json.loads((results / name).read_text(encoding="utf-8"))["file"]: name for name in written
    }
    assert sorted(answers) == sorted(jobs)  # every job file has its own result
    assert answers["CON.json"] == "CON_.result.json"
    assert answers["ok.json"] == "ok.result.json"
    # a:b.json and a_b.json both map to a_b: the first one written keeps the plain name.
    assert sorted([answers["a:b.json"], answers["a_b.json"]]) == [
        "a_b.2.result.json",
        "a_b.result.json",
    ]
    # Job.json and job.json: one file on Windows and macOS, so one of them is numbered.
    assert {answers["Job.json"], answers["job.json"]} in (
        {"Job.result.json", "job.2.result.json"},
        {"job.result.json", "Job.2.result.json"},
    )


def test_rejected_job_files_with_hard_names_keep_their_explanations_apart(
    ob: Outbox, tmp_path: Path
) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    jobs = ["CON.json", "nul.JSON", "a:b.json", "Bad.json", "bad.json", "lpt1 .json"]
    for name in jobs:
        (folder / name).write_text(json.dumps({"template": 7, "from": name}), "utf-8")
    report = DropFolder(ob, folder).scan()
    assert sorted(r.file for r in report.rejected) == sorted(jobs)
    rejected = folder / "rejected"
    moved = sorted(path.name for path in rejected.iterdir() if path.suffix.lower() == ".json")
    explanations = sorted(path.name for path in rejected.glob("*.error.txt"))
    _assert_distinct_and_valid_everywhere(moved + explanations)
    assert len(moved) == len(explanations) == len(jobs)
    assert {"CON_.json", "nul_.JSON", "a_b.json", "lpt1_ .json"} <= set(moved)
    for outcome in report.rejected:  # each explanation sits next to its file and names it
        assert outcome.moved_to.parent == rejected
        explanation = outcome.moved_to.with_name(side_name(outcome.moved_to.name, ".error.txt"))
        assert explanation.read_text(encoding="utf-8").startswith(f"{outcome.file}: ")
        assert json.loads(outcome.moved_to.read_text(encoding="utf-8"))["from"] == outcome.file
    assert ob.list() == []


def test_a_result_is_rewritten_in_place_not_under_a_new_name(ob: Outbox, tmp_path: Path) -> None:
    """Each job file's result keeps its one name across rewrites (a retry rewrites it), even
    when two job files map to the same result name."""
    entry = ob.enqueue("inspection-report", INSPECTION)
    results = ResultFiles(ob, tmp_path, on_written=lambda written: None)
    first = results.write("a:b.json", entry).path
    second = results.write("a_b.json", entry).path
    assert (first.name, second.name) == ("a_b.result.json", "a_b.2.result.json")
    for _ in range(3):
        assert results.write("a_b.json", entry).path == second
        assert results.write("a:b.json", entry).path == first
    (tmp_path / "results" / "Ok.result.json").write_text("not outbox's")
    assert results.write("ok.json", entry).path.name == "ok.2.result.json"
    assert (tmp_path / "results" / "Ok.result.json").read_text() == "not outbox's"
    names = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert names == ["Ok.result.json", "a_b.2.result.json", "a_b.result.json", "ok.2.result.json"]
