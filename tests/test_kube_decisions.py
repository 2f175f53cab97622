"""The operator's pure decisions, without a cluster: names, conditions, the RayCluster it
builds (checked against KubeRay's real CRD schema), what a RayCluster's status says, the
checks on a BatchTest, and the status patch."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest
import yaml

from services.kube import RAYCLUSTER_CRD_FILE, kuberay_crds_dir
from toybatch import STORED_UID as UID
from toybatch import stored_batchtest, stored_batchtest_body
from wtb.api.batchtest import BatchTest, BatchTestStatus
from wtb.errors import ManifestErrors
from wtb.kube import conditions as cond
from wtb.kube.decide import StopJob, decide_deadline
from wtb.kube.names import (
    LABEL_BATCHTEST,
    label_value,
    raycluster_name,
    submission_id,
)
from wtb.kube.observed import ClusterView
from wtb.kube.raycluster import (
    DATABASE_URL_ENV,
    DatabaseSecret,
    build_raycluster,
    cluster_state,
    spec_hash,
)
from wtb.kube.semantics import check_references, parse_batchtest, parse_workflow, summary
from wtb.kube.status_copy import status_patch
from wtb.kube.transitions import BatchTestStatusCopy
from wtb.runs.keys import generation_run_key as run_key

DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
SECRET = DatabaseSecret("wtb-database", "url")
IMAGE = "registry.example/wtb-toy:1.0"
T1, T2 = "2025-01-02T03:04:05Z", "2025-01-02T03:09:00Z"

Json = dict[str, Any]


# --- names ------------------------------------------------------------------------------

BATCHTEST_NAMES = [
    "demo",
    "1st-run",
    "rag.eval.v2",
    "a" * 50,
    "a" * 51,
    "b" * 60,
    "c" * 253,
    "9" * 80 + ".x",
]


@pytest.mark.parametrize("name", BATCHTEST_NAMES)
def test_raycluster_names_are_dns_labels_with_room_for_the_head_service(name: str) -> None:
    cluster = raycluster_name(name)
    assert DNS_1035_LABEL.match(cluster), cluster
    assert len(f"{cluster}-head-svc") <= 63
    assert raycluster_name(name) == cluster


def test_raycluster_names_stay_readable_and_apart() -> None:
    assert raycluster_name("demo") == "demo-ray"
    assert raycluster_name("a" * 50) == "a" * 50 + "-ray"
    changed = [raycluster_name(n) for n in ["a.b", "a-b", "1a", "bt-1a", "x" * 60, "x" * 61]]
    assert len(set(changed)) == len(changed), changed
    assert raycluster_name("x" * 61).startswith("x" * 20)


@pytest.mark.parametrize("name", BATCHTEST_NAMES)
def test_label_values_fit(name: str) -> None:
    value = label_value(name)
    assert len(value) <= 63
    assert LABEL_VALUE.match(value), value
    assert label_value(name) == value


def test_label_values_keep_short_names_and_tell_long_ones_apart() -> None:
    assert label_value("rag.eval.v2") == "rag.eval.v2"
    assert label_value("d" * 100) != label_value("d" * 101)


def test_run_keys_and_submission_ids_are_deterministic_per_generation_and_attempt() -> None:
    key = run_key("team", "demo", UID, 3)
    assert key == run_key("team", "demo", UID, 3)
    assert len({key, run_key("team", "demo", UID, 4), run_key("team", "demo", "f" * 36, 3)}) == 3
    ids = {submission_id(UID, g, a) for g in (1, 2) for a in (1, 2, 3)}
    assert len(ids) == 6
    assert submission_id(UID, 2, 3) == submission_id(UID, 2, 3)


# --- conditions -------------------------------------------------------------------------


def test_a_new_condition_is_added_with_the_time_given() -> None:
    out = cond.set_condition([], cond.VALIDATED, "True", "Valid", "ok", generation=2, now=T1)
    assert [(c.type, c.status, c.reason, c.message) for c in out] == [
        ("Validated", "True", "Valid", "ok")
    ]
    assert out[0].last_transition_time == T1
    assert out[0].observed_generation == 2


def test_transition_time_moves_only_when_the_status_flips() -> None:
    first = cond.set_condition([], cond.CLUSTER_READY, "False", "Provisioning", "creating", now=T1)
    same_status = cond.set_condition(
        first, cond.CLUSTER_READY, "False", "ClusterNotFound", "gone", now=T2
    )
    found = cond.find(same_status, cond.CLUSTER_READY)
    assert found is not None
    assert (found.reason, found.message, found.last_transition_time) == (
        "ClusterNotFound",
        "gone",
        T1,
    )
    flipped = cond.set_condition(same_status, cond.CLUSTER_READY, "True", "ClusterReady", now=T2)
    found = cond.find(flipped, cond.CLUSTER_READY)
    assert found is not None
    assert (found.status, found.last_transition_time) == ("True", T2)
    assert cond.is_true(flipped, cond.CLUSTER_READY)
    assert not cond.is_true(same_status, cond.CLUSTER_READY)


def test_conditions_merge_by_type_in_place() -> None:
    out = cond.set_condition([], cond.VALIDATED, "True", "Valid", now=T1)
    out = cond.set_condition(out, cond.CLUSTER_READY, "False", "Provisioning", now=T1)
    out = cond.set_condition(out, cond.JOB_SUBMITTED, "False", "Submitting", now=T1)
    again = cond.set_condition(out, cond.VALIDATED, "True", "Valid", now=T2)
    assert again == out, "setting a condition as it is changes nothing (no status write)"
    moved = cond.set_condition(out, cond.CLUSTER_READY, "True", "ClusterReady", now=T2)
    assert [c.type for c in moved] == ["Validated", "ClusterReady", "JobSubmitted"]
    assert moved[0] == out[0]
    assert moved[2] == out[2]


def test_condition_messages_are_bounded() -> None:
    out = cond.set_condition([], cond.FAILED, "True", "JobFailed", "x" * 5000, now=T1)
    assert len(out[0].message) == 1024


# --- the RayCluster -------------------------------------------------------------------


def _strict(node: object) -> None:
    """Refuse unknown fields where the API server would prune them (a structural schema
    prunes every field it does not list), so a misspelled field fails the check."""
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            _strict(value)
    elif isinstance(node, list):
        for value in node:
            _strict(value)


def _without_kubernetes_keys(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: _without_kubernetes_keys(v)
            for k, v in node.items()
            if not str(k).startswith("x-kubernetes-")
        }
    if isinstance(node, list):
        return [_without_kubernetes_keys(v) for v in node]
    return node


@pytest.fixture(scope="module")
def raycluster_schema() -> jsonschema.protocols.Validator:
    """KubeRay's RayCluster v1 schema, as the API server installs it (see services.kube),
    read with libyaml when PyYAML has it (the file is large: seconds in pure Python)."""
    text = (kuberay_crds_dir() / RAYCLUSTER_CRD_FILE).read_text()
    crd = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = version["schema"]["openAPIV3Schema"]
    _strict(schema)
    validator_class = jsonschema.validators.validator_for({}, default=jsonschema.Draft7Validator)
    validator: jsonschema.protocols.Validator = validator_class(_without_kubernetes_keys(schema))
    return validator


def _schema_errors(validator: jsonschema.protocols.Validator, obj: Json) -> list[str]:
    return [
        f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(obj)
    ]


RAY: Json = {
    "rayVersion": "2.60.0",
    "head": {
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        "rayStartParams": {"num-cpus": "0"},
    },
    "workers": {
        "replicas": 3,
        "resources": {"requests": {"cpu": 2, "memory": "4Gi"}, "limits": {"cpu": 2}},
        "rayStartParams": {"num-cpus": "2"},
    },
}


def _containers(rc: Json) -> list[Json]:
    spec = rc["spec"]
    groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def test_raycluster_fits_kuberays_schema(raycluster_schema: jsonschema.protocols.Validator) -> None:
    for batch in (
        stored_batchtest(),
        stored_batchtest(ray=RAY),
        stored_batchtest(ray={"workers": {"replicas": 0}}),
    ):
        rc = build_raycluster(batch, uid=UID, image=IMAGE, secret=SECRET)
        assert _schema_errors(raycluster_schema, rc) == []


def test_the_schema_check_catches_what_the_api_server_would_refuse_or_prune(
    raycluster_schema: jsonschema.protocols.Validator,
) -> None:
    rc = build_raycluster(stored_batchtest(ray=RAY), uid=UID, image=IMAGE, secret=SECRET)
    wrong_type = copy.deepcopy(rc)
    wrong_type["spec"]["workerGroupSpecs"][0]["replicas"] = "3"
    misspelled = copy.deepcopy(rc)
    misspelled["spec"]["headGroupSpec"]["rayStartParam"] = {}
    bad_quantity = copy.deepcopy(rc)
    bad_quantity["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"][
        "limits"
    ]["memory"] = "two gigs"
    for broken in (wrong_type, misspelled, bad_quantity):
        assert _schema_errors(raycluster_schema, broken)


def test_raycluster_is_owned_by_its_batchtest_and_labelled() -> None:
    rc = build_raycluster(stored_batchtest(), uid=UID, image=IMAGE, secret=SECRET)
    meta = rc["metadata"]
    assert (rc["apiVersion"], rc["kind"]) == ("ray.io/v1", "RayCluster")
    assert (meta["name"], meta["namespace"]) == ("demo-ray", "team")
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "wtb.dev/v1alpha1",
            "kind": "BatchTest",
            "name": "demo",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert ClusterView.of(rc).owned_by(UID)
    assert not ClusterView.of(rc).owned_by("someone-else")
    assert not ClusterView.of({"metadata": {}}).owned_by(UID)
    assert meta["labels"][LABEL_BATCHTEST] == "demo"
    head = rc["spec"]["headGroupSpec"]
    assert head["template"]["metadata"]["labels"][LABEL_BATCHTEST] == "demo"


def test_a_long_batchtest_name_still_gives_valid_names_and_labels() -> None:
    name = "rag-" + "x" * 120
    rc = build_raycluster(stored_batchtest(name=name), uid=UID, image=IMAGE, secret=SECRET)
    meta = rc["metadata"]
    assert DNS_1035_LABEL.match(meta["name"])
    assert meta["ownerReferences"][0]["name"] == name
    for labels in (meta["labels"], rc["spec"]["headGroupSpec"]["template"]["metadata"]["labels"]):
        assert all(len(v) <= 63 and LABEL_VALUE.match(v) for v in labels.values()), labels


def test_the_database_url_comes_from_the_secret_in_every_container() -> None:
    rc = build_raycluster(stored_batchtest(ray=RAY), uid=UID, image=IMAGE, secret=SECRET)
    containers = _containers(rc)
    assert len(containers) == 2
    for container in containers:
        assert container["image"] == IMAGE
        env = {e["name"]: e for e in container["env"]}
        assert env[DATABASE_URL_ENV] == {
            "name": DATABASE_URL_ENV,
            "valueFrom": {"secretKeyRef": {"name": "wtb-database", "key": "url"}},
        }
        assert "value" not in env[DATABASE_URL_ENV]


def test_head_and_workers_come_from_spec_ray() -> None:
    rc = build_raycluster(stored_batchtest(ray=RAY), uid=UID, image=IMAGE, secret=SECRET)
    spec = rc["spec"]
    assert spec["rayVersion"] == "2.60.0"
    head = spec["headGroupSpec"]
    assert head["rayStartParams"] == {"dashboard-host": "0.0.0.0", "num-cpus": "0"}  # noqa: S104
    assert head["template"]["spec"]["containers"][0]["resources"] == RAY["head"]["resources"]
    (workers,) = spec["workerGroupSpecs"]
    assert (workers["replicas"], workers["minReplicas"], workers["maxReplicas"]) == (3, 3, 3)
    assert workers["rayStartParams"] == {"num-cpus": "2"}
    assert workers["template"]["spec"]["containers"][0]["resources"] == RAY["workers"]["resources"]


def test_defaults_give_one_worker_and_no_resources() -> None:
    spec = build_raycluster(stored_batchtest(), uid=UID, image=IMAGE, secret=SECRET)["spec"]
    assert "rayVersion" not in spec
    assert [g["replicas"] for g in spec["workerGroupSpecs"]] == [1]
    assert all("resources" not in c for c in _containers({"spec": spec}))
    no_workers = build_raycluster(
        stored_batchtest(ray={"workers": {"replicas": 0}}), uid=UID, image=IMAGE, secret=SECRET
    )
    assert "workerGroupSpecs" not in no_workers["spec"]


def test_spec_hash_follows_the_cluster_spec_only() -> None:
    def hash_of(batch: BatchTest, image: str = IMAGE) -> str | None:
        return spec_hash(build_raycluster(batch, uid=UID, image=image, secret=SECRET))

    base = hash_of(stored_batchtest(ray=RAY))
    assert base is not None
    assert hash_of(stored_batchtest(ray=RAY)) == base
    assert hash_of(stored_batchtest(ray=RAY, repeats=5)) == base, "the batch is not the cluster"
    assert hash_of(stored_batchtest(ray=RAY), image="registry.example/wtb-toy:2.0") != base
    more = copy.deepcopy(RAY)
    more["workers"]["replicas"] = 4
    assert hash_of(stored_batchtest(ray=more)) != base
    assert spec_hash({"metadata": {}}) is None


# --- what a RayCluster's status says ----------------------------------------------------


def test_a_ready_cluster_gives_its_job_api() -> None:
    state = cluster_state(
        {
            "status": {
                "state": "ready",
                "head": {"serviceIP": "10.0.0.7", "podIP": "10.1.2.3"},
                "endpoints": {"client": "10001", "dashboard": "8265", "gcs-server": "6379"},
            }
        }
    )
    assert state.ready
    assert state.dashboard_url == "http://10.0.0.7:8265"


@pytest.mark.parametrize(
    ("status", "says"),
    [
        ({}, ["state pending"]),
        ({"state": "failed", "reason": "image pull"}, ["state failed", "image pull"]),
        (
            {
                "state": "suspended",
                "conditions": [
                    {"type": "HeadPodReady", "status": "False", "reason": "HeadPodNotFound"},
                    {"type": "RayClusterProvisioned", "status": "False", "message": "0/1 pods"},
                    {"type": "Other", "status": "True", "message": "fine"},
                ],
            },
            ["HeadPodReady: HeadPodNotFound", "RayClusterProvisioned: 0/1 pods"],
        ),
    ],
)
def test_a_cluster_not_ready_says_why(status: Json, says: list[str]) -> None:
    state = cluster_state({"status": status})
    assert not state.ready
    assert state.dashboard_url is None
    for part in says:
        assert part in state.message
    assert "fine" not in state.message


@pytest.mark.parametrize(
    "status",
    [
        {"state": "ready", "head": {"serviceIP": "10.0.0.7"}},
        {"state": "ready", "endpoints": {"dashboard": "8265"}},
        {"state": "ready", "head": {"serviceIP": "10.0.0.7"}, "endpoints": {"client": "10001"}},
    ],
)
def test_a_ready_cluster_without_its_dashboard_endpoint_is_not_ready_yet(status: Json) -> None:
    state = cluster_state({"status": status})
    assert not state.ready
    assert state.dashboard_url is None
    assert "dashboard endpoint" in state.message


def test_a_raycluster_without_status_is_pending() -> None:
    assert cluster_state({"metadata": {"name": "x"}}).message == "state pending"


# --- checks on a BatchTest --------------------------------------------------------------


def _workflow_body(**graph: Any) -> Json:
    declared = {
        "state": "toyflow.graph:State",
        "nodes": [
            {"name": "lookup", "path": "toyflow.graph:lookup"},
            {"name": "answer", "path": "toyflow.graph:answer"},
        ],
        "edges": [
            {"from": "__start__", "to": ["lookup"]},
            {"from": "lookup", "to": ["answer"]},
            {"from": "answer", "to": ["__end__"]},
        ],
    }
    return {
        "apiVersion": "wtb.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "toy", "namespace": "team"},
        "spec": {
            "image": IMAGE,
            "graph": graph or declared,
            "variants": {"answer": [{"name": "reversed", "path": "toyflow.graph:answer_reversed"}]},
        },
    }


def _batchtest_body(change: Callable[[Json], None] = lambda _: None) -> Json:
    """The stored BatchTest with a second evaluator (`says_yes`) and a status; `change`
    edits its spec in place."""
    body = stored_batchtest_body(
        evaluators=[
            {"name": "correct", "type": "exactMatch", "output": "answer"},
            {"name": "says_yes", "type": "regex", "output": "answer", "value": "^y(es)?$"},
        ]
    )
    body["status"] = {"phase": "Pending", "kopf": {"progress": {}}}
    change(body["spec"])
    return body


def _problems(change: Callable[[Json], None], workflow: Json | None = None) -> str:
    """Everything the operator reports about a BatchTest, as one message."""
    try:
        batch = parse_batchtest(_batchtest_body(change))
    except ManifestErrors as exc:
        return summary(exc.errors)
    return summary(check_references(batch, parse_workflow(workflow or _workflow_body())))


def test_a_good_batchtest_passes() -> None:
    batch = parse_batchtest(_batchtest_body())
    assert batch.metadata.name == "demo"
    assert check_references(batch, parse_workflow(_workflow_body())) == []


@pytest.mark.parametrize(
    ("change", "field", "detail"),
    [
        (
            lambda s: s["matrix"].update(answer=["original", "shiny"]),
            "spec.matrix.answer[1]",
            "no variant 'shiny'",
        ),
        (
            lambda s: s["matrix"].update(rerank=["original"]),
            "spec.matrix.rerank",
            "node 'rerank'",
        ),
        (
            lambda s: s.update(baseline={"answer": "shiny"}),
            "spec.baseline",
            "not in the matrix",
        ),
        (
            lambda s: s.update(fixed={"answer": "reversed"}),
            "fixed.answer",
            "also in the matrix",
        ),
        (
            lambda s: s.update(fixed={"lookup": "shiny"}),
            "spec.fixed.lookup",
            "no variant 'shiny'",
        ),
        (
            lambda s: s.update(fixed={"rerank": "fast"}),
            "spec.fixed.rerank",
            "fixed names node 'rerank'",
        ),
        (
            lambda s: s["matrix"].update({"rerank/inner": ["original"]}),
            "spec.matrix.rerank/inner",
            "node 'rerank/inner'",
        ),
        (
            lambda s: s.update(primaryMetric="accuracy"),
            "primaryMetric",
            "'accuracy' is not an evaluator",
        ),
        (
            lambda s: s["evaluators"][1].update(value="(unclosed"),
            "spec.evaluators[1].value",
            "not a valid regular expression",
        ),
        (
            lambda s: s.update(
                ray={"clusterName": "shared", "head": {"rayStartParams": {"num-cpus": "0"}}}
            ),
            "spec.ray",
            "ray.head",
        ),
        (
            lambda s: s.update(ray={"clusterName": "shared", "workers": {"replicas": 2}}),
            "spec.ray",
            "ray.workers",
        ),
    ],
)
def test_a_bad_batchtest_is_reported_by_field(
    change: Callable[[Json], None], field: str, detail: str
) -> None:
    message = _problems(change)
    assert message.startswith("BatchTest team/demo: ")
    assert field in message
    assert detail in message


def test_a_batchtest_as_the_api_server_stores_it_passes() -> None:
    """The API server fills in the CRD's defaults, such as `ignoreCase: false` and
    `strip: false` on every evaluator, even those that do not read them."""

    def defaulted(spec: Json) -> None:
        spec["evaluators"].append({"name": "latency", "type": "latency"})
        for evaluator in spec["evaluators"]:
            evaluator.update(ignoreCase=False, strip=False)
        spec.update(repeats=1, concurrency=8, backoffLimit=2, alpha=0.05)

    assert _problems(defaulted) == ""


def test_a_field_the_evaluator_does_not_read_is_refused() -> None:
    def unused(spec: Json) -> None:
        spec["evaluators"].append({"name": "latency", "type": "latency", "ignoreCase": True})

    message = _problems(unused)
    assert "spec.evaluators[2].ignoreCase" in message
    assert "does not use `ignoreCase`" in message


def test_every_problem_is_reported_at_once() -> None:
    def two_mistakes(spec: Json) -> None:
        spec["baseline"] = {"answer": "shiny"}
        spec["evaluators"][1]["value"] = "[a-"

    message = _problems(two_mistakes)
    assert "spec.baseline" in message
    assert "spec.evaluators[1].value" in message


def test_every_unknown_variant_and_node_is_reported() -> None:
    def mistakes(spec: Json) -> None:
        spec["matrix"] = {"answer": ["shiny", "original", "dull"], "rerank": ["original"]}
        spec["baseline"] = {"answer": "original", "rerank": "original"}

    message = _problems(mistakes)
    for field in ("spec.matrix.answer[0]", "spec.matrix.answer[2]", "spec.matrix.rerank"):
        assert field in message


def test_nodes_of_a_graph_factory_are_checked_in_the_image_not_here() -> None:
    """The operator runs no user code: a factory's nodes are known only by importing it
    (the batch driver does, and reports a wrong node there)."""
    batch = parse_batchtest(_batchtest_body(lambda s: s["matrix"].update(rerank=["original"])))
    factory = _workflow_body(factory="toyflow.graph:build")
    assert check_references(batch, parse_workflow(factory)) == []
    shiny = parse_batchtest(
        _batchtest_body(lambda s: s["matrix"].update(answer=["original", "shiny"]))
    )
    assert "no variant 'shiny'" in summary(check_references(shiny, parse_workflow(factory)))


def test_a_resource_of_another_kind_is_refused() -> None:
    with pytest.raises(ManifestErrors, match="not a BatchTest"):
        parse_batchtest(_workflow_body())
    with pytest.raises(ManifestErrors, match="not a Workflow"):
        parse_workflow(_batchtest_body())


# --- the status patch -------------------------------------------------------------------


def _apply_merge_patch(target: Json, patch: Json) -> Json:
    """What the API server does with an application/merge-patch+json body (RFC 7386)."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            current = out.get(key)
            out[key] = _apply_merge_patch(current if isinstance(current, dict) else {}, value)
        else:
            out[key] = value
    return out


