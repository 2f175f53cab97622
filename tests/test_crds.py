"""The generated CRDs: committed files up to date, structural for Kubernetes 1.20, and in
agreement with the models (what the models accept, the schema accepts, and the other way
round for types, enums, patterns and bounds).

The API server is emulated by the steps it takes on a write that matter here: nulls of
non-nullable fields pruned, defaults applied, then the OpenAPI v3.0 schema checked (with
`jsonschema`, Draft 4 semantics: boolean exclusive bounds). Unknown fields are refused, as
kubectl's client-side validation does.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wtb.api import (
    API_VERSION,
    RESOURCE_KINDS,
    BatchTestStatus,
    ComparisonMatrix,
    Condition,
    ExecutionStatus,
)
from wtb.api.comparison import DeltaSummary, Interval, LatencySummary, MatrixRow
from wtb.api.execution import CheckpointRef
from wtb.api.workflow import NodeVariantsStatus, WorkflowStatus
from wtb.cli.main import cli
from wtb.crds import (
    HEADER,
    KINDS,
    CrdSchemaError,
    build_crds,
    render_crd_yaml,
    render_reference,
    structural_schema,
    write_crds,
)

ROOT = Path(__file__).resolve().parents[1]
CRDS = build_crds()
Schema = dict[str, Any]


def openapi_schema(kind: str) -> Schema:
    for crd in CRDS.values():
        if crd["spec"]["names"]["kind"] == kind:
            schema: Schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            return schema
    raise KeyError(kind)


# --- the API server's write path, emulated -------------------------------------------------


def to_jsonschema(node: Schema) -> Schema:
    """An apiextensions v1 schema as a Draft 4 JSON Schema with unknown fields refused."""
    out = {k: v for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if "properties" in node:
        out["properties"] = {k: to_jsonschema(v) for k, v in node["properties"].items()}
        out["additionalProperties"] = False
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = to_jsonschema(node["additionalProperties"])
    if "items" in node:
        out["items"] = to_jsonschema(node["items"])
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if node.get("nullable"):
        out["type"] = [node["type"], "null"]
    return out


def prune_and_default(value: Any, schema: Schema) -> Any:
    """Drop nulls of non-nullable fields without a default, then apply defaults."""
    if isinstance(value, dict) and "properties" in schema:
        out = {}
        for key, item in value.items():
            prop = schema["properties"].get(key)
            if prop is None:
                out[key] = item
            elif item is not None or prop.get("nullable"):
                out[key] = prune_and_default(item, prop)
        for key, prop in schema["properties"].items():
            if key not in out and "default" in prop:
                out[key] = prop["default"]
        return out
    if isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        return {k: prune_and_default(v, schema["additionalProperties"]) for k, v in value.items()}
    if isinstance(value, list) and "items" in schema:
        return [prune_and_default(v, schema["items"]) for v in value]
    return value


def api_server_errors(manifest: dict[str, Any]) -> list[str]:
    """What the emulated API server says about a write of `manifest` ([] when accepted)."""
    schema = openapi_schema(manifest["kind"])
    stored = prune_and_default(copy.deepcopy(manifest), schema)
    validator = jsonschema.Draft4Validator(to_jsonschema(schema))
    return [
        f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(stored)
    ]


def model_accepts(manifest: dict[str, Any]) -> bool:
    try:
        RESOURCE_KINDS[manifest["kind"]].model_validate(manifest)
    except ValidationError:
        return False
    return True


# --- sample manifests ------------------------------------------------------------------------


def sample_workflow() -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Workflow",
        "metadata": {"name": "rag", "namespace": "team-a"},
        "spec": {
            "image": "registry.example/rag:1.0",
            "graph": {
                "state": "rag.graph:State",
                "nodes": [
                    {"name": "retrieve", "path": "rag.nodes:retrieve"},
                    {"name": "generate", "path": "rag.nodes:generate"},
                ],
                "edges": [
                    {"from": "__start__", "to": ["retrieve"]},
                    {"from": "retrieve", "to": ["generate", "__end__"], "router": "rag.r:route"},
                    {"from": "generate", "to": ["__end__"]},
                ],
            },
            "variants": {
                "retrieve": [
                    {"name": "bm25", "path": "rag.variants:bm25"},
                    {
                        "name": "dense",
                        "path": "rag.variants:make_dense",
                        "factory": True,
                        "config": {"k": 5, "model": {"name": "e5", "dims": [384]}},
                        "description": "embedding search",
                    },
                ]
            },
        },
    }


def sample_batchtest() -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "BatchTest",
        "metadata": {"name": "rag-retrievers"},
        "spec": {
            "workflowRef": {"name": "rag"},
            "matrix": {"retrieve": ["original", "bm25", "dense"], "generate": ["original"]},
            "exclude": [{"retrieve": "bm25"}],
            "baseline": {"retrieve": "original", "generate": "original"},
            "dataset": {
                "cases": [
                    {"id": "q1", "inputs": {"question": "2+2?"}, "expected": {"answer": "4"}},
                    {"inputs": {"question": "capital of France?", "tags": ["geo"]}},
                ]
            },
            "repeats": 3,
            "evaluators": [
                {"name": "correct", "type": "exactMatch", "output": "answer", "ignoreCase": True},
                {"name": "close", "type": "numeric", "output": "n", "tolerance": 0.5},
                {"name": "judge", "type": "python", "path": "rag.evals:Judge", "config": {"t": 1}},
                {"name": "latency", "type": "latency"},
            ],
            "primaryMetric": "correct",
            "concurrency": 16,
            "timeoutSeconds": 60,
            "retry": {"maxAttempts": 5, "transientErrors": ["httpx:ReadTimeout"]},
            "alpha": 0.1,
        },
    }


def sample_execution() -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Execution",
        "metadata": {"name": "debug-1"},
        "spec": {
            "workflowRef": {"name": "rag"},
            "variants": {"retrieve": "dense"},
            "inputs": {"question": "2+2?", "history": [{"role": "user", "text": "hi"}]},
            "breakpoints": ["generate"],
            "suspend": True,
            "fork": {"checkpointId": "cp-3", "stateUpdate": {"docs": []}},
        },
    }


SAMPLES = {
    "Workflow": sample_workflow,
    "BatchTest": sample_batchtest,
    "Execution": sample_execution,
}


def status_of(kind: str) -> dict[str, Any]:
    """A full status as WTB writes it (nulls included), for each kind."""
    condition = Condition(
        type="Ready", status="True", reason="Validated", last_transition_time="2026-01-01T00:00:00Z"
    )
    row = MatrixRow(
        combination={"retrieve": "dense"},
        label="retrieve=dense",
        runs=6,
        succeeded=5,
        success_rate=Interval(value=0.83, low=0.44, high=0.97, n=6),
        latency_ms=LatencySummary(p50=12.5, p95=None),
        tokens=120,
        metrics={"correct": Interval(value=0.5, n=2), "latency": Interval()},
        delta=DeltaSummary(mean=0.1, n=2, p_value=0.2, p_adjusted=0.4),
        verdict="no significant difference",
    )
    status: BaseModel
    if kind == "BatchTest":
        matrix = ComparisonMatrix(
            primary_metric="correct",
            higher_is_better=True,
            baseline="retrieve=original",
            combinations=3,
            rows=[row],
        )
        status = BatchTestStatus(
            phase="Running",
            progress="5/18",
            best="retrieve=dense",
            matrix=matrix,
            conditions=[condition],
        )
    elif kind == "Execution":
        status = ExecutionStatus(
            phase=None,
            current_node="generate",
            checkpoints=[CheckpointRef(id="cp-1", node=None, step=0, created_at="t0")],
            output={"answer": 4, "trace": [1, {"x": None}]},
            conditions=[condition],
        )
    else:
        status = WorkflowStatus(
            phase="Ready", nodes=[NodeVariantsStatus(node="retrieve", variants=["bm25"])]
        )
    dumped: dict[str, Any] = status.model_dump(by_alias=True, mode="json")
    return dumped


# --- (a) the committed files are what the models generate ----------------------------------


@pytest.mark.parametrize("name", sorted(CRDS))
def test_committed_crd_matches_models(name: str) -> None:
    committed = ROOT / "crds" / name
    assert committed.exists(), f"crds/{name} is missing: run `wtb crds`"
    assert committed.read_text(encoding="utf-8") == render_crd_yaml(CRDS[name]), (
        f"crds/{name} differs from what the models in wtb.api generate: run `wtb crds`"
    )


def test_no_stale_crd_files() -> None:
    assert sorted(p.name for p in (ROOT / "crds").glob("*.yaml")) == sorted(CRDS)


def test_committed_reference_matches_models() -> None:
    committed = (ROOT / "docs" / "resources.md").read_text(encoding="utf-8")
    assert committed == render_reference(CRDS), (
        "docs/resources.md differs from the models: run `wtb crds --reference docs/resources.md`"
    )


def test_rendering_is_yaml_of_the_manifest_with_header() -> None:
    for crd in CRDS.values():
        text = render_crd_yaml(crd)
        assert text.startswith(HEADER)
        assert yaml.safe_load(text) == crd
        assert text == render_crd_yaml(copy.deepcopy(crd))


def test_write_crds_and_module_entry_point(tmp_path: Path) -> None:
    written = write_crds(tmp_path / "out")
    assert [p.name for p in written] == list(CRDS)
    for path in written:
        assert path.read_text(encoding="utf-8") == render_crd_yaml(CRDS[path.name])
    result = CliRunner().invoke(
        cli,
        [
            "crds",
            "-o",
            str(tmp_path / "again"),
            "--reference",
            str(tmp_path / "docs" / "resources.md"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == sorted(CRDS)
    assert (tmp_path / "docs" / "resources.md").read_text(encoding="utf-8") == render_reference(
        CRDS
    )


def test_names_and_versions() -> None:
    expected = {"Workflow": ["wf"], "BatchTest": ["bt"], "Execution": ["wfx"]}
    for name, crd in CRDS.items():
        spec = crd["spec"]
        names = spec["names"]
        assert name == f"wtb.dev_{names['plural']}.yaml"
        assert crd["metadata"]["name"] == f"{names['plural']}.wtb.dev"
        assert spec["group"] == "wtb.dev"
        assert spec["scope"] == "Namespaced"
        assert names["shortNames"] == expected[names["kind"]]
        assert names["listKind"] == names["kind"] + "List"
        assert names["singular"] == names["kind"].lower()
        assert names["categories"] == ["wtb"]
        (version,) = spec["versions"]
        assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
        assert version["subresources"] == {"status": {}}
    assert sorted(c["spec"]["names"]["kind"] for c in CRDS.values()) == sorted(RESOURCE_KINDS)


# --- (b) structural for Kubernetes 1.20 ------------------------------------------------------

FORBIDDEN = {
    "$ref", "$defs", "$schema", "definitions", "dependencies", "deprecated", "discriminator",
    "id", "patternProperties", "readOnly", "writeOnly", "xml", "title", "const",
    "x-kubernetes-validations",
}  # fmt: skip
JUNCTORS = ("anyOf", "oneOf", "allOf", "not")
TYPES = {"object", "array", "string", "integer", "number", "boolean"}


def schema_nodes(node: Schema, path: str) -> Iterator[tuple[str, Schema, bool]]:
    """(path, node, inside a value validation) for every node of a schema."""
    yield path, node, False
    for name, child in node.get("properties", {}).items():
        yield from schema_nodes(child, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from schema_nodes(node["additionalProperties"], f"{path}.*")
    if "items" in node:
        yield from schema_nodes(node["items"], f"{path}[]")
    for junctor in JUNCTORS:
        subs = node.get(junctor, [])
        for i, sub in enumerate(subs if isinstance(subs, list) else [subs]):
            for sub_path, sub_node, _ in schema_nodes(sub, f"{path}.{junctor}[{i}]"):
                yield sub_path, sub_node, True


def structural_violations(root: Schema) -> list[str]:
    problems = []
    for path, node, in_junctor in schema_nodes(root, "openAPIV3Schema"):
        problems += [f"{path}: {key} is not allowed" for key in FORBIDDEN & set(node)]
        if in_junctor:
            banned = {"type", "properties", "items", "additionalProperties", "default", "nullable"}
            banned |= {"description"}
            problems += [f"{path}: {key} inside {JUNCTORS}" for key in banned & set(node)]
            continue
        untyped_ok = node.get("x-kubernetes-preserve-unknown-fields") or node.get(
            "x-kubernetes-int-or-string"
        )
        if "type" not in node and not untyped_ok:
            problems.append(f"{path}: no type")
        if "type" in node and node["type"] not in TYPES:
            problems.append(f"{path}: type {node['type']!r}")
        if node.get("nullable") and "type" not in node:
            problems.append(f"{path}: nullable without a type")
        if node.get("nullable") and "enum" in node:
            problems.append(f"{path}: nullable enum (the API server refuses null for it)")
        extra = node.get("additionalProperties")
        if isinstance(extra, bool):
            problems.append(f"{path}: additionalProperties: {extra}")
        if extra is not None and "properties" in node:
            problems.append(f"{path}: properties and additionalProperties together")
        if node.get("uniqueItems"):
            problems.append(f"{path}: uniqueItems: true")
        if node.get("type") == "array" and "items" not in node:
            problems.append(f"{path}: array without items")
        missing = set(node.get("required", [])) - set(node.get("properties", {}))
        if missing:
            problems.append(f"{path}: required names no property: {sorted(missing)}")
        if "default" in node and not isinstance(node["default"], str | int | float | bool):
            problems.append(f"{path}: non-scalar default")
    metadata = root["properties"]["metadata"]
    if metadata != {"type": "object"}:
        problems.append(f"metadata may only be typed at the root: {metadata}")
    return problems


@pytest.mark.parametrize("kind", sorted(RESOURCE_KINDS))
def test_schema_is_structural(kind: str) -> None:
    assert structural_violations(openapi_schema(kind)) == []


def test_structural_check_catches_violations() -> None:
    bad = {
        "type": "object",
        "properties": {
            "metadata": {"type": "object"},
            "a": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "b": {"nullable": True, "x-kubernetes-preserve-unknown-fields": True},
            "c": {"type": "object", "properties": {}, "additionalProperties": False},
            "d": {"type": "string", "title": "D", "x-kubernetes-validations": []},
            "e": {"type": "string", "enum": ["x"], "nullable": True},
        },
    }
    problems = "\n".join(structural_violations(bad))
    for expected in (
        "openAPIV3Schema.a: no type",
        "a.anyOf[0]: type inside",
        "b: nullable without a type",
        "c: additionalProperties: False",
        "d: title is not allowed",
        "d: x-kubernetes-validations is not allowed",
        "e: nullable enum",
    ):
        assert expected in problems


def _invoke_fields(parent: str) -> list[str]:
    """The free-form maps of an `invoke` block (wtb.api.invocation) under `parent`."""
    return [f"{parent}.invoke.{name}" for name in ("configurable", "context", "metadata")]


def test_free_form_fields_only_where_the_model_is_free_form() -> None:
    preserved = {
        kind: sorted(
            path
            for path, node, _ in schema_nodes(openapi_schema(kind), "")
            if node.get("x-kubernetes-preserve-unknown-fields")
        )
        for kind in RESOURCE_KINDS
    }
    assert preserved == {
        "Workflow": [
            *_invoke_fields(".spec"),
            *_invoke_fields(".spec.settings.*[]"),
            ".spec.variants.*[].config",
            *_invoke_fields(".spec.variants.*[]"),
        ],
        "BatchTest": [
            ".spec.dataset.cases[].expected",
            ".spec.dataset.cases[].inputs",
            *_invoke_fields(".spec.dataset.cases[]"),
            ".spec.dataset.cases[].resume[]",
            ".spec.evaluators[].config",
            *_invoke_fields(".spec"),
        ],
        "Execution": [
            ".spec.fork.stateUpdate",
            ".spec.inputs",
            ".spec.stateUpdate",
            ".status.output",
        ],
    }


# --- the conversion, on small models ------------------------------------------------------


class Inner(BaseModel):
    """Model docstring."""

    x: int


class Other(BaseModel):
    x: int
    y: str


class Loop(BaseModel):
    child: Loop | None = None


class Shapes(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inner: Inner = Field(description="Field description wins.")
    maybe: Inner | None = None
    number: int | str
    either: Inner | Other
    anything: str | bool
    mixed: int | float
    free: dict[str, Any]
    fixed: Literal["only"] = "only"
    positive: float = Field(default=1.5, gt=0, lt=10)
    names: list[str] = Field(default_factory=lambda: ["a"], min_length=1)
    empty: str = ""
    none: str | None = None
    keyed: list[Inner] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["x"]},
    )


def test_conversion_of_each_shape() -> None:
    props = structural_schema(Shapes)["properties"]
    assert props["inner"] == {
        "type": "object",
        "description": "Field description wins.",
        "properties": {"x": {"type": "integer"}},
        "required": ["x"],
    }
    assert props["maybe"]["nullable"] is True
    assert props["maybe"]["properties"] == {"x": {"type": "integer"}}
    assert props["number"] == {"x-kubernetes-int-or-string": True}
    assert props["either"] == {
        "type": "object",
        "properties": {"x": {"type": "integer"}, "y": {"type": "string"}},
        "required": ["x"],
    }
    assert props["anything"] == {"x-kubernetes-preserve-unknown-fields": True}
    assert props["mixed"] == {"type": "number"}
    assert props["free"] == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    assert props["fixed"] == {"type": "string", "enum": ["only"], "default": "only"}
    assert props["positive"] == {
        "type": "number",
        "default": 1.5,
        "minimum": 0,
        "exclusiveMinimum": True,
        "maximum": 10,
        "exclusiveMaximum": True,
    }
    assert props["names"] == {"type": "array", "items": {"type": "string"}, "minItems": 1}
    assert props["empty"] == {"type": "string"}
    assert props["none"] == {"type": "string", "nullable": True}
    assert props["keyed"]["x-kubernetes-list-type"] == "map"
    assert props["keyed"]["x-kubernetes-list-map-keys"] == ["x"]
    assert "additionalProperties" not in structural_schema(Shapes)


class Recursive(BaseModel):
    loop: Loop


class Tupled(BaseModel):
    pair: tuple[int, str]


class Sets(BaseModel):
    tags: set[str]


@pytest.mark.parametrize(
    ("model", "message"),
    [(Recursive, "recursive"), (Tupled, "tuples"), (Sets, "uniqueItems")],
)
def test_unexpressible_models_are_refused(model: type[BaseModel], message: str) -> None:
    with pytest.raises(CrdSchemaError, match=message):
        structural_schema(model)


# --- (c) defaults --------------------------------------------------------------------------


def test_defaults_are_valid_against_their_schema() -> None:
    defaults = [
        (f"{kind}{path}", node)
        for kind in RESOURCE_KINDS
        for path, node, _ in schema_nodes(openapi_schema(kind), "")
        if "default" in node
    ]
    assert len(defaults) > 10, "expected the models' scalar defaults"
    for path, node in defaults:
        schema = to_jsonschema({k: v for k, v in node.items() if k != "default"})
        errors = list(jsonschema.Draft4Validator(schema).iter_errors(node["default"]))
        assert errors == [], f"{path}: default {node['default']!r}: {errors}"


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_api_server_defaults_give_the_models_defaults(kind: str) -> None:
    manifest = SAMPLES[kind]()
    if kind == "BatchTest":
        for key in ("concurrency", "timeoutSeconds", "retry", "alpha", "repeats"):
            del manifest["spec"][key]
        manifest["spec"]["retry"] = {}
    defaulted = prune_and_default(manifest, openapi_schema(kind))
    model = RESOURCE_KINDS[kind]
    assert model.model_validate(defaulted) == model.model_validate(manifest)
    if kind == "BatchTest":
        assert defaulted["spec"]["repeats"] == 1
        assert defaulted["spec"]["retry"]["maxAttempts"] == 3


# --- (d) manifests against the schema ------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_valid_samples_pass_models_and_schema(kind: str) -> None:
    manifest = SAMPLES[kind]()
    assert model_accepts(manifest)
    assert api_server_errors(manifest) == []


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_status_as_wtb_writes_it_is_accepted(kind: str) -> None:
    manifest = SAMPLES[kind]() | {"status": status_of(kind)}
    assert api_server_errors(manifest) == []


# (kind, dotted path to set, value, a word the API server's error holds)
WRONG = [
    ("BatchTest", "spec.repeats", "two", "is not of type"),
    ("BatchTest", "spec.repeats", 0, "less than the minimum"),
    ("BatchTest", "spec.timeoutSeconds", 0, "less than or equal to the minimum"),
    ("BatchTest", "spec.alpha", 0.5, "greater than or equal to the maximum"),
    ("BatchTest", "spec.evaluators.0.type", "bleu", "is not one of"),
    ("BatchTest", "spec.evaluators", [], "should be non-empty"),
    ("BatchTest", "spec.matrix", {}, "should be non-empty"),
    ("BatchTest", "spec.matrix.retrieve", "dense", "is not of type"),
    ("BatchTest", "spec.workflowRef.name", "Not_A_Name", "does not match"),
    ("BatchTest", "spec.dataset.format", "xml", "is not one of"),
    ("BatchTest", "spec.retry.maxAttempts", 21, "greater than the maximum"),
    ("BatchTest", "spec.repeat", 2, "Additional properties"),
    ("BatchTest", "spec.dataset.cases.0.inputs", ["q"], "is not of type"),
    ("Workflow", "spec.graph.nodes.0.path", "no-colon", "does not match"),
    ("Workflow", "spec.graph.edges.0.to", [], "should be non-empty"),
    ("Workflow", "spec.variants.retrieve.0.name", "1st", "does not match"),
    ("Workflow", "spec.variants.retrieve.0.config", "k=5", "is not of type"),
    ("Execution", "spec.suspend", "maybe", "is not of type"),
    ("Execution", "spec.timeoutSeconds", -1, "less than"),
    ("Execution", "spec.variants.retrieve", 3, "is not of type"),
    ("Execution", "spec.fork.checkpointId", None, "is a required property"),
    # Sizes: no list, map or string grows without limit.
    ("BatchTest", "spec.matrix", {f"n{i}": ["original"] for i in range(65)}, "too many"),
    ("BatchTest", "spec.matrix.retrieve", [f"v{i}" for i in range(257)], "is too long"),
    ("BatchTest", "spec.include", [{"retrieve": "original"}] * 257, "is too long"),
    ("BatchTest", "spec.evaluators.0.name", "e" * 254, "is too long"),
    ("Workflow", "spec.variants.retrieve.0.path", "m:" + "f" * 4095, "is too long"),
]


def set_path(manifest: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    target: Any = manifest
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value


@pytest.mark.parametrize(("kind", "path", "value", "error"), WRONG)
def test_wrong_fields_are_refused_by_schema_and_model(
    kind: str, path: str, value: Any, error: str
) -> None:
    manifest = SAMPLES[kind]()
    set_path(manifest, path, value)
    errors = api_server_errors(manifest)
    assert any(error in e for e in errors), errors
    assert not model_accepts(manifest)


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("BatchTest", "phase", "Done"),
        ("Execution", "checkpoints", [{"id": "c", "step": "first", "createdAt": "t"}]),
        ("Workflow", "conditions", [{"type": "Ready", "status": "Yes", "reason": "R"}]),
    ],
)
def test_wrong_status_is_refused(kind: str, path: str, value: Any) -> None:
    manifest = SAMPLES[kind]() | {"status": status_of(kind)}
    manifest["status"][path] = value
    assert api_server_errors(manifest) != []


def manifest_documents() -> list[Any]:
    """Every WTB resource in examples/ and in the test fixtures, as pytest params."""
    params = []
    files = sorted([*ROOT.glob("examples/**/*.yaml"), *ROOT.glob("tests/fixtures/**/*.yaml")])
    for path in files:
        docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        for i, doc in enumerate(docs):
            if isinstance(doc, dict) and doc.get("apiVersion") == API_VERSION:
                rel = path.relative_to(ROOT).as_posix()
                params.append(pytest.param(doc, id=f"{rel}#{i}"))
    return params


@pytest.mark.parametrize("manifest", manifest_documents())
def test_example_manifests_pass_the_schema(manifest: dict[str, Any]) -> None:
    assert manifest["kind"] in RESOURCE_KINDS
    assert api_server_errors(manifest) == []


# --- (e) printer columns -------------------------------------------------------------------

METADATA_FIELDS = {"name", "namespace", "creationTimestamp", "generation", "uid"}
COLUMN_TYPES = {"string": {"string"}, "integer": {"integer"}, "number": {"number", "integer"}}


def resolve_json_path(root: Schema, json_path: str) -> Schema:
    """The schema node a printer column's simple JSONPath reads."""
    parts = re.findall(r"\.([A-Za-z0-9_]+)((?:\[[^\]]*\])*)", json_path)
    assert "".join(f".{name}{index}" for name, index in parts) == json_path, json_path
    node = root
    for name, index in parts:
        if node is root["properties"]["metadata"]:
            assert name in METADATA_FIELDS, json_path
            return {"type": "string", "format": "date-time"}
        node = node["properties"][name]
        for _ in re.findall(r"\[[^\]]*\]", index):
            node = node["items"]
    return node


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_printer_columns_read_existing_fields(kind: Any) -> None:
    version = CRDS[kind.file_name]["spec"]["versions"][0]
    root = version["schema"]["openAPIV3Schema"]
    columns = version["additionalPrinterColumns"]
    assert len({c["name"] for c in columns}) == len(columns)
    for column in columns:
        node = resolve_json_path(root, column["jsonPath"])
        if column["type"] == "date":
            assert node.get("format") == "date-time", column
        else:
            assert node.get("type") in COLUMN_TYPES[column["type"]], column
        assert column.get("priority", 0) in (0, 1)
    assert columns[-1]["name"] == "Age"


def test_batchtest_columns_as_kubectl_get_bt_shows_them() -> None:
    version = CRDS["wtb.dev_batchtests.yaml"]["spec"]["versions"][0]
    columns = version["additionalPrinterColumns"]
    shown = [(c["name"], c["jsonPath"]) for c in columns if not c.get("priority")]
    assert shown == [
        ("Phase", ".status.phase"),
        ("Progress", ".status.progress"),
        ("Failed", ".status.failed"),
        ("BaselineFailed", '.status.conditions[?(@.type=="BaselineFailed")].status'),
        ("Best", ".status.best"),
        ("Score", ".status.score"),
        ("Age", ".metadata.creationTimestamp"),
    ]
    wide = {c["name"]: c["jsonPath"] for c in columns if c.get("priority") == 1}
    assert wide["Workflow"] == ".spec.workflowRef.name"
    assert wide["Repeats"] == ".spec.repeats"


def test_json_path_resolution_refuses_missing_fields() -> None:
    root = openapi_schema("Execution")
    assert resolve_json_path(root, ".status.currentNode")["type"] == "string"
    assert resolve_json_path(root, ".status.checkpoints[0].step")["type"] == "integer"
    with pytest.raises(KeyError):
        resolve_json_path(root, ".status.currentStep")
