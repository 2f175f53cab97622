"""`wtb export`: every cell of a run as CSV, JSON Lines or Parquet, read back; streamed, so
memory stays flat with the number of cells, on every backend."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from toybatch import TOY, toy_job
from wtb.cli.main import cli
from wtb.domain import Attempt, Cell, CellResult
from wtb.runs.export import export_cells
from wtb.storage import ResultStore, RunInfo

COLUMNS = [
    "run",
    "cell",
    "combination",
    "combination.answer",
    "combination.normalize",
    "case",
    "repeat",
    "status",
    "metric.correct",
    "metric.latency",
    "metric.tokens",
    "latency_ms",
    "tokens",
    "cost",
    "error_type",
    "error_message",
    "attempts",
    "finished_at",
    "evaluator_errors",
    "output",
]


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, Path]:
    """(database, run key, folder): the toy workflow over two axes, one variant of which
    raises on every case: 2 x 2 combinations x 20 cases x 1 repeat = 80 cells, 40 failed."""
    tmp_path = tmp_path_factory.mktemp("export")
    batch = yaml.safe_load((TOY / "batchtest.yaml").read_text())
    batch["spec"]["matrix"] = {
        "answer": ["original", "reversed"],
        "normalize": ["original", "broken"],
    }
    batch["spec"]["repeats"] = 1
    shutil.copy(TOY / "cases.jsonl", tmp_path)  # a data set beside the manifest
    (tmp_path / "batch.yaml").write_text(yaml.safe_dump(batch))
    db = f"sqlite:///{tmp_path / 'e.db'}"
    result = _invoke(
        "run", "-f", str(TOY / "workflow.yaml"), "-f", str(tmp_path / "batch.yaml"),
        "--database", db, "-o", "json", "-q",
    )  # fmt: skip
    assert result.exit_code == 4, result.output  # the broken variant's cells failed
    (document,) = json.loads(result.stdout)
    return db, document["run"], tmp_path


def _export(db: str, fmt: str, target: Path, *args: str) -> None:
    result = _invoke("export", *args, "--database", db, "--format", fmt, "-o", str(target))
    assert result.exit_code == 0, result.output
    assert "80 cells of run default/toy-answers:" in result.stderr


def _check(rows: list[dict[str, Any]], run_key: str) -> None:
    """The rows of the recorded run, whichever format they were read back from (values as
    text, as CSV gives them)."""
    assert len(rows) == 80
    assert len({row["cell"] for row in rows}) == 80
    assert {row["run"] for row in rows} == {run_key}
    by_status: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_status.setdefault(row["status"], []).append(row)
    assert {s: len(r) for s, r in by_status.items()} == {"succeeded": 40, "failed": 40}
    for row in by_status["failed"]:
        assert row["combination.normalize"] == "broken"
        assert row["error_type"] == "ValueError"
        assert "cannot normalize" in row["error_message"]
        assert row["output"] in ("", None)
        assert row["attempts"] == "1"
    for row in by_status["succeeded"]:
        assert row["combination"] == f"answer={row['combination.answer']}, normalize=original"
        output = json.loads(row["output"])
        correct = float(row["metric.correct"])
        assert correct == (1.0 if row["combination.answer"] == "original" else 0.0)
        assert output["answer"]  # the graph's output, as JSON text
        assert float(row["latency_ms"]) > 0
        if row["combination.answer"] == "original":  # the node that reports its usage
            assert int(row["tokens"]) >= 2
            assert float(row["cost"]) == pytest.approx(0.001)
        else:
            assert row["tokens"] in ("", None)
        assert row["repeat"] == "0"
    assert {row["case"] for row in rows} == {f"q{i:02d}" for i in range(20)}
    datetime.fromisoformat(rows[0]["finished_at"])


def _as_text(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value) if isinstance(value, int) else value


def test_csv_jsonl_and_parquet_round_trip(recorded: tuple[str, str, Path]) -> None:
    db, run_key, tmp_path = recorded
    _export(db, "csv", tmp_path / "cells.csv", "toy-answers")
    with (tmp_path / "cells.csv").open(newline="") as file:
        reader = csv.DictReader(file)
        assert reader.fieldnames == COLUMNS
        from_csv = list(reader)
    _check(from_csv, run_key)

    _export(db, "jsonl", tmp_path / "cells.jsonl", "--run", run_key)
    lines = (tmp_path / "cells.jsonl").read_text().splitlines()
    from_jsonl = [json.loads(line) for line in lines]
    assert all(list(row) == COLUMNS for row in from_jsonl)
    assert all(row["output"] is None for row in from_jsonl if row["status"] == "failed")
    _check([{k: _as_text(v) for k, v in row.items()} for row in from_jsonl], run_key)

    _export(db, "parquet", tmp_path / "cells.parquet", "toy-answers")
    table = pq.read_table(tmp_path / "cells.parquet")
    assert table.column_names == COLUMNS
    assert str(table.schema.field("metric.correct").type) == "double"
    assert str(table.schema.field("repeat").type) == "int64"
    assert str(table.schema.field("finished_at").type) == "timestamp[us, tz=UTC]"
    from_parquet = table.to_pylist()
    _check([{k: _as_text(v) for k, v in row.items()} for row in from_parquet], run_key)

    # The same values in every format, cell by cell.
    def key(rows: list[dict[str, Any]], column: str) -> dict[str, Any]:
        return {row["cell"]: row[column] for row in rows}

    for column in ("metric.correct", "latency_ms", "output"):
        assert key(from_jsonl, column) == key(from_parquet, column)
    assert key(from_csv, "case") == key(from_parquet, "case")


def test_export_refusals(recorded: tuple[str, str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    db, run_key, tmp_path = recorded
    neither = _invoke("export", "--database", db)
    assert neither.exit_code == 2
    assert "give a BatchTest NAME or --run RUN_KEY" in neither.stderr
    other = _invoke("export", "other-batch", "--run", run_key, "--database", db)
    assert other.exit_code == 2
    assert f"run {run_key} is of BatchTest default/toy-answers, not other-batch" in other.stderr
    both = _invoke("export", "toy-answers", "--run", run_key, "--database", db)
    assert both.exit_code == 0, both.output
    assert len(list(csv.DictReader(io.StringIO(both.stdout)))) == 80
    unknown = _invoke("export", "nope", "--database", db)
    assert unknown.exit_code == 2
    assert "no stored run is 'nope'" in unknown.stderr
    # Without pyarrow, Parquet names the extra that installs it (pyarrow made unimportable).
    for module in [m for m in sys.modules if m == "pyarrow" or m.startswith("pyarrow.")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    missing = _invoke(
        "export", "toy-answers", "--database", db, "--format", "parquet", "-o",
        str(tmp_path / "x.parquet"),
    )  # fmt: skip
    assert missing.exit_code == 2
    assert "wtb[parquet]" in missing.stderr
    assert not (tmp_path / "x.parquet").exists()


# -- streaming --------------------------------------------------------------------------


def _record_synthetic(store: ResultStore, name: str, cells: int) -> Any:
    """A run of `cells` cells with a few hundred bytes of output each, recorded directly."""
    job = toy_job({"lookup": ["original", "slow"]}, ["x"])
    run = store.begin_run(
        RunInfo(
            run_key=f"default/{name}:0",
            namespace="default",
            name=name,
            spec_digest="0",
            spec=job.to_record(),
            total_cells=cells,
        )
    )
    now = datetime.now(UTC)

    def results() -> Iterator[CellResult]:
        for i in range(cells):
            variant = "original" if i % 2 else "slow"
            yield CellResult(
                cell=Cell(f"k{i}", variant, (("lookup", variant),), f"c{i // 2}", 0),
                status="succeeded",
                latency_ms=1.0 + i % 7,
                finished_at=now,
                output={"answer": f"answer {i} " + "x" * 200},
                metrics={"correct": float(i % 2), "tokens": 3.0},
                tokens=3,
                attempts=(Attempt(1, "succeeded", now, 1.0),),
            )

    batch: list[CellResult] = []
    for result in results():
        batch.append(result)
        if len(batch) == 2000:
            store.record(run.id, batch)
            batch.clear()
    store.record(run.id, batch)
    return run


def _peak(store: ResultStore, run: Any, fmt: str, tmp_path: Path) -> tuple[int, int]:
    """(rows written, peak bytes Python allocated while exporting)."""
    tracemalloc.start()
    try:
        if fmt == "parquet":
            target = str(tmp_path / f"{run.name}.parquet")
            written = export_cells(store, run, "parquet", target, rows_per_group=250)
        else:
            written = export_cells(store, run, "csv", _Sink())
        return written, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


class _Sink(io.StringIO):
    """A text stream that keeps nothing (what a pipe to another process is to us)."""

    def write(self, text: str) -> int:
        return len(text)


def test_export_memory_is_flat(store_url: str, tmp_path: Path) -> None:
    with ResultStore.open(store_url) as store:
        small = _record_synthetic(store, "small", 1_000)
        large = _record_synthetic(store, "large", 4_000)
        for fmt in ("csv", "parquet"):
            written_small, peak_small = _peak(store, small, fmt, tmp_path)
            written_large, peak_large = _peak(store, large, fmt, tmp_path)
            assert (written_small, written_large) == (1_000, 4_000)
            # Four times the cells, about the same memory: a full load would hold every
            # cell (each with its output: about 6 MB for the large run here).
            assert peak_large < 1.3 * peak_small + 500_000, (fmt, peak_small, peak_large)
            assert peak_large < 3_000_000, (fmt, peak_large)
    metadata = pq.read_metadata(tmp_path / "large.parquet")
    assert (metadata.num_rows, metadata.num_row_groups) == (4_000, 16)