MATRIX = {
    "primaryMetric": "correct",
    "baseline": "answer=original",
    "combinations": 2,
    "rows": [{"label": "answer=original", "runs": 4}],
}
STATUS_CASES = [
    ({}, {"phase": "Pending", "observedGeneration": 1}),
    (
        {"phase": "Running", "progress": "1/4", "message": "Ray job running"},
        {"phase": "Running", "progress": "3/4"},
    ),
    (
        {"phase": "Running", "matrix": {**MATRIX, "note": "old"}},
        {"phase": "Succeeded", "matrix": MATRIX},
    ),
    (
        {"matrix": MATRIX, "conditions": [{"type": "A"}, {"type": "B"}]},
        {"matrix": {**MATRIX, "rows": []}, "conditions": [{"type": "B"}]},
    ),
    ({"matrix": MATRIX}, {"phase": "Pending"}),
]


@pytest.mark.parametrize(("before", "after"), STATUS_CASES)
def test_status_patch_turns_before_into_after(before: Json, after: Json) -> None:
    patch = status_patch(before, after)
    assert _apply_merge_patch(before, patch) == after


def test_status_patch_sends_only_what_changed() -> None:
    before = {"phase": "Running", "progress": "1/4", "matrix": MATRIX}
    assert status_patch(before, copy.deepcopy(before)) == {}
    assert status_patch(before, {**before, "progress": "2/4"}) == {"progress": "2/4"}
    assert status_patch({**before, "kopf": {"progress": {}}}, before) == {}


