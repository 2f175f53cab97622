"""Read manifests (files, directories, stdin) into typed resources, with located errors."""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from wtb._yaml import YamlLimitError, load_all, non_finite
from wtb.api import API_VERSION, GROUP, RESOURCE_KINDS, BatchTest, Execution, Workflow
from wtb.errors import ManifestError, ManifestErrors, yaml_problem
from wtb.settings import get_settings

Resource = Workflow | BatchTest | Execution


@dataclass(frozen=True)
class Source:
    """Where a resource came from: file, 1-based document number, and the directory it is in."""

    file: str
    document: int
    base_dir: Path

    def where(self, kind: str = "", name: str = "") -> str:
        ident = f", {kind}/{name}" if kind and name else ""
        return f"{self.file} (document {self.document}{ident})"


@dataclass
class ManifestSet:
    workflows: dict[tuple[str, str], tuple[Workflow, Source]] = field(default_factory=dict)
    batchtests: list[tuple[BatchTest, Source]] = field(default_factory=list)
    executions: list[tuple[Execution, Source]] = field(default_factory=list)

    def workflow_for(self, batch: BatchTest, source: Source) -> tuple[Workflow, Source]:
        key = (batch.metadata.namespace, batch.spec.workflow_ref.name)
        found = self.workflows.get(key)
        if found is None:
            known = ", ".join(sorted(f"{ns}/{n}" for ns, n in self.workflows)) or "none"
            raise ManifestError(
                f"workflowRef.name {key[1]!r}: no Workflow of that name in namespace {key[0]!r} "
                f"among the files given (Workflows found: {known})",
                where=f"{source.where('BatchTest', batch.metadata.name)}: spec.workflowRef.name",
                fix="add the Workflow's manifest to the files given with -f, or fix the name",
            )
        return found


_SIZE_FIX = "split it into smaller manifests, or raise WTB_MAX_MANIFEST_BYTES"


def _read_text(label: str, read: Callable[[int], bytes]) -> str:
    """At most WTB_MAX_MANIFEST_BYTES of a manifest, decoded as UTF-8; a larger or
    undecodable one is a ManifestError naming it."""
    limit = get_settings().max_manifest_bytes
    data = read(limit + 1)
    if len(data) > limit:
        raise ManifestError(
            f"the manifest is larger than {limit} bytes", where=label, fix=_SIZE_FIX
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"not UTF-8 text: {exc.reason} at byte {exc.start}",
            where=label,
            fix="save the manifest as UTF-8",
        ) from None


