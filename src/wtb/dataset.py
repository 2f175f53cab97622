"""Load a BatchTest's test cases: inline, or from a JSONL, CSV or YAML file.

Rows are `{"id"?, "inputs": {...}, "expected"?: {...}, "invoke"?: {...}}`, or flat: every
column is an input, except `id` and the columns named in `expectedFields`. A case without an
id gets one derived from its content, so it stays the same across runs and machines.
`invoke` is what the case's invocations get (`wtb.api.invocation`), the most specific level.
`resume` lists the answers to the graph's `interrupt()` calls, in order.

Data sets are held in memory as a list of Case: fine up to about 100,000 cases.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import json
from collections.abc import Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from wtb._hashing import canonical_json
from wtb._yaml import MAX_DEPTH, YamlLimitError, load_one, too_deep
from wtb.api.batchtest import DatasetSpec
from wtb.api.invocation import InvocationSpec
from wtb.domain import Case
from wtb.errors import ManifestError, yaml_problem
from wtb.settings import get_settings

_FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".yaml": "yaml", ".yml": "yaml"}
_ROW_KEYS = frozenset({"id", "inputs", "expected", "invoke", "resume"})
MAX_RESUME = 100
"""Scripted interrupt answers one case may give: a graph that asks more is looping."""
_ROW_FIX = 'write rows as {"id": ..., "inputs": {...}, "expected": {...}} or as flat objects'
_INVOKE_FIX = (
    "give `invoke` as an object with any of context, configurable, recursionLimit, tags, metadata"
)

Located = tuple[str, dict[str, Any]]
"""A raw row and where it is ('cases.jsonl, line 7')."""


def _content_id(content: str) -> str:
    """'c-' + the first 12 hex digits of sha256 over the canonical JSON of inputs and expected."""
    return "c-" + hashlib.sha256(content.encode()).hexdigest()[:12]


def _case(row: dict[str, Any], expected_fields: Sequence[str], where: str) -> Case:
    if "inputs" in row:
        unknown = sorted(set(row) - _ROW_KEYS)
        if unknown:
            raise ManifestError(
                f"unknown key {unknown[0]!r} in a row with `inputs`",
                where=where,
                fix="rows with `inputs` may only have `id`, `inputs`, `expected`, `invoke` "
                "and `resume`",
            )
        inputs, expected = row["inputs"], row.get("expected")
        if not isinstance(inputs, dict):
            raise ManifestError(
                f"`inputs` is a {type(inputs).__name__}, not an object", where=where, fix=_ROW_FIX
            )
        if expected is not None and not isinstance(expected, dict):
            raise ManifestError(
                f"`expected` is a {type(expected).__name__}, not an object",
                where=where,
                fix=_ROW_FIX,
            )
    elif "expected" in row:
        raise ManifestError("row has `expected` but no `inputs`", where=where, fix=_ROW_FIX)
    else:
        expected = {k: row[k] for k in expected_fields if k in row}
        inputs = {k: v for k, v in row.items() if k != "id" and k not in expected_fields}
        if not inputs:
            raise ManifestError(
                "row has no inputs (every column is `id` or an expected field)",
                where=where,
                fix="add input columns, or list fewer columns in `expectedFields`",
            )
    expected = expected or None
    # Only rows with `inputs` have an `invoke` block; in a flat row it is an input column.
    invoke = _invoke(row.get("invoke"), where) if "inputs" in row else None
    resume = _resume(row.get("resume"), where) if "inputs" in row else None
    try:
        # `invoke` and `resume` are part of a case's content only when given: ids derived
        # before they existed stay the same.
        content = canonical_json(
            {
                "inputs": inputs,
                "expected": expected,
                **({"invoke": invoke} if invoke else {}),
                **({"resume": list(resume)} if resume is not None else {}),
            }
        )
    except (TypeError, ValueError) as exc:
        raise ManifestError(
            f"row holds a value JSON cannot represent: {exc}",
            where=where,
            fix="use strings, numbers, booleans, null, lists and objects (quote dates in YAML)",
        ) from exc
    given = row.get("id")
    if given is None:
        return Case(
            id=_content_id(content), inputs=inputs, expected=expected, invoke=invoke, resume=resume
        )
    if isinstance(given, dict | list) or given == "":
        raise ManifestError(
            f"`id` must be a non-empty string or number, got {given!r}",
            where=where,
            fix="write a short unique id, or leave it out to derive one from the content",
        )
    return Case(id=str(given), inputs=inputs, expected=expected, invoke=invoke, resume=resume)


def _resume(value: object, where: str) -> tuple[Any, ...] | None:
    """A row's `resume`: the answers to the graph's interrupts, in order."""
    if value is None:
        return None
    fix = "give `resume` as a list of values, one per interrupt() the graph reaches"
    if not isinstance(value, list):
        raise ManifestError(
            f"`resume` is a {type(value).__name__}, not a list", where=where, fix=fix
        )
    if not value:
        raise ManifestError("`resume` is empty", where=where, fix=f"{fix}, or leave it out")
    if len(value) > MAX_RESUME:
        raise ManifestError(
            f"`resume` has {len(value)} values, more than {MAX_RESUME}", where=where, fix=fix
        )
    if any(v is None for v in value):
        # LangGraph takes Command(resume=None) for "no answer" and fails on it.
        raise ManifestError(
            f"`resume[{value.index(None)}]` is null, which LangGraph cannot resume with",
            where=where,
            fix="answer with another value (false, an empty string or object)",
        )
    return tuple(value)


def _invoke(value: object, where: str) -> dict[str, Any] | None:
    """A row's `invoke` block, validated, as canonical JSON (camelCase, nulls left out)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ManifestError(
            f"`invoke` is a {type(value).__name__}, not an object", where=where, fix=_INVOKE_FIX
        )
    try:
        spec = InvocationSpec.model_validate(value)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(p) for p in problem["loc"])
        raise ManifestError(
            f"invoke.{field}: {problem['msg']}" if field else f"invoke: {problem['msg']}",
            where=where,
            fix=_INVOKE_FIX,
        ) from None
    return spec.model_dump(mode="json", by_alias=True, exclude_none=True) or None