def test_status_patch_leaves_kopfs_own_key_alone() -> None:
    before = {"phase": "Running", "kopf": {"progress": {"h": {"retries": 1}}}}
    patch = status_patch(before, {"phase": "Succeeded"})
    assert patch == {"phase": "Succeeded"}


def test_a_setting_axis_is_checked_against_the_workflows_settings() -> None:
    """A matrix axis may be a Workflow setting (wtb.api.invocation): its choices are checked
    like variants, without the graph's code."""
    workflow = _workflow_body()
    workflow["spec"]["settings"] = {
        "model": [{"name": "small", "invoke": {"configurable": {"model": "m1"}}}]
    }
    good = parse_batchtest(
        _batchtest_body(lambda s: s["matrix"].update(model=["original", "small"]))
    )
    assert check_references(good, parse_workflow(workflow)) == []
    bad = parse_batchtest(_batchtest_body(lambda s: s["matrix"].update(model=["original", "huge"])))
    message = summary(check_references(bad, parse_workflow(workflow)))
    assert "spec.matrix.model[1]" in message
    assert "setting 'model' has no choice 'huge'" in message
    # A setting may not have the name of a declared node: both are matrix axes.
    workflow["spec"]["settings"] = {"lookup": workflow["spec"]["settings"]["model"]}
    with pytest.raises(ManifestErrors, match="names a node of the graph"):
        parse_workflow(workflow)