def _read_file(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            return _read_text(str(path), handle.read)
    except OSError as exc:
        raise ManifestError(
            f"cannot read the manifest: {exc.strerror or exc}",
            where=str(path),
            fix="check the path given to -f and its permissions",
        ) from None


def _documents(path: str) -> Iterator[tuple[str, int, Any, Path, bool]]:
    """(file label, document number, data, base dir, explicit) for every YAML document."""
    if path == "-":
        yield from _parse(
            "<stdin>", _read_text("<stdin>", sys.stdin.buffer.read), Path.cwd(), explicit=True
        )
        return
    p = Path(path)
    if p.is_dir():
        files = sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
        if not files:
            raise ManifestError(
                f"no .yaml or .yml file in directory {path}", fix="point -f at a manifest file"
            )
        for f in files:
            yield from _parse(str(f), _read_file(f), f.parent.resolve(), explicit=False)
    elif p.is_file():
        yield from _parse(str(p), _read_file(p), p.parent.resolve(), explicit=True)
    else:
        raise ManifestError(f"no such file or directory: {path}", fix="check the path given to -f")


def _parse(
    label: str, text: str, base_dir: Path, *, explicit: bool
) -> Iterator[tuple[str, int, Any, Path, bool]]:
    try:
        docs = list(load_all(text))
    except yaml.YAMLError as exc:
        line, problem = yaml_problem(exc)
        raise ManifestError(
            f"not valid YAML{line}: {problem}", where=label, fix="fix the YAML syntax"
        ) from None
    except YamlLimitError as exc:
        raise ManifestError(
            f"refused{exc.at}: {exc.problem}",
            where=label,
            fix="write the manifest out plainly: fewer nesting levels, no aliases that "
            "multiply (`*name`)",
        ) from None
    for i, doc in enumerate(docs, start=1):
        if doc is None:
            continue
        bad = non_finite(doc)
        if bad is not None:
            raise ManifestError(
                "an infinite or NaN number (.inf, .nan) where a finite one is needed",
                where=f"{label} (document {i}): {bad}",
                fix="give a finite number",
            )
        yield label, i, doc, base_dir, explicit


def load_manifests(paths: list[str]) -> ManifestSet:
    """Parse every WTB resource in `paths`; all errors are collected and raised together.

    In a directory, YAML documents that are not Kubernetes resources (data sets) and
    resources of other API groups are skipped; a file named explicitly must hold resources.
    """
    result = ManifestSet()
    errors: list[ManifestError] = []
    for path in paths:
        for label, number, doc, base_dir, explicit in _documents(path):
            source = Source(label, number, base_dir)
            is_resource = isinstance(doc, dict) and "kind" in doc and "apiVersion" in doc
            if not is_resource:
                if explicit:
                    errors.append(
                        ManifestError(
                            "not a Kubernetes resource (no apiVersion and kind)",
                            where=source.where(),
                            fix=f"start the document with `apiVersion: {API_VERSION}` and a `kind`",
                        )
                    )
                continue
            try:
                resource = parse_resource(doc, source)
            except ManifestErrors as exc:
                errors.extend(exc.errors)
                continue
            if resource is None:
                continue
            _add(result, resource, source, errors)
    if errors:
        raise ManifestErrors(errors)
    return result


def _add(
    result: ManifestSet, resource: Resource, source: Source, errors: list[ManifestError]
) -> None:
    if isinstance(resource, Workflow):
        key = (resource.metadata.namespace, resource.metadata.name)
        if key in result.workflows:
            errors.append(
                ManifestError(
                    f"Workflow {key[0]}/{key[1]} is defined twice (first in "
                    f"{result.workflows[key][1].where()})",
                    where=source.where("Workflow", key[1]),
                    fix="give each Workflow a unique name",
                )
            )
        result.workflows[key] = (resource, source)
    elif isinstance(resource, BatchTest):
        result.batchtests.append((resource, source))
    else:
        result.executions.append((resource, source))


def parse_resource(doc: dict[str, Any], source: Source) -> Resource | None:
    """The typed resource of a document; None for resources of other API groups."""
    api_version = str(doc.get("apiVersion", ""))
    kind = str(doc.get("kind", ""))
    name = (
        str((doc.get("metadata") or {}).get("name", ""))
        if isinstance(doc.get("metadata"), dict)
        else ""
    )
    if not api_version.startswith(GROUP + "/"):
        return None
    where = source.where(kind, name)
    if api_version != API_VERSION:
        raise ManifestErrors(
            [
                ManifestError(
                    f"apiVersion {api_version!r} is not served",
                    where=f"{where}: apiVersion",
                    fix=f"use `apiVersion: {API_VERSION}`",
                )
            ]
        )
    model = RESOURCE_KINDS.get(kind)
    if model is None:
        raise ManifestErrors(
            [
                ManifestError(
                    f"unknown kind {kind!r}",
                    where=f"{where}: kind",
                    fix=f"use one of: {', '.join(RESOURCE_KINDS)}",
                )
            ]
        )
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise ManifestErrors(validation_errors(exc, model, where)) from exc


def _loc_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _model_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the last element of `loc`, when it can be found."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or not (
            isinstance(current, type) and issubclass(current, BaseModel)
        ):
            if isinstance(part, int):
                continue
            return None
        fld = next((f for n, f in current.model_fields.items() if part in (n, f.alias)), None)
        if fld is None:
            return None
        current = _inner_model(fld.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _inner_model(annotation: Any) -> Any:
    """The model inside `X`, `X | None`, `list[X]` or `dict[str, list[X]]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _field_names(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


def validation_errors(
    exc: ValidationError, model: type[BaseModel], where: str
) -> list[ManifestError]:
    errors = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = _loc_path(loc) or "(document)"
        kind = err["type"]
        message = str(err["msg"]).removeprefix("Value error, ")
        fix = ""
        if kind == "missing":
            fix = f"add `{loc[-1]}`"
        elif kind == "extra_forbidden":
            owner = _model_at(model, loc)
            known = _field_names(owner) if owner else []
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            message = f"unknown field `{loc[-1]}`"
            fix = (f"did you mean `{close[0]}`?" if close else "remove it") + (
                f" (fields here: {', '.join(known)})" if known else ""
            )
        elif kind == "string_pattern_mismatch":
            pattern = (err.get("ctx") or {}).get("pattern", "")
            fix = (
                "write an import path as 'package.module:attribute'"
                if ":" in pattern
                else f"use a value matching {pattern}"
            )
        elif kind in ("literal_error", "enum"):
            fix = "use one of the values listed"
        elif kind.endswith("_type") or kind.endswith("_parsing"):
            fix = f"got {err.get('input')!r}; give a value of the expected type"
        elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
            fix = "use a value in the allowed range"
        errors.append(ManifestError(message, where=f"{where}: {path}", fix=fix))
    return errors