def _check_inputs(case: Case, known: Collection[str], where: str) -> None:
    """Refuse input keys the graph's input schema lacks: LangGraph drops them silently, so
    a misspelt key would run every cell without the value it meant to give."""
    for key in sorted(case.inputs):
        if key in known:
            continue
        close = difflib.get_close_matches(key, list(known), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ManifestError(
            f"case {case.id!r}: input {key!r} is not a key of the graph's input schema "
            "(LangGraph would drop it)",
            where=where,
            fix=f"{hint}the input schema has: {', '.join(sorted(known)) or 'no keys'}",
        )


def _cases(
    rows: Iterable[Located],
    expected_fields: Sequence[str],
    input_keys: Collection[str] | None = None,
) -> list[Case]:
    cases: list[Case] = []
    first_seen: dict[str, str] = {}
    checked: set[frozenset[str]] = set()
    for where, row in rows:
        case = _case(row, expected_fields, where)
        if input_keys is not None:
            # Rows of a big data set share a few key sets: each is checked once.
            keys = frozenset(case.inputs)
            if keys not in checked:
                _check_inputs(case, input_keys, where)
                checked.add(keys)
        if case.id in first_seen:
            raise ManifestError(
                f"duplicate case id {case.id!r}, first at {first_seen[case.id]}",
                where=where,
                fix="give each case a distinct `id` (cases without one get an id derived "
                "from inputs and expected, so identical rows collide)",
            )
        first_seen[case.id] = where
        cases.append(case)
    return cases


_DEPTH_FIX = f"nest the row's values at most {MAX_DEPTH} levels deep"


def _jsonl_rows(path: Path, name: str) -> Iterator[Located]:
    limit = get_settings().max_dataset_row_bytes
    with path.open(encoding="utf-8") as lines:
        number = 0
        while line := lines.readline(limit + 1):
            number += 1
            where = f"{name}, line {number}"
            if len(line) > limit:
                raise ManifestError(
                    f"the line is longer than {limit} characters",
                    where=where,
                    fix="make the case smaller, or raise WTB_MAX_DATASET_ROW_BYTES",
                )
            if not line.strip():
                continue
            try:
                row = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as exc:
                raise ManifestError(
                    f"not valid JSON: {exc.msg} (column {exc.colno})",
                    where=where,
                    fix="write one JSON object per line",
                ) from None
            except RecursionError:
                raise ManifestError(
                    "the row is nested too deeply", where=where, fix=_DEPTH_FIX
                ) from None
            if too_deep(row):
                raise ManifestError(
                    f"the row is nested more than {MAX_DEPTH} levels deep",
                    where=where,
                    fix=_DEPTH_FIX,
                )
            if not isinstance(row, dict):
                raise ManifestError(
                    f"row is a JSON {type(row).__name__}, not an object", where=where, fix=_ROW_FIX
                )
            yield where, row


def _csv_rows(path: Path, name: str) -> Iterator[Located]:
    try:
        yield from _csv_records(path, name)
    except csv.Error as exc:
        raise ManifestError(
            f"not valid CSV: {exc}",
            where=name,
            fix="quote fields that hold commas, quotes or newlines; a field longer than "
            "WTB_MAX_DATASET_ROW_BYTES needs that setting raised",
        ) from None


def _csv_records(path: Path, name: str) -> Iterator[Located]:
    limit = get_settings().max_dataset_row_bytes
    csv.field_size_limit(limit)
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return
        dupes = sorted({c for c in header if header.count(c) > 1})
        if dupes or "" in header:
            raise ManifestError(
                f"header names columns {', '.join(map(repr, dupes))} twice"
                if dupes
                else "header has an empty column name",
                where=f"{name}, line 1",
                fix="give every column a distinct, non-empty name",
            )
        end = reader.line_num
        for record in reader:
            # A quoted field may span lines: a record starts after the previous one ended.
            where, end = f"{name}, line {end + 1}", reader.line_num
            if not any(record):
                continue
            if len(record) > len(header):
                raise ManifestError(
                    f"row has {len(record)} fields, the header has {len(header)}",
                    where=where,
                    fix="quote values that contain commas",
                )
            # Empty cells are missing values, so an input column can be optional.
            yield where, {k: v for k, v in zip(header, record, strict=False) if v != ""}


def _yaml_rows(path: Path, name: str) -> Iterator[Located]:
    text = path.read_text(encoding="utf-8")
    try:
        data, node = load_one(text)
    except yaml.YAMLError as exc:
        line, problem = yaml_problem(exc)
        raise ManifestError(
            f"not valid YAML: {problem}", where=f"{name}{line}", fix="fix the YAML syntax"
        ) from None
    except YamlLimitError as exc:
        raise ManifestError(
            f"refused: {exc.problem}",
            where=f"{name}{exc.at}",
            fix="write the cases out plainly: fewer nesting levels, no aliases that "
            "multiply (`*name`)",
        ) from None
    if data is None:
        return
    if not isinstance(data, list) or not isinstance(node, yaml.SequenceNode):
        raise ManifestError(
            f"the document is a {type(data).__name__}, not a list of cases",
            where=name,
            fix="write the cases as a YAML list: `- inputs: {...}`",
        )
    assert node is not None  # data is not None
    for index, (row, item) in enumerate(zip(data, node.value, strict=True)):
        where = f"{name}, item {index} (line {item.start_mark.line + 1})"
        if not isinstance(row, dict):
            raise ManifestError(
                f"item is a {type(row).__name__}, not a mapping", where=where, fix=_ROW_FIX
            )
        yield where, row


_READERS = {"jsonl": _jsonl_rows, "csv": _csv_rows, "yaml": _yaml_rows}


def _shown(path: Path) -> str:
    """The resolved path, relative to the working directory when it is below it."""
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(Path.cwd()))
    except ValueError:
        return str(resolved)


