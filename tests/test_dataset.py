"""Data set loading: JSONL, CSV, YAML and inline cases; ids; errors naming file and line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from wtb.api.batchtest import DatasetSpec
from wtb.dataset import load_cases
from wtb.domain import Case
from wtb.errors import ManifestError


def spec(**fields: Any) -> DatasetSpec:
    return DatasetSpec.model_validate(fields)


def write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def refused(dataset: DatasetSpec, root: Path, where: str = "spec.dataset") -> ManifestError:
    with pytest.raises(ManifestError) as info:
        load_cases(dataset, root, where=where)
    return info.value


def documented_id(inputs: dict[str, Any], expected: dict[str, Any] | None) -> str:
    """The derivation the docs promise, written out independently of the implementation."""
    text = json.dumps(
        {"inputs": inputs, "expected": expected},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return "c-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def test_jsonl_rows_with_inputs_and_expected(tmp_path: Path) -> None:
    write(
        tmp_path,
        "data/cases.jsonl",
        '{"id": "a", "inputs": {"q": "one"}, "expected": {"answer": 1}}\n'
        "\n"
        '{"id": 7, "inputs": {"q": "two"}}\n'
        '{"inputs": {"q": "three"}, "expected": {}}\n',
    )
    cases = load_cases(spec(path="data/cases.jsonl"), tmp_path)
    assert cases == [
        Case(id="a", inputs={"q": "one"}, expected={"answer": 1}),
        Case(id="7", inputs={"q": "two"}, expected=None),
        Case(id=documented_id({"q": "three"}, None), inputs={"q": "three"}, expected=None),
    ]


def test_derived_ids_are_stable_and_depend_on_content(tmp_path: Path) -> None:
    write(tmp_path, "a.jsonl", '{"inputs": {"b": 2, "a": 1}, "expected": {"x": "é"}}\n')
    write(tmp_path, "b.yaml", "- expected: {x: é}\n  inputs: {a: 1, b: 2}\n")
    [from_jsonl] = load_cases(spec(path="a.jsonl"), tmp_path)
    [from_yaml] = load_cases(spec(path="b.yaml"), tmp_path)
    # A literal: a changed derivation would silently re-key every stored result.
    assert from_jsonl.id == from_yaml.id == "c-7e66b7427507"
    assert from_jsonl.id == documented_id({"a": 1, "b": 2}, {"x": "é"})
    write(tmp_path, "c.jsonl", '{"inputs": {"b": 2, "a": 1}, "expected": {"x": "e"}}\n')
    [other] = load_cases(spec(path="c.jsonl"), tmp_path)
    assert other.id != from_jsonl.id


def test_flat_jsonl_rows_split_inputs_and_expected_fields(tmp_path: Path) -> None:
    write(tmp_path, "flat.jsonl", '{"id": "r1", "question": "2+2", "lang": "en", "answer": 4}\n')
    cases = load_cases(spec(path="flat.jsonl", expectedFields=["answer"]), tmp_path)
    assert cases == [
        Case(id="r1", inputs={"question": "2+2", "lang": "en"}, expected={"answer": 4})
    ]


def test_csv_flat_rows_keep_strings_and_drop_empty_cells(tmp_path: Path) -> None:
    write(
        tmp_path,
        "cases.csv",
        "id,question,context,answer\n"
        'q1,"What is 2+2, roughly?",,4\n'
        "\n"
        'q2,"multi\nline",ctx,\n'
        ",no id,,x\n",
    )
    cases = load_cases(spec(path="cases.csv", expectedFields=["answer"]), tmp_path)
    assert cases == [
        Case(id="q1", inputs={"question": "What is 2+2, roughly?"}, expected={"answer": "4"}),
        Case(id="q2", inputs={"question": "multi\nline", "context": "ctx"}, expected=None),
        Case(
            id=documented_id({"question": "no id"}, {"answer": "x"}),
            inputs={"question": "no id"},
            expected={"answer": "x"},
        ),
    ]


def test_yaml_list_and_explicit_format(tmp_path: Path) -> None:
    write(
        tmp_path,
        "cases.txt",
        "- id: y1\n  inputs: {q: hello}\n  expected: {answer: HELLO}\n- {q: flat, answer: x}\n",
    )
    cases = load_cases(spec(path="cases.txt", format="yaml", expectedFields=["answer"]), tmp_path)
    assert [c.id for c in cases] == ["y1", documented_id({"q": "flat"}, {"answer": "x"})]
    assert cases[0].expected == {"answer": "HELLO"}


def test_inline_cases(tmp_path: Path) -> None:
    dataset = spec(
        cases=[
            {"id": "i1", "inputs": {"q": 1}, "expected": {"a": 2}},
            {"inputs": {"q": 3}},
        ]
    )
    cases = load_cases(dataset, tmp_path)
    assert cases == [
        Case(id="i1", inputs={"q": 1}, expected={"a": 2}),
        Case(id=documented_id({"q": 3}, None), inputs={"q": 3}),
    ]


def test_the_toy_fixture_loads() -> None:
    toy = Path(__file__).parent / "fixtures" / "toy"
    cases = load_cases(spec(path="cases.jsonl"), toy)
    assert len(cases) == 20
    assert cases[0] == Case(
        id="q00", inputs={"question": "  Alpha 0! "}, expected={"answer": "ALPHA 0!"}
    )


# --- errors -----------------------------------------------------------------------------------


def test_malformed_json_names_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "d/cases.jsonl", '{"inputs": {"q": 1}}\n{"inputs": {"q": 2}\n')
    error = refused(spec(path="d/cases.jsonl"), tmp_path)
    assert error.where == "d/cases.jsonl, line 2"
    assert error.message == "not valid JSON: Expecting ',' delimiter (column 20)"
    assert error.fix == "write one JSON object per line"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ('{"inputs": {"q": 1}}\n[1, 2]\n', 2, "row is a JSON list, not an object"),
        ('{"id": "x", "expected": {"a": 1}}\n', 1, "row has `expected` but no `inputs`"),
        ('{"inputs": "q"}\n', 1, "`inputs` is a str, not an object"),
        ('{"inputs": {}, "expected": [1]}\n', 1, "`expected` is a list, not an object"),
        ('{"inputs": {}, "expect": {"a": 1}}\n', 1, "unknown key 'expect' in a row with `inputs`"),
        (
            '\n\n{"id": "only-id"}\n',
            3,
            "row has no inputs (every column is `id` or an expected field)",
        ),
        ('{"id": "", "q": 1}\n', 1, "`id` must be a non-empty string or number, got ''"),
    ],
)
def test_bad_rows_name_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, line: int, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "cases.jsonl", text)
    error = refused(spec(path="cases.jsonl"), tmp_path)
    assert error.where == f"cases.jsonl, line {line}"
    assert error.message == message
    assert error.fix


def test_duplicate_ids_name_both_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path,
        "cases.jsonl",
        '{"id": "a", "inputs": {"q": 1}}\n{"id": "b", "inputs": {"q": 2}}\n'
        '{"id": "a", "inputs": {"q": 3}}\n',
    )
    error = refused(spec(path="cases.jsonl"), tmp_path)
    assert error.where == "cases.jsonl, line 3"
    assert error.message == "duplicate case id 'a', first at cases.jsonl, line 1"


def test_identical_rows_without_ids_collide(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "cases.csv", "q,answer\nx,1\ny,2\nx,1\n")
    error = refused(spec(path="cases.csv", expectedFields=["answer"]), tmp_path)
    assert error.where == "cases.csv, line 4"
    assert "first at cases.csv, line 2" in error.message
    assert "identical rows collide" in error.fix


def test_duplicate_inline_ids_name_both_items(tmp_path: Path) -> None:
    dataset = spec(cases=[{"id": "a", "inputs": {}}, {"id": "a", "inputs": {"q": 1}}])
    error = refused(dataset, tmp_path, where="bt.yaml: spec.dataset")
    assert error.where == "bt.yaml: spec.dataset.cases[1]"
    assert error.message == "duplicate case id 'a', first at bt.yaml: spec.dataset.cases[0]"


def test_csv_errors_name_the_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "wide.csv", 'q,a\n"x\ny",1\n1,2,3\n')
    error = refused(spec(path="wide.csv"), tmp_path)
    assert error.where == "wide.csv, line 4"
    assert error.message == "row has 3 fields, the header has 2"
    write(tmp_path, "dupes.csv", "q,q\n1,2\n")
    error = refused(spec(path="dupes.csv"), tmp_path)
    assert error.where == "dupes.csv, line 1"
    assert error.message == "header names columns 'q' twice"


def test_yaml_errors_name_the_item_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "cases.yaml", "- inputs: {q: 1}\n\n- just a string\n")
    error = refused(spec(path="cases.yaml"), tmp_path)
    assert error.where == "cases.yaml, item 1 (line 3)"
    assert error.message == "item is a str, not a mapping"
    write(tmp_path, "map.yaml", "inputs: {q: 1}\n")
    error = refused(spec(path="map.yaml"), tmp_path)
    assert (error.where, error.message) == (
        "map.yaml",
        "the document is a dict, not a list of cases",
    )
    write(tmp_path, "broken.yml", "- inputs: {q: 1}\n- inputs: [\n")
    error = refused(spec(path="broken.yml"), tmp_path)
    assert error.where == "broken.yml, line 3"
    assert error.message.startswith("not valid YAML")
    write(tmp_path, "dated.yaml", "- inputs: {day: 2024-01-02}\n")
    error = refused(spec(path="dated.yaml"), tmp_path)
    assert error.where == "dated.yaml, item 0 (line 1)"
    assert "JSON cannot represent" in error.message
    assert "quote dates" in error.fix


@pytest.mark.parametrize(
    ("name", "text"), [("e.jsonl", "\n\n"), ("e.csv", "q,a\n"), ("e.yaml", "")]
)
def test_an_empty_data_set_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, name, text)
    error = refused(spec(path=name), tmp_path)
    assert (error.where, error.message) == (name, "the data set has no cases")


def test_unknown_format_names_the_field(tmp_path: Path) -> None:
    write(tmp_path, "cases.json", "[]")
    error = refused(spec(path="cases.json"), tmp_path, where="bt.yaml: spec.dataset")
    assert error.where == "bt.yaml: spec.dataset.path"
    assert error.message == "cannot tell the format of 'cases.json' from its extension '.json'"
    assert "format: jsonl|csv|yaml" in error.fix


def test_missing_file_shows_where_it_was_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "manifests").mkdir()
    monkeypatch.chdir(tmp_path)
    error = refused(spec(path="../data/cases.jsonl"), tmp_path / "manifests")
    assert error.where == "spec.dataset.path"
    assert error.message == (
        "data set file '../data/cases.jsonl' not found (looked for data/cases.jsonl)"
    )
    assert "relative to the manifest" in error.fix


def test_non_utf8_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "latin.csv").write_bytes("q\ncaf\xe9\n".encode("latin-1"))
    error = refused(spec(path="latin.csv"), tmp_path)
    assert error.where == "latin.csv"
    assert error.message.startswith("not UTF-8 text")


# --- digest ---------------------------------------------------------------------------------------
