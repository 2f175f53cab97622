"""`wtb validate --schema-only`: what can be checked of manifests without running their code.

The manifests and data sets are parsed and checked against the typed resources, the
built-in evaluators are built, the matrix is checked against the Workflow's variants and
settings (and its declared nodes), and the plan is expanded: the checks the operator's
admission webhook makes, plus the data set. Nothing is imported from the user's code and
no factory is called (a `config` factory path stays a string), so untrusted manifests can
be checked safely. What only the code can tell (the graph's nodes when a factory builds
it, that the variants import and run as nodes) is left to `wtb validate` without the flag.
"""

from __future__ import annotations

from dataclasses import dataclass

from wtb.api.batchtest import BatchTest
from wtb.dataset import load_cases
from wtb.errors import ManifestError, ManifestErrors
from wtb.evaluators.builtin import check_builtin_evaluators
from wtb.kube.semantics import check_references
from wtb.manifests import ManifestSet
from wtb.plan import Plan, build_plan


@dataclass(frozen=True)
class SchemaChecked:
    batch: BatchTest
    plan: Plan


def check_without_code(manifests: ManifestSet) -> list[SchemaChecked]:
    """Every BatchTest of `manifests` checked as far as it can be without importing the
    user's code; raises ManifestErrors with every mistake found."""
    errors: list[ManifestError] = []
    checked: list[SchemaChecked] = []
    for batch, source in manifests.batchtests:
        where = source.where("BatchTest", batch.metadata.name)
        try:
            workflow, _ = manifests.workflow_for(batch, source)
        except ManifestError as exc:
            errors.append(exc)
            continue
        problems = check_references(batch, workflow)
        try:
            check_builtin_evaluators(batch.spec.evaluators, where=f"{where}: spec.evaluators")
            cases = load_cases(batch.spec.dataset, source.base_dir, where=f"{where}: spec.dataset")
            plan = build_plan(batch.spec, cases, where=f"{where}: spec")
        except ManifestError as exc:
            problems.append(exc)
        if problems:
            errors.extend(problems)
        else:
            checked.append(SchemaChecked(batch, plan))
    if errors:
        raise ManifestErrors(errors)
    return checked