def _check_inside(path: Path, file: str, base_dir: Path, where: str) -> None:
    """Refuse a data set file outside the manifest's directory (an absolute path, `..`, or a
    symlink, resolved): a manifest must not read files it does not ship with."""
    base = base_dir.resolve()
    resolved = path.resolve()
    if resolved.is_relative_to(base):
        return
    raise ManifestError(
        f"data set file {file!r} is outside the manifest's directory {str(base)!r} "
        f"(it resolves to {str(resolved)!r})",
        where=f"{where}.path",
        fix="put the data set in the manifest's directory (or below it) and give its "
        "relative path; to read it where it is, set WTB_ALLOW_DATA_OUTSIDE=1",
    )


def _file_cases(
    spec: DatasetSpec,
    file: str,
    base_dir: Path,
    where: str,
    input_keys: Collection[str] | None,
) -> list[Case]:
    path = base_dir / file
    fmt = spec.format or _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ManifestError(
            f"cannot tell the format of {file!r} from its extension {path.suffix!r}",
            where=f"{where}.path",
            fix="use .jsonl, .csv, .yaml or .yml, or set `format: jsonl|csv|yaml`",
        )
    if not path.is_file():
        raise ManifestError(
            f"data set file {file!r} not found (looked for {_shown(path)})",
            where=f"{where}.path",
            fix="give the path relative to the manifest's directory",
        )
    settings = get_settings()
    if not settings.allow_data_outside:
        _check_inside(path, file, base_dir, where)
    name = _shown(path)
    size = path.stat().st_size
    if size > settings.max_dataset_bytes:
        raise ManifestError(
            f"the data set file has {size} bytes, more than {settings.max_dataset_bytes}",
            where=f"{where}.path ({name})",
            fix="split it into smaller data sets, or raise WTB_MAX_DATASET_BYTES",
        )
    try:
        cases = _cases(_READERS[fmt](path, name), spec.expected_fields, input_keys)
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"not UTF-8 text: {exc.reason} at byte {exc.start}",
            where=name,
            fix="save the file as UTF-8",
        ) from None
    if not cases:
        raise ManifestError(
            "the data set has no cases", where=name, fix="add at least one row to the file"
        )
    return cases


def load_cases(
    spec: DatasetSpec,
    base_dir: Path,
    where: str = "spec.dataset",
    *,
    input_keys: Collection[str] | None = None,
) -> list[Case]:
    """The cases of a data set, in file order; file paths are relative to `base_dir`.

    With `input_keys` (the graph's input schema), an input key outside it is refused.

    Raises ManifestError naming the file and line (or the manifest field) and the fix.
    """
    if spec.path is not None:
        return _file_cases(spec, spec.path, base_dir, where, input_keys)
    rows = (
        (f"{where}.cases[{i}]", c.model_dump(by_alias=True, exclude_none=True))
        for i, c in enumerate(spec.cases)
    )
    return _cases(rows, spec.expected_fields, input_keys)
