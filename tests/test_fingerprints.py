"""What a cell's fingerprint covers (docs/reruns.md): its combination's code, its node
settings (variants' specs, factory config, subgraph variants, setting axes, `invoke`,
`fixed`, `isolation`), its case and repeat; not limits, evaluators or `expected`. The code
is followed through local imports only. On the agent fixture (a subgraph, factories)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from wtb.api.batchtest import BatchTestSpec
from wtb.api.workflow import WorkflowSpec
from wtb.domain import Case
from wtb.plan import build_plan
from wtb.runs.fingerprints import CodeIndex, Fingerprinter, _absolute, import_roots

AGENT = Path(__file__).parent / "fixtures" / "agent"


@pytest.fixture(autouse=True)
def _agent_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(AGENT))


def _workflow() -> dict[str, Any]:
    workflow: dict[str, Any] = yaml.safe_load((AGENT / "workflow.yaml").read_text())["spec"]
    workflow["settings"] = {
        "model": [
            {"name": "small", "invoke": {"configurable": {"model": "s"}}},
            {"name": "large", "invoke": {"configurable": {"model": "l"}}},
        ]
    }
    return workflow


def _batch(**spec: Any) -> dict[str, Any]:
    return {
        "workflowRef": {"name": "agent"},
        "matrix": {
            "research/search": ["original", "web", "bing"],
            "model": ["small", "large"],
        },
        "baseline": {"research/search": "original", "model": "small"},
        "dataset": {"cases": [{"inputs": {"question": "why"}}]},
        "evaluators": [{"name": "n", "type": "latency"}],
        "primaryMetric": "n",
        **spec,
    }


CASES = [
    Case(id="a", inputs={"question": "why"}, expected={"answer": "x"}),
    Case(id="b", inputs={"question": "how"}),
]


def _prints(
    workflow: dict[str, Any], batch: dict[str, Any], cases: list[Case] = CASES
) -> tuple[str, dict[tuple[str, str, str], str]]:
    """The run's code fingerprint, and per (search variant, model, case) the cell's."""
    wf = WorkflowSpec.model_validate(workflow)
    bt = BatchTestSpec.model_validate(batch)
    import_roots(wf, bt)
    fingerprinter = Fingerprinter(wf, bt, cases, (str(AGENT),))
    plan = build_plan(bt, cases)
    cells = {
        (dict(c.combination)["research/search"], dict(c.combination)["model"], c.case_id): (
            fingerprinter.cell(c)
        )
        for c in plan.iter_cells()
    }
    return fingerprinter.code, cells


def _changed(
    before: dict[tuple[str, str, str], str], after: dict[tuple[str, str, str], str]
) -> set[tuple[str, str, str]]:
    assert before.keys() == after.keys()
    return {k for k in before if before[k] != after[k]}


def test_limits_evaluators_and_expected_are_not_part_of_a_cell() -> None:
    code, cells = _prints(_workflow(), _batch())
    assert len(set(cells.values())) == len(cells) == 12
    limits = _batch(
        timeoutSeconds=5,
        concurrency=1,
        retry={"maxAttempts": 5},
        evaluators=[{"name": "m", "type": "tokens"}],
        primaryMetric="m",
        alpha=0.01,
    )
    relabelled = [Case(id="a", inputs={"question": "why"}, expected={"answer": "y"}), CASES[1]]
    again_code, again = _prints(_workflow(), limits, relabelled)
    assert again_code == code
    assert again == cells


def test_node_settings_are_part_of_the_cells_that_use_them() -> None:
    code, cells = _prints(_workflow(), _batch())

    bing = _workflow()
    bing["variants"]["research/search"][1]["config"] = {"engine": "duck"}
    bing_code, after = _prints(bing, _batch())
    assert bing_code == code  # the same code, called otherwise
    assert {k[0] for k in _changed(cells, after)} == {"bing"}
    assert len(_changed(cells, after)) == 4

    model = _workflow()
    model["settings"]["model"][1]["invoke"] = {"configurable": {"model": "xl"}}
    assert {k[1] for k in _changed(cells, _prints(model, _batch())[1])} == {"large"}

    subgraph = _batch(fixed={"research": "deep"})
    assert len(_changed(cells, _prints(_workflow(), subgraph)[1])) == 12

    for spec in ({"isolation": "cell"}, {"invoke": {"configurable": {"k": 1}}}):
        assert len(_changed(cells, _prints(_workflow(), _batch(**spec))[1])) == 12

    inputs = [CASES[0], Case(id="b", inputs={"question": "when"})]
    assert {k[2] for k in _changed(cells, _prints(_workflow(), _batch(), inputs)[1])} == {"b"}

    wf, bt = (
        WorkflowSpec.model_validate(_workflow()),
        BatchTestSpec.model_validate(_batch(repeats=2)),
    )
    fingerprinter = Fingerprinter(wf, bt, CASES, (str(AGENT),))
    repeated = [fingerprinter.cell(c) for c in build_plan(bt, CASES).iter_cells()]
    assert len(set(repeated)) == len(repeated) == 24  # every repeat is a cell of its own


def test_code_follows_local_imports_only() -> None:
    index = CodeIndex((str(AGENT),), ["agentflow.app"])
    assert index.closure(["agentflow.app"]) == ["agentflow", "agentflow.app"]
    assert not index.is_local("langgraph.graph")
    assert not index.is_local("wtb")
    assert not index.is_local("json")
    assert index.fingerprint(["agentflow.app"]) == CodeIndex((), ["agentflow.app"]).fingerprint(
        ["agentflow.app"]
    )


def test_relative_imports_resolve_against_their_package() -> None:
    assert _absolute("x", 1, "pkg.sub") == "pkg.sub.x"
    assert _absolute(None, 2, "pkg.sub") == "pkg"
    assert _absolute("y", 0, "pkg") == "y"
    assert _absolute("z", 4, "pkg") is None


def test_the_code_of_a_workflow_changes_its_fingerprint(tmp_path: Path) -> None:
    copied = tmp_path / "agent"
    copied.mkdir()
    (copied / "helper.py").write_text("X = 1\n")
    (copied / "flow.py").write_text("import helper\nfrom json import dumps\n")
    sys.path.insert(0, str(copied))
    try:
        importlib.import_module("flow")
        first = CodeIndex((str(copied),), ["flow"]).fingerprint(["flow"])
        (copied / "helper.py").write_text("X = 2\n")
        assert CodeIndex((str(copied),), ["flow"]).fingerprint(["flow"]) != first
        assert CodeIndex((str(copied),), ["flow"]).closure(["flow"]) == ["flow", "helper"]
    finally:
        sys.path.remove(str(copied))
        for name in ("flow", "helper"):
            sys.modules.pop(name, None)
