"""Failed cells grouped in the database: per combination, by (error type, node, first line
of the message), largest groups first, each with one example.

One statement, portable across SQLite and PostgreSQL: the cells of the run that failed are
grouped (the first line of the message cut with the database's own string functions), the
groups of each combination ranked with a window function (largest first, then by error
type and message), and only the first `per_combination` of each come back, joined with
their example cell (the first one recorded) and the traceback of that cell's last attempt.
The number of groups and cells left out per combination comes with them. Interrupted
cells (waiting for a human, `interrupted`) are not failures and are not grouped here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, case, func, literal, select

from wtb.storage.aggregates import combination_of
from wtb.storage.schema import attempts, cells
from wtb.variant_matrix import combination_label

_CELLS = cells.c
_ATTEMPTS = attempts.c


@dataclass(frozen=True, slots=True)
class FailureGroup:
    """Failed cells of one combination that failed the same way, with one example."""

    combo_key: str
    label: str
    """The combination's label (`wtb.variant_matrix.combination_label`)."""
    error_type: str
    node: str | None
    """The node the cells failed in ("parent/child" in a subgraph); None outside nodes."""
    message: str
    """The first line of the error message (every cell of the group has it)."""
    count: int
    example_case: str
    example_cell: str
    example_message: str
    """The example cell's whole (bounded) message."""
    example_traceback: str | None
    """The traceback of the example cell's last attempt (None: not recorded)."""


@dataclass(frozen=True, slots=True)
class LeftOut:
    """A combination's groups beyond the bound: how many, holding how many cells."""

    label: str
    groups: int
    cells: int


@dataclass(frozen=True, slots=True)
class StoredFailures:
    groups: list[FailureGroup]
    """Per combination (by combo_key), largest group first."""
    left_out: dict[str, LeftOut]
    """Per combo_key whose groups were cut."""


def _first_line(conn: Connection, text: ColumnElement[Any]) -> ColumnElement[Any]:
    """The text up to its first newline, in this database's dialect."""
    newline = func.chr(10) if conn.dialect.name == "postgresql" else func.char(10)
    position = (
        func.strpos(text, newline)
        if conn.dialect.name == "postgresql"
        else func.instr(text, newline)
    )
    return case((position > 0, func.substr(text, 1, position - 1)), else_=text)


def failure_groups(conn: Connection, run_id: int, per_combination: int) -> StoredFailures:
    """The run's failed cells grouped per combination, at most `per_combination` groups each."""
    if per_combination < 1:
        raise ValueError(f"per_combination is at least 1, got {per_combination}")
    # The expressions first, the grouping over their columns: PostgreSQL would not take a
    # GROUP BY expression whose bound parameters differ from those in the select list.
    failed = (
        select(
            _CELLS.id,
            _CELLS.combo_key,
            func.coalesce(_CELLS.error_type, literal("")).label("error_type"),
            _CELLS.error_node.label("node"),
            _first_line(conn, func.coalesce(_CELLS.error_message, literal(""))).label("message"),
        )
        .where(_CELLS.run_id == run_id, _CELLS.status == "failed")
        .subquery("failed")
    )
    f = failed.c
    grouped = (
        select(
            f.combo_key,
            f.error_type,
            f.node,
            f.message,
            func.count().label("n"),
            func.min(f.id).label("example_id"),
        )
        .group_by(f.combo_key, f.error_type, f.node, f.message)
        .subquery("grouped")
    )
    g = grouped.c
    ranked = select(
        g.combo_key,
        g.error_type,
        g.node,
        g.message,
        g.n,
        g.example_id,
        func.row_number()
        .over(
            partition_by=g.combo_key,
            order_by=(g.n.desc(), g.error_type, g.message, g.example_id),
        )
        .label("rank"),
        func.count().over(partition_by=g.combo_key).label("groups"),
        func.sum(g.n).over(partition_by=g.combo_key).label("cells"),
    ).subquery("ranked")
    r = ranked.c
    last_traceback = (
        select(_ATTEMPTS.traceback)
        .where(_ATTEMPTS.run_id == run_id, _ATTEMPTS.cell_key == _CELLS.cell_key)
        .order_by(_ATTEMPTS.number.desc())
        .limit(1)
        .scalar_subquery()
    )
    stmt = (
        select(
            r.combo_key,
            _CELLS.combination,
            r.error_type,
            r.node,
            r.message,
            r.n,
            r.groups,
            r.cells,
            _CELLS.case_id,
            _CELLS.cell_key,
            _CELLS.error_message,
            last_traceback,
        )
        .join_from(ranked, cells, _CELLS.id == r.example_id)
        .where(r.rank <= per_combination)
        .order_by(r.combo_key, r.rank)
    )
    groups: list[FailureGroup] = []
    shown: dict[str, tuple[int, int, int, int]] = {}
    labels: dict[str, str] = {}
    for row in conn.execute(stmt):
        (
            combo_key,
            combination,
            error_type,
            node,
            first_line,
            count,
            total_groups,
            total_cells,
            case_id,
            cell_key,
            full,
            traceback,
        ) = tuple(row)
        groups.append(
            FailureGroup(
                combo_key=combo_key,
                label=labels.setdefault(combo_key, combination_label(combination_of(combination))),
                error_type=error_type,
                node=node,
                message=first_line or "",
                count=int(count),
                example_case=case_id,
                example_cell=cell_key,
                example_message=full or "",
                example_traceback=traceback,
            )
        )
        n_groups, n_cells, seen_groups, seen_cells = shown.get(
            combo_key, (int(total_groups), int(total_cells), 0, 0)
        )
        shown[combo_key] = (n_groups, n_cells, seen_groups + 1, seen_cells + int(count))
    left_out = {
        combo_key: LeftOut(labels[combo_key], n_groups - seen_groups, n_cells - seen_cells)
        for combo_key, (n_groups, n_cells, seen_groups, seen_cells) in shown.items()
        if n_groups > seen_groups
    }
    return StoredFailures(groups, left_out)