# -- spec.activeDeadlineSeconds ----------------------------------------------------------


def _running(started: str | None = "2025-01-02T03:00:00Z", **more: Any) -> BatchTestStatus:
    return BatchTestStatus(
        phase="Running",
        started_at=started,
        run_id="default/demo:g1-uid",
        ray_cluster="wtb-demo",
        submission_id="wtb-demo-1",
        **more,
    )


def test_a_run_past_its_deadline_fails_and_its_job_is_stopped() -> None:
    now = datetime(2025, 1, 2, 3, 10, 0, tzinfo=UTC)
    verdict = decide_deadline(600, _running(total=40, completed=13), now=now)
    assert verdict is not None
    assert verdict.fail.reason == "DeadlineExceeded"
    assert "activeDeadlineSeconds (600 s" in verdict.fail.message
    assert "13 of 40 cells recorded (kept)" in verdict.fail.message
    assert verdict.stop == StopJob("wtb-demo", "wtb-demo-1")


@pytest.mark.parametrize(
    ("deadline", "status"),
    [
        (601, _running()),  # a second left
        (None, _running()),  # no deadline
        (1, _running(started=None)),  # not started: the cluster wait has its own bound
        (1, _running().model_copy(update={"phase": "Succeeded"})),
        (1, _running().model_copy(update={"phase": "Failed"})),
    ],
)
def test_no_deadline_verdict_before_the_deadline_or_after_the_end(
    deadline: int | None, status: BatchTestStatus
) -> None:
    now = datetime(2025, 1, 2, 3, 10, 0, tzinfo=UTC)
    assert decide_deadline(deadline, status, now=now) is None


def test_a_deadline_failure_fits_the_condition_reasons() -> None:
    verdict = decide_deadline(1, _running(), now=datetime(2025, 1, 3, tzinfo=UTC))
    assert verdict is not None
    copy_ = BatchTestStatusCopy(_running(), generation=1)
    copy_.fail(verdict.fail, datetime(2025, 1, 3, tzinfo=UTC))
    failed = cond.find(copy_.status.conditions, cond.FAILED)
    assert failed is not None
    assert (failed.status, failed.reason) == ("True", "DeadlineExceeded")
    assert copy_.status.phase == "Failed"
