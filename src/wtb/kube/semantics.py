"""The checks the operator (and its admission webhook) make on a BatchTest without running
user code: the spec itself, and its references to the Workflow. Imports of user code
(graph factory, variant and evaluator paths) are checked by the batch driver, in the
workflow's image."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wtb.api.batchtest import BatchTest
from wtb.api.workflow import ORIGINAL, Workflow
from wtb.errors import ManifestError, ManifestErrors
from wtb.evaluators.builtin import check_builtin_evaluators
from wtb.manifests import Source, parse_resource
from wtb.plan import build_plan


def _resource_doc(body: dict[str, Any]) -> dict[str, Any]:
    """The parts of an API object the models read (status is WTB's own)."""
    return {k: body[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in body}


def where_of(kind: str, namespace: str, name: str) -> str:
    return f"{kind} {namespace}/{name}"


@dataclass(frozen=True)
class _ApiObject(Source):
    """An object read from the API server: errors name it by kind, namespace and name."""

    namespace: str = ""

    def where(self, kind: str = "", name: str = "") -> str:
        return where_of(kind, self.namespace, name)


def _source(body: dict[str, Any]) -> _ApiObject:
    namespace = str((body.get("metadata") or {}).get("namespace", ""))
    return _ApiObject(file="", document=1, base_dir=Path(), namespace=namespace)


def parse_batchtest(body: dict[str, Any]) -> BatchTest:
    """The typed BatchTest of an API object, with the spec's own consistency checked;
    ManifestErrors names every field that is wrong."""
    meta = body.get("metadata") or {}
    where = where_of("BatchTest", meta.get("namespace", ""), meta.get("name", ""))
    resource = parse_resource(_resource_doc(body), _source(body))
    if not isinstance(resource, BatchTest):
        raise ManifestErrors([ManifestError("not a BatchTest", where=where)])
    spec = resource.spec
    problems: list[ManifestError] = []
    try:
        build_plan(spec, [], where=f"{where}: spec")
    except ManifestError as exc:
        problems.append(exc)
    try:
        check_builtin_evaluators(spec.evaluators, where=f"{where}: spec.evaluators")
    except ManifestError as exc:
        problems.append(exc)
    if problems:
        raise ManifestErrors(problems)
    return resource


def parse_workflow(body: dict[str, Any]) -> Workflow:
    resource = parse_resource(_resource_doc(body), _source(body))
    if not isinstance(resource, Workflow):
        meta = body.get("metadata") or {}
        where = where_of("Workflow", meta.get("namespace", ""), meta.get("name", ""))
        raise ManifestErrors([ManifestError("not a Workflow", where=where)])
    return resource


def declared_nodes(workflow: Workflow) -> list[str] | None:
    """The graph's node names when the resource declares them; None for a graph factory
    (its nodes are known only by importing it)."""
    graph = workflow.spec.graph
    return None if graph.factory is not None else [n.name for n in graph.nodes]


def check_references(batch: BatchTest, workflow: Workflow) -> list[ManifestError]:
    """What in `batch` does not fit `workflow`: matrix and fixed nodes and variants, by
    field. A `parent/child` node inside a subgraph is checked as far as the resource tells:
    its parent, when the graph is declared."""
    meta = batch.metadata
    where = where_of("BatchTest", meta.namespace, meta.name)
    nodes = declared_nodes(workflow)
    problems: list[ManifestError] = []
    wf = f"Workflow {workflow.metadata.name!r}"
    chosen = [
        *(
            (f"matrix.{node}", node, [(f"matrix.{node}[{i}]", v) for i, v in enumerate(vs)])
            for node, vs in batch.spec.matrix.items()
        ),
        *(
            (f"fixed.{node}", node, [(f"fixed.{node}", v)])
            for node, v in (batch.spec.fixed or {}).items()
        ),
    ]
    for field, node, variants in chosen:
        if field.startswith("matrix") and workflow.spec.is_setting(node):
            known = [c.name for c in (workflow.spec.settings or {}).get(node, [])]
            problems.extend(
                ManifestError(
                    f"setting {node!r} has no choice {choice!r} in {wf}",
                    where=f"{where}: spec.{vfield}",
                    fix=f"use `{ORIGINAL}` (the setting left out) or one of: {', '.join(known)}",
                )
                for vfield, choice in variants
                if choice != ORIGINAL and choice not in known
            )
            continue
        if nodes is not None and node.split("/", 1)[0] not in nodes:
            problems.append(
                ManifestError(
                    f"{field.split('.')[0]} names node {node!r}, which {wf} does not have",
                    where=f"{where}: spec.{field}",
                    fix=f"use one of the graph's nodes: {', '.join(nodes)}",
                )
            )
            continue
        known = [v.name for v in workflow.spec.variants.get(node, [])]
        for vfield, variant in variants:
            if variant != ORIGINAL and variant not in known:
                problems.append(
                    ManifestError(
                        f"node {node!r} has no variant {variant!r} in {wf}",
                        where=f"{where}: spec.{vfield}",
                        fix=_variant_fix(field.startswith("matrix"), known)
                        + f"add the variant to {wf}'s spec.variants.{node}",
                    )
                )
    return problems


def _variant_fix(original_allowed: bool, known: list[str]) -> str:
    """The start of a fix for an unknown variant: what may be named instead (`original`
    only in the matrix: a fixed node runs a variant)."""
    one_of = f"one of: {', '.join(known)}" if known else ""
    if original_allowed:
        return f"use `{ORIGINAL}`" + (f" or {one_of}" if one_of else "") + ", or "
    return f"use {one_of}, or " if one_of else ""


def summary(errors: list[ManifestError]) -> str:
    """One message for a condition, an event or an admission response."""
    return "; ".join(
        e.render().replace("\n  fix:", " (fix:") + (")" if e.fix else "") for e in errors
    )
