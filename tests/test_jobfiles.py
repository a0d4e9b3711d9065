"""Job-file rules, pure: parsing, the job a document asks for, derived keys, and file names.

No files and no journal: these properties are checked over generated input. The drop folder
that applies them to real files is tested in test_watcher.py.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outbox.errors import InvalidArgument
from outbox.jobfiles import (
    MAX_NAME_BYTES,
    derive_key,
    is_job_name,
    job_from_document,
    name_problem,
    numbered,
    parse,
    side_name,
)
from outbox.platform import portable_name

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
data_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)
jobs = st.fixed_dictionaries(
    {"template": st.text(max_size=20), "data": data_objects},
    optional={
        "key": st.none() | st.text(max_size=30),
        "filename": st.none() | st.text(max_size=20),
        "version": st.none() | st.integers(),
    },
)
#: File names as a file system hands them out: no slash, no NUL, not empty.
file_names = st.text(
    st.characters(blacklist_characters="/\x00", blacklist_categories=["Cs"]),
    min_size=1,
    max_size=60,
)


@given(st.binary(max_size=300))
def test_any_bytes_parse_to_a_document_or_a_problem(content: bytes) -> None:
    problem, document = parse(content)
    if problem is None:
        json.dumps(document, allow_nan=False)  # strict JSON: no NaN or Infinity slipped in
    else:
        assert document is None and problem.startswith("the file ")


@given(jobs, st.sampled_from([None, 0, 2]), st.booleans(), st.booleans())
def test_a_job_reads_back_the_same_however_it_is_written(
    job: dict[str, Any], indent: int | None, sort_keys: bool, bom: bool
) -> None:
    text = json.dumps(job, indent=indent, sort_keys=sort_keys, ensure_ascii=bom)
    content = (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")
    problem, document = parse(content)
    assert problem is None
    read = job_from_document(document)
    assert (read.template, read.data) == (job["template"], job["data"])
    assert (read.filename, read.version) == (job.get("filename"), job.get("version"))
    given_key = job.get("key")
    expected_key = (
        given_key
        if given_key is not None
        else derive_key(job["template"], job["data"], job.get("filename"), job.get("version"))
    )
    assert read.key == expected_key


@given(jobs, jobs)
def test_derived_keys_are_equal_exactly_when_the_jobs_ask_for_the_same(
    first: dict[str, Any], second: dict[str, Any]
) -> None:
    def key(job: dict[str, Any]) -> str:
        return derive_key(job["template"], job["data"], job.get("filename"), job.get("version"))

    def asks(job: dict[str, Any]) -> str:
        fields = (job["template"], job["data"], job.get("filename"), job.get("version"))
        return json.dumps(fields, sort_keys=True)

    assert key(first).startswith("drop-") and len(key(first)) == 45
    assert (key(first) == key(second)) == (asks(first) == asks(second))


@settings(max_examples=300)
@given(json_values)
def test_any_document_is_a_job_or_gets_a_specific_error(document: Any) -> None:
    try:
        job = job_from_document(document)
    except InvalidArgument as exc:
        assert str(exc)
        return
    assert isinstance(document, dict) and job.template == document["template"]
    assert isinstance(job.data, dict) and job.key


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "the file is empty"),
        (b"  \n", "the file is empty"),
        (b'{"a": 1, "a": 2}', 'the field "a" appears twice in one object'),
        (b'{"a": NaN}', "NaN is not a JSON number"),
        (b'{"a": Infinity}', "Infinity is not a JSON number"),
        (b'{"a": 1} {"b": 2}', "is not valid JSON: Extra data at line 1, column 10"),
        (b"\xff{}", "is not UTF-8 text (byte 0xff at offset 0"),
        (b"[" * 100_000, "nested more than 64 levels deep"),
    ],
)
def test_what_is_not_one_strict_json_document_is_named(content: bytes, problem: str) -> None:
    found, document = parse(content)
    assert found is not None and problem in found and document is None


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ([], "must hold a JSON object"),
        ({"data": {}}, 'the required field "template" is missing'),
        ({"template": "t"}, 'the required field "data" is missing'),
        ({"template": 1, "data": {}}, '"template" must be a string (the template slug), not 1'),
        ({"template": "t", "data": []}, '"data" must be a JSON object ({...}), not a JSON array'),
        ({"template": "t", "data": {}, "key": True}, '"key" must be a string, not true'),
        ({"template": "t", "data": {}, "version": 1.5}, '"version" must be a whole number'),
        ({"template": "t", "data": {}, "tempalte": 1}, '(did you mean "template"?)'),
        ({"template": "t", "data": {"x": "\ud800"}}, "half of a surrogate pair"),
    ],
)
def test_what_is_wrong_with_a_document_is_named(document: Any, problem: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        job_from_document(document)
    assert problem in str(caught.value)


@given(file_names, st.integers(min_value=2, max_value=10**6))
def test_numbered_and_side_names_fit_and_keep_their_ending(name: str, attempt: int) -> None:
    job = name + ".json"
    first = numbered(job, 1)
    assert first == portable_name(job, fallback="job.json")  # CON.json -> CON_.json and so on
    assert numbered(first, 1) == first
    again = numbered(job, attempt)
    assert again != first and again.endswith(f".{attempt}.json")
    assert portable_name(again, fallback="-") == again
    assert len(os.fsencode(again)) <= 255
    side = side_name(job, ".result.json")
    assert side.endswith(".result.json") and len(os.fsencode(side)) <= 255
    assert portable_name(side, fallback="-") == side


@given(file_names)
def test_job_names_and_their_limits(name: str) -> None:
    assert is_job_name(name + ".json") == (not name.startswith("."))
    assert is_job_name(name + ".JSON") == (not name.startswith("."))
    assert not is_job_name(name + ".json.tmp")
    too_long = len((name + ".json").encode("utf-8")) > MAX_NAME_BYTES
    assert (name_problem(name + ".json") is not None) == too_long
