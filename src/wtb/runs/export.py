"""Every recorded cell of a run as rows of one flat table: CSV, JSON Lines or Parquet
(`wtb export`), or a pandas DataFrame (`RunResults.to_pandas`).

The same columns in every format, one row per cell, streamed from the store
(`ResultStore.iter_cells`): memory stays flat however many cells the run has (Parquet is
written in row groups of `PARQUET_ROWS`). Columns:

    run, cell, combination (the label), combination.<axis> per axis, case, repeat, status,
    metric.<name> per evaluator, latency_ms, tokens, cost, error_type, error_message,
    attempts, finished_at, evaluator_errors (JSON text), output (JSON text)
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, Literal

from wtb.errors import WtbError
from wtb.runs.record import recorded_spec
from wtb.storage.records import RunRecord, StoredCell
from wtb.variant_matrix import combination_label

if TYPE_CHECKING:
    from wtb.storage.store import ResultStore

ExportFormat = Literal["csv", "jsonl", "parquet"]
FORMATS: tuple[ExportFormat, ...] = ("csv", "jsonl", "parquet")
PARQUET_ROWS = 4096
"""Rows per Parquet row group: what is held in memory at once."""

ColumnType = Literal["string", "int", "float", "timestamp"]


@dataclass(frozen=True)
class CellTable:
    """The columns of a run's cell table (name and type) and its rows, streamed."""

    columns: tuple[tuple[str, ColumnType], ...]
    rows: Iterator[tuple[Any, ...]]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.columns]


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def cell_table(store: ResultStore, run: RunRecord) -> CellTable:
    """The run's cells as a table; rows stream from the store as they are consumed."""
    metrics = [e.name for e in recorded_spec(run).batch.evaluators]
    axes = sorted({axis for c in store.combo_aggregates(run.id) for axis, _ in c.combination})
    columns: list[tuple[str, ColumnType]] = [
        ("run", "string"),
        ("cell", "string"),
        ("combination", "string"),
        *((f"combination.{axis}", "string") for axis in axes),
        ("case", "string"),
        ("repeat", "int"),
        ("status", "string"),
        *((f"metric.{name}", "float") for name in metrics),
        ("latency_ms", "float"),
        ("tokens", "int"),
        ("cost", "float"),
        ("error_type", "string"),
        ("error_message", "string"),
        ("attempts", "int"),
        ("finished_at", "timestamp"),
        ("evaluator_errors", "string"),
        ("output", "string"),
    ]

    def row(cell: StoredCell) -> tuple[Any, ...]:
        chosen = dict(cell.combination)
        return (
            run.run_key,
            cell.cell_key,
            combination_label(cell.combination),
            *(chosen.get(axis) for axis in axes),
            cell.case_id,
            cell.repeat,
            cell.status,
            *(cell.metrics.get(name) for name in metrics),
            cell.latency_ms,
            cell.tokens,
            cell.cost,
            cell.error_type,
            cell.error_message,
            cell.attempts,
            _utc(cell.finished_at),
            _json_text(cell.evaluator_errors or None),
            _json_text(cell.output),
        )

    return CellTable(tuple(columns), (row(c) for c in store.iter_cells(run.id)))


def _text(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def write_csv(table: CellTable, out: IO[str]) -> int:
    """The table as CSV with a header row (empty fields for missing values); rows written."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.names)
    count = 0
    for row in table.rows:
        writer.writerow(["" if v is None else _text(v) for v in row])
        count += 1
    return count


def write_jsonl(table: CellTable, out: IO[str]) -> int:
    """The table as JSON Lines, one object per cell (missing values null); rows written."""
    names = table.names
    count = 0
    for row in table.rows:
        out.write(json.dumps(dict(zip(names, map(_text, row), strict=True)), ensure_ascii=False))
        out.write("\n")
        count += 1
    return count


def parquet_module() -> Any:
    """pyarrow's parquet module, or a WtbError naming the extra that installs it."""
    try:
        import pyarrow.parquet
    except ImportError as exc:
        raise WtbError(
            "writing Parquet needs pyarrow, which is not installed",
            fix="pip install 'wtb[parquet]' (or pip install pyarrow)",
        ) from exc
    return pyarrow.parquet


def write_parquet(
    table: CellTable, out: str | IO[bytes], *, rows_per_group: int = PARQUET_ROWS
) -> int:
    """The table as Parquet (to a path or a binary stream), in row groups of
    `rows_per_group`; rows written."""
    pq = parquet_module()
    import pyarrow as pa

    types = {
        "string": pa.string(),
        "int": pa.int64(),
        "float": pa.float64(),
        "timestamp": pa.timestamp("us", tz="UTC"),
    }
    schema = pa.schema([(name, types[kind]) for name, kind in table.columns])
    count = 0
    with pq.ParquetWriter(out, schema) as writer:
        batch: list[tuple[Any, ...]] = []

        def flush() -> None:
            columns = list(zip(*batch, strict=True))
            writer.write_batch(
                pa.RecordBatch.from_arrays(
                    [pa.array(col, type=f.type) for col, f in zip(columns, schema, strict=True)],
                    schema=schema,
                )
            )
            batch.clear()

        for row in table.rows:
            batch.append(row)
            count += 1
            if len(batch) >= rows_per_group:
                flush()
        if batch:
            flush()
    return count


def export_cells(
    store: ResultStore,
    run: RunRecord,
    fmt: ExportFormat,
    out: IO[str] | IO[bytes] | str,
    *,
    rows_per_group: int = PARQUET_ROWS,
) -> int:
    """Write every cell of `run` to `out` in `fmt` (Parquet: a path or a binary stream, in
    row groups of `rows_per_group`; the others: a text stream); returns the cells written."""
    if fmt == "parquet":
        parquet_module()  # before anything is read: a missing extra is the first thing said
        return write_parquet(
            cell_table(store, run),
            out,  # type: ignore[arg-type]
            rows_per_group=rows_per_group,
        )
    if isinstance(out, str):
        raise TypeError("CSV and JSON Lines are written to a text stream")
    writer = write_csv if fmt == "csv" else write_jsonl
    return writer(cell_table(store, run), out)  # type: ignore[arg-type]
