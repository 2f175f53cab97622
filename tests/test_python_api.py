"""The Python API: `wtb.run` and `wtb.load` in this process, `RunResults` and its DataFrame,
and `import wtb` staying cheap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import wtb
from toybatch import TOY
from wtb.errors import WtbError


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, wtb.RunResults]:
    db = f"sqlite:///{tmp_path_factory.mktemp('api') / 'api.db'}"
    results = wtb.run(TOY, database=db, concurrency=3)
    assert len(results) == 1
    return db, results[0]


def test_run_gives_the_matrix_and_the_cells(ran: tuple[str, wtb.RunResults]) -> None:
    _, results = ran
    assert results.run_key.startswith("default/toy-answers:")
    verdicts = {row.label: row.verdict for row in results.matrix.rows}
    assert verdicts == {
        "answer=original": "baseline",
        "answer=async": "no significant difference",
        "answer=reversed": "worse",
    }
    cells = list(results.cells())
    assert len(cells) == 120
    assert {c.status for c in cells} == {"succeeded"}
    assert len({c.cell_key for c in cells}) == 120
    assert repr(results) == f"RunResults({results.run_key!r}, 3 combinations)"


def test_load_by_name_or_run_key(ran: tuple[str, wtb.RunResults]) -> None:
    db, results = ran
    by_name = wtb.load("toy-answers", database=db)
    assert by_name.run_key == results.run_key
    assert by_name.matrix == results.matrix
    by_key = wtb.load(results.run_key, database=db)
    assert by_key.matrix == results.matrix
    assert wtb.load("default/toy-answers", database=db).run_key == results.run_key
    assert wtb.load("toy-answers", database=db, namespace="default").run_key == results.run_key
    with pytest.raises(WtbError, match="no stored run is 'toy-answers' in namespace 'other'"):
        wtb.load("toy-answers", database=db, namespace="other")
    # Running again resumes the recorded run: nothing new, the same results.
    again = wtb.run([str(TOY)], database=db)
    assert [r.run_key for r in again] == [results.run_key]
    assert sum(1 for _ in again[0].cells()) == 120


def test_to_pandas(ran: tuple[str, wtb.RunResults]) -> None:
    _, results = ran
    frame = results.to_pandas()
    assert frame.shape[0] == 120
    assert list(frame.columns[:4]) == ["run", "cell", "combination", "combination.answer"]
    means = frame.groupby("combination.answer")["metric.correct"].mean().to_dict()
    assert means == {"original": 1.0, "async": 1.0, "reversed": 0.0}
    assert set(frame["status"]) == {"succeeded"}
    assert frame["finished_at"].dt.tz is not None


def test_to_pandas_without_pandas_names_the_extra(
    ran: tuple[str, wtb.RunResults], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, results = ran
    for module in [m for m in sys.modules if m == "pandas" or m.startswith("pandas.")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"wtb\[pandas\]"):
        results.to_pandas()


def test_run_refuses_what_wtb_run_refuses(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(WtbError, match="no BatchTest among the files given"):
        wtb.run(tmp_path / "empty.yaml", database=f"sqlite:///{tmp_path / 'x.db'}")


def test_import_wtb_stays_light() -> None:
    code = (
        "import sys, wtb\n"
        "heavy = {'langgraph', 'sqlalchemy', 'pydantic', 'click', 'rich'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
        "wtb.load\n"
        "print('wtb.python_api' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded, api = done.stdout.splitlines()
    assert loaded == "[]"
    assert api == "True"
    assert {"run", "load", "RunResults"} <= set(wtb.__all__)
