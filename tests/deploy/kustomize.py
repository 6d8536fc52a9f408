"""k8s/ kustomizations rendered without kubectl: resources (files and folders), namespace, and
inline JSON 6902 patches by target kind/name, the only features k8s/ uses. Anything else fails
loudly; test_kubernetes.py compares this with `kubectl kustomize` where kubectl exists."""
from __future__ import annotations

import copy
import pathlib

import yaml

from tests.conftest import REPO

K8S = REPO / "k8s"
CLUSTER_SCOPED = {"Namespace", "StorageClass", "PersistentVolume", "ClusterRole", "ClusterRoleBinding"}
# images: (pinning) changes only image references, which no check reads, so it is not rendered.
SUPPORTED = {"apiVersion", "kind", "namespace", "resources", "patches", "images"}


def documents(path: pathlib.Path) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def kustomization(folder: pathlib.Path) -> dict:
    (document,) = documents(folder / "kustomization.yaml")
    unknown = set(document) - SUPPORTED
    assert not unknown, f"{folder}: tests/deploy/kustomize.py does not render {sorted(unknown)}"
    return document


def kustomization_folders() -> list[pathlib.Path]:
    return sorted(p.parent for p in K8S.rglob("kustomization.yaml"))


def file_resources(folder: pathlib.Path) -> list[str]:
    return [r for r in kustomization(folder).get("resources", []) if (folder / r).is_file()]


def render(folder: pathlib.Path) -> list[dict]:
    spec = kustomization(folder)
    rendered = []
    for resource in spec.get("resources", []):
        path = folder / resource
        rendered += render(path) if path.is_dir() else copy.deepcopy(documents(path))
    if "namespace" in spec:
        for document in rendered:
            if document["kind"] not in CLUSTER_SCOPED:
                document["metadata"]["namespace"] = spec["namespace"]
    for patch in spec.get("patches", []):
        for document in rendered:
            if targets(patch["target"], document):
                apply_json_patch(document, yaml.safe_load(patch["patch"]))
    return rendered


def targets(target: dict, document: dict) -> bool:
    unknown = set(target) - {"kind", "name"}
    assert not unknown, f"patch target fields {sorted(unknown)} are not rendered here"
    found = {"kind": document["kind"], "name": document["metadata"]["name"]}
    return all(found[key] == value for key, value in target.items())


def apply_json_patch(document: dict, operations: list[dict]) -> None:
    for operation in operations:
        assert operation["op"] in ("add", "replace"), f"JSON patch op {operation['op']} is not rendered here"
        *parents, leaf = operation["path"].strip("/").split("/")
        node = document
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = operation["value"]


def objects(rendered: list[dict], kind: str) -> list[dict]:
    return [d for d in rendered if d["kind"] == kind]
