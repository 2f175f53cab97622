"""The trivial workload every benchmark shares: its manifests, generated cases, and graph.

The benchmarks go through the public engine API exactly as `wtb run` does (load the
manifests, prepare, open a ResultStore, run_batch); only the data set is generated here,
at the size asked for, instead of the demo `trivial/cases.jsonl`.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRIVIAL_DIR = Path(__file__).resolve().parent / "trivial"
GRAPH_FACTORY = "trivial_graph:build_graph"


def case_rows(n: int, first: int = 0) -> Iterator[dict[str, Any]]:
    """n deterministic cases, numbered from `first`; the expected answer is what the graph
    computes."""
    for i in range(first, first + n):
        words = i % 7 + 1
        text = " ".join(f"w{i}-{j}" for j in range(words))
        yield {
            "id": f"t{i:06d}",
            "inputs": {"text": text},
            "expected": {"answer": f"{words} words"},
        }


def write_cases(path: Path, n: int, first: int = 0) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for row in case_rows(n, first):
            f.write(json.dumps(row) + "\n")
    return path


def _on_path(directory: Path = TRIVIAL_DIR) -> None:
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))


def compiled_graph() -> Any:
    """The trivial graph, compiled once: what a user's plain loop would call."""
    from wtb.importing import import_object

    _on_path()
    return import_object(GRAPH_FACTORY, where="bench")().compile()


def prepare_trivial(cases_file: Path, *, repeats: int = 1, concurrency: int = 1) -> Any:
    """The PreparedBatch of the trivial BatchTest over `cases_file` (an absolute path)."""
    return prepare_workload(TRIVIAL_DIR, cases_file, repeats=repeats, concurrency=concurrency)


def prepare_workload(
    directory: Path, cases_file: Path, *, repeats: int = 1, concurrency: int = 1
) -> Any:
    """The PreparedBatch of the BatchTest in a workload `directory` (its manifests and
    graph module) over `cases_file` (an absolute path)."""
    from wtb.api.batchtest import DatasetSpec
    from wtb.manifests import load_manifests
    from wtb.pipeline.prepare import prepare

    _on_path(directory)
    manifests = load_manifests([str(directory)])
    batch, source = manifests.batchtests[0]
    workflow, wf_source = manifests.workflow_for(batch, source)
    spec = batch.spec.model_copy(
        update={
            "dataset": DatasetSpec(path=str(cases_file)),
            "repeats": repeats,
            "concurrency": concurrency,
        }
    )
    return prepare(
        batch.model_copy(update={"spec": spec}),
        workflow,
        base_dir=source.base_dir,
        where=source.where("BatchTest", batch.metadata.name),
        workflow_where=wf_source.where("Workflow", workflow.metadata.name),
        python_path=(str(directory),),
    )


def check_complete(store: Any, outcome: Any, total: int) -> None:
    """Stop the benchmark when a measured run did not record every cell successfully:
    its time would not be comparable."""
    failed = store.progress(outcome.run_id).failed
    if outcome.recorded_now != total or failed:
        raise SystemExit(f"WTB recorded {outcome.recorded_now}/{total} cells, {failed} failed")


@dataclass(frozen=True)
class Spread:
    """Median and range of repeated measurements (ratios, seconds, ...)."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))

    def show(self, fmt: str = ".2f") -> str:
        return f"{self.median:{fmt}} ({self.low:{fmt}}-{self.high:{fmt}})"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table, columns padded to their widest cell."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)
