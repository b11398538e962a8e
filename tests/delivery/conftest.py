"""Delivery checks: packaging, Kubernetes manifests, alert rules and dashboards, all offline.

``render_kustomization`` is a small renderer for the subset of kustomize that
``deploy/k8s`` uses (resources, namespace, labels, images, replicas, strategic-merge patches by
file), so the overlays can be rendered and validated on a machine without kubectl. Anything
outside that subset raises, so the manifests cannot silently outgrow the renderer; where
``kubectl kustomize`` exists a test checks the two render the same objects.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "staging", "prod")

Obj = dict[str, Any]

_SUPPORTED = {
    "apiVersion", "kind", "resources", "namespace", "labels", "images", "replicas", "patches"
}  # fmt: skip
# Strategic-merge list keys for the lists our patches touch; every other list is replaced.
_MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name"}
_POD_SPEC_PATHS = {
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


class UnsupportedKustomization(Exception):
    pass


def _load_yaml_docs(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _find(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    if len(found) != 1:
        raise UnsupportedKustomization(f"patch target {kind}/{name}: {len(found)} matches")
    return found[0]


def strategic_merge(target: Obj, patch: Obj) -> None:
    """Apply a strategic-merge patch in place (the subset: maps merge, keyed lists merge)."""
    for key, value in patch.items():
        if isinstance(key, str) and key.startswith("$"):
            raise UnsupportedKustomization(f"patch directive {key}")
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            strategic_merge(target[key], value)
        elif isinstance(value, list) and key in _MERGE_KEYS and isinstance(target.get(key), list):
            merge_key = _MERGE_KEYS[key]
            existing = {item[merge_key]: item for item in target[key]}
            for item in value:
                if item[merge_key] in existing:
                    strategic_merge(existing[item[merge_key]], item)
                else:
                    target[key].append(copy.deepcopy(item))
        else:
            target[key] = copy.deepcopy(value)


def pod_spec(obj: Obj) -> Obj | None:
    path = _POD_SPEC_PATHS.get(obj["kind"])
    if path is None:
        return None
    node: Any = obj
    for part in path:
        node = node[part]
    spec: Obj = node
    return spec


def _image_name(image: str) -> str:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name[: len(name) - len(last)] + last.split(":", 1)[0]


def render_kustomization(directory: Path) -> list[Obj]:
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(spec) - _SUPPORTED
    if unsupported:
        raise UnsupportedKustomization(f"{directory}: fields {sorted(unsupported)}")

    objects: list[Obj] = []
    for resource in spec.get("resources", []):
        path = directory / resource
        objects.extend(render_kustomization(path) if path.is_dir() else _load_yaml_docs(path))

    for patch in spec.get("patches", []):
        if set(patch) != {"path"}:
            raise UnsupportedKustomization(f"patch form {sorted(patch)}")
        for doc in _load_yaml_docs(directory / patch["path"]):
            strategic_merge(_find(objects, doc["kind"], doc["metadata"]["name"]), doc)

    if "namespace" in spec:
        for obj in objects:
            obj["metadata"]["namespace"] = spec["namespace"]

    for entry in spec.get("labels", []):
        if entry.get("includeSelectors") or entry.get("includeTemplates"):
            raise UnsupportedKustomization("labels with includeSelectors/includeTemplates")
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(entry["pairs"])

    for entry in spec.get("replicas", []):
        _find(objects, "Deployment", entry["name"])["spec"]["replicas"] = entry["count"]

    for entry in spec.get("images", []):
        for obj in objects:
            pod = pod_spec(obj)
            for container in (pod or {}).get("containers", []) + (pod or {}).get(
                "initContainers", []
            ):
                if _image_name(container["image"]) != entry["name"]:
                    continue
                name = entry.get("newName", entry["name"])
                tag = entry.get("newTag")
                container["image"] = f"{name}:{tag}" if tag else name
    return objects


def render_overlay(overlay: str) -> list[Obj]:
    return render_kustomization(K8S / "overlays" / overlay)


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Obj]]:
    """Every overlay rendered once: overlay name -> its objects."""
    return {overlay: render_overlay(overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="session")
def kustomize() -> Callable[[Path], list[Obj]]:
    """The renderer itself, for tests that render something other than the overlays."""
    return render_kustomization
