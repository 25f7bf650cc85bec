"""Rendering the shadowsync chart with the Helm library (helm-python-sdk).

Shared by the chart tests and by render_install.py, which writes deploy/install.yaml.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

import helm_python as helm

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "shadowsync"
INSTALL_YAML = REPO / "deploy" / "install.yaml"

RELEASE = "shadowsync"
NAMESPACE = "shadowsync-system"

# Helm's install order (pkg/release/util/kind_sorter.go), for a kubectl-friendly file.
KIND_ORDER = [
    "PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
    "PodDisruptionBudget", "ServiceAccount", "Secret", "ConfigMap", "StorageClass",
    "PersistentVolume", "PersistentVolumeClaim", "CustomResourceDefinition",
    "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service", "DaemonSet",
    "Pod", "ReplicationController", "ReplicaSet", "Deployment", "HorizontalPodAutoscaler",
    "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress", "APIService",
]

_DOC_SPLIT = re.compile(r"^---[ \t]*$", re.MULTILINE)


def load_chart() -> helm.Chart:
    return helm.Chart.load(str(CHART))


def render_templates(
    values: dict[str, Any] | None = None,
    *,
    name: str = RELEASE,
    namespace: str = NAMESPACE,
    chart: helm.Chart | None = None,
) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` would produce."""
    own = chart is None
    chart = chart or load_chart()
    try:
        return chart.render(values or {}, name=name, namespace=namespace, is_install=True)
    finally:
        if own:
            chart.close()


def split_documents(text: str) -> list[str]:
    """The non-empty YAML documents of a rendered template, comments kept."""
    docs = []
    for part in _DOC_SPLIT.split(text):
        if yaml.safe_load(part) is not None:
            docs.append(part.strip("\n"))
    return docs


def render(values: dict[str, Any] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """The rendered Kubernetes objects (NOTES.txt excluded)."""
    objects = []
    for path, text in sorted(render_templates(values, **kwargs).items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in split_documents(text):
            objects.append(yaml.safe_load(doc))
    return objects


def notes(values: dict[str, Any] | None = None, **kwargs: Any) -> str:
    rendered = render_templates(values, **kwargs)
    return next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        o for o in objects
        if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected exactly one {kind} {name or ''}, got {len(found)}"
    return found[0]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def args(objects: list[dict[str, Any]]) -> list[str]:
    return container(objects)["args"]


def env(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """Environment of the operator container: name -> value (or the valueFrom object)."""
    result = {}
    for e in container(objects).get("env", []):
        assert e["name"] not in result, f"duplicate env var {e['name']}"
        result[e["name"]] = e.get("value", e.get("valueFrom"))
    return result


def kind_rank(kind: str) -> int:
    return KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
