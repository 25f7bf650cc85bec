"""The chart and deploy/install.yaml installed for real, and the operator under the
chart's namespaced RBAC.

Everything here runs against one real control plane per session (tests/kube/cluster.sh:
etcd, kube-apiserver with RBAC and the default admission plugins including
PodSecurity, plus OwnerReferencesPermissionEnforcement, kube-controller-manager with the
garbage collector), started by the `cluster` fixture. No kubelet runs, so no pod ever
starts: Deployments stay at 0 ready and nothing waits for them.

- Helm's own install/upgrade/uninstall actions (helm-python-sdk, the Helm Go library)
  install the chart with several value sets; every object Helm rendered must be in the
  cluster afterwards as rendered.
- The Deployment's pod template is created as a Pod (server-side dry run) in a
  namespace that enforces the "restricted" Pod Security profile; the same template
  with one violation is refused, naming it.
- deploy/install.yaml is applied with `kubectl apply --server-side`, twice.
- What the fleet controller does with a ThingShadowSet's children (create them with an
  ownerReference that blocks the set's deletion, adopt one, delete one, write the set's
  status) is done with the chart's ServiceAccount token, at cluster scope and with
  `watchNamespace`, and admitted; without the thingshadowsets/finalizers rule it is
  refused by OwnerReferencesPermissionEnforcement.
- The real operator binary runs with the container args of the installed Deployment,
  authenticated as the chart's ServiceAccount, and syncs a ThingShadow into a local data
  plane through the namespaced RBAC (`watchNamespace`).
"""

from __future__ import annotations

import copy
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import helm_python as helm
import pytest
import yaml

import chartlib
from cluster import free_port, wait_until

REPO = chartlib.REPO
CRD_NAMES = ["retainedmessages.iot.shadowsync.dev", "thingshadows.iot.shadowsync.dev",
             "thingshadowsets.iot.shadowsync.dev"]
RESTRICTED = {
    f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")
} | {f"pod-security.kubernetes.io/{mode}-version": "latest" for mode in ("enforce", "warn", "audit")}

# kubectl's name for each kind the chart renders (group-qualified, so never ambiguous).
RESOURCES = {
    "ServiceAccount": "serviceaccounts",
    "Service": "services",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "Namespace": "namespaces",
    "Deployment": "deployments.apps",
    "PodDisruptionBudget": "poddisruptionbudgets.policy",
    "Role": "roles.rbac.authorization.k8s.io",
    "RoleBinding": "rolebindings.rbac.authorization.k8s.io",
    "ClusterRole": "clusterroles.rbac.authorization.k8s.io",
    "ClusterRoleBinding": "clusterrolebindings.rbac.authorization.k8s.io",
    "CustomResourceDefinition": "customresourcedefinitions.apiextensions.k8s.io",
    "ThingShadow": "thingshadows.iot.shadowsync.dev",
    "ThingShadowSet": "thingshadowsets.iot.shadowsync.dev",
    "Lease": "leases.coordination.k8s.io",
}


def ref(obj: dict) -> str:
    kind = obj["kind"]
    assert kind in RESOURCES, f"no kubectl resource known for kind {kind}: add it to RESOURCES"
    return f"{RESOURCES[kind]}/{obj['metadata']['name']}"


def differences(expected, actual, path: str = "") -> list[str]:
    """Where `actual` does not contain `expected` (the API server may add defaults)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object, got {actual!r}"]
        out = []
        for key, value in expected.items():
            if key not in actual:
                out.append(f"{path}.{key}: missing (expected {value!r})")
            else:
                out.extend(differences(value, actual[key], f"{path}.{key}"))
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{path}: expected {expected!r}, got {actual!r}"]
        return [d for i, (e, a) in enumerate(zip(expected, actual)) for d in differences(e, a, f"{path}[{i}]")]
    return [] if expected == actual else [f"{path}: expected {expected!r}, got {actual!r}"]


def manifest_objects(release: dict) -> list[dict]:
    return [d for d in yaml.safe_load_all(release["manifest"]) if d is not None]


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def pod_from_template(deployment: dict, name: str, namespace: str) -> dict:
    """The Pod the Deployment controller would create from the template."""
    template = deployment["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": template["metadata"].get("labels", {}),
                     "annotations": template["metadata"].get("annotations", {})},
        "spec": copy.deepcopy(template["spec"]),
    }


# --- the releases ----------------------------------------------------------------------

# Representative value sets, each installed as its own release in its own namespace.
# Namespaces named in `needs` are created first (the chart puts Roles there).
CASES = {
    "defaults": {"values": {}},
    "watch-namespace": {
        "values": {"watchNamespace": "sst-watch-target", "requireNamespaceAllowlist": True,
                   "rbac": {"readSecrets": False}},
        "needs": ["sst-watch-target"],
    },
    "single-no-leader-election": {
        "values": {"replicas": 1, "leaderElection": {"enabled": False},
                   "metrics": {"serviceMonitor": {"enabled": False}, "service": {"enabled": False}}},
    },
    "embedded-with-pvc": {
        "values": {"dataPlane": {"mode": "embedded",
                                 "embedded": {"persistence": {"enabled": True, "size": "2Gi"}}},
                   "podDisruptionBudget": {"enabled": True, "minAvailable": 1}},
    },
    "aws-irsa-extras": {
        "values": {
            "replicas": 2,
            "aws": {"region": "eu-west-1", "endpointUrl": "https://example-ats.iot.eu-west-1.amazonaws.com"},
            "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/shadowsync"}},
            "leaderElection": {"namespace": "sst-leases"},
            "extraArgs": ["--max-document-bytes=30720"],
            "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy.example:3128"},
                         {"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional"}],
            "image": {"pullSecrets": ["regcred"], "digest": "sha256:" + "a" * 64},
            "podAnnotations": {"example.com/team": "iot"},
            "podLabels": {"example.com/tier": "control"},
            "podDisruptionBudget": {"enabled": True},
            "metrics": {"port": 9090, "service": {"annotations": {"example.com/scrape": "true"}}},
            "logFormat": "text",
            "logLevel": "info,shadowsync=debug",
        },
        "needs": ["sst-leases"],
    },
}


def release_name(case: str) -> str:
    return f"sst-{case}"[:40]


def release_namespace(case: str) -> str:
    return f"sst-{case}-system"[:63]


def helm_config(cluster, namespace: str) -> helm.Config:
    return helm.Config(kubeconfig_path=str(cluster.kubeconfig), namespace=namespace)


def crd_state(cluster) -> dict[str, dict | None]:
    return {name: cluster.get(f"{RESOURCES['CustomResourceDefinition']}/{name}") for name in CRD_NAMES}


@pytest.fixture(scope="module")
def releases(cluster, chart):
    """Every case of CASES installed with Helm (the first install of the session also
    installs the CRDs). Returns case -> {name, namespace, values, release, crds_before}."""
    crds_before = crd_state(cluster)
    installed = {}
    configs = []
    try:
        for case, spec in CASES.items():
            namespace = release_namespace(case)
            cluster.namespace(namespace, RESTRICTED)
            for extra in spec.get("needs", []):
                cluster.namespace(extra, RESTRICTED)
            cfg = helm_config(cluster, namespace)
            configs.append((cfg, release_name(case)))
            release = cfg.install(chart, release_name(case), spec["values"], namespace=namespace, timeout=120)
            installed[case] = {"name": release_name(case), "namespace": namespace, "values": spec["values"],
                               "release": release, "crds_before": crds_before}
        yield installed
    finally:
        for cfg, name in configs:
            try:
                cfg.uninstall(name, ignore_not_found=True, timeout=60)
            finally:
                cfg.close()


@pytest.mark.parametrize("case", list(CASES))
def test_every_rendered_object_is_admitted_as_rendered(case, releases, cluster, chart):
    r = releases[case]
    assert r["release"]["status"] == "deployed" and r["release"]["revision"] == 1
    objects = manifest_objects(r["release"])
    # Helm installed what the offline rendering (which the other chart tests check) gives.
    offline = chartlib.render(r["values"], name=r["name"], namespace=r["namespace"], chart=chart)
    key = lambda o: (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, objects)) == sorted(map(key, offline))
    assert sorted(objects, key=key) == sorted(offline, key=key)
    assert by_kind(objects, "Deployment"), "no Deployment rendered"
    for obj in objects:
        namespace = obj["metadata"].get("namespace")
        live = cluster.get(ref(obj), namespace)
        assert live is not None, f"{obj['kind']} {namespace}/{obj['metadata']['name']} is not in the cluster"
        assert (live["apiVersion"], live["kind"]) == (obj["apiVersion"], obj["kind"])
        annotations = live["metadata"].get("annotations", {})
        assert annotations.get("meta.helm.sh/release-name") == r["name"]
        assert annotations.get("meta.helm.sh/release-namespace") == r["namespace"]
        diff = differences(obj, live)
        assert not diff, f"{obj['kind']} {obj['metadata']['name']} was changed on admission: {diff}"


def test_expected_kinds_per_value_set(releases):
    """The value sets really exercise what they claim (a Role instead of a ClusterRole,
    a claim, no leader-election Role, ...)."""
    kinds = {case: sorted(o["kind"] for o in manifest_objects(r["release"])) for case, r in releases.items()}
    assert kinds["defaults"] == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Role", "RoleBinding",
                                 "Service", "ServiceAccount"]
    watch = manifest_objects(releases["watch-namespace"]["release"])
    assert {(o["kind"], o["metadata"].get("namespace")) for o in watch if o["kind"] in ("Role", "RoleBinding")} == {
        ("Role", "sst-watch-target"), ("RoleBinding", "sst-watch-target"),
        ("Role", release_namespace("watch-namespace")), ("RoleBinding", release_namespace("watch-namespace"))}
    assert "Role" not in kinds["single-no-leader-election"] and "Service" not in kinds["single-no-leader-election"]
    assert "PersistentVolumeClaim" in kinds["embedded-with-pvc"]
    assert "PodDisruptionBudget" in kinds["aws-irsa-extras"]
    leases = [o for o in manifest_objects(releases["aws-irsa-extras"]["release"])
              if o["kind"] == "Role" and o["metadata"]["name"].endswith("-leader-election")]
    assert [o["metadata"]["namespace"] for o in leases] == ["sst-leases"]


def test_first_install_installs_the_crds_unowned(releases, cluster, chart):
    """Helm's first install creates crds/, as written and as plain objects that no
    release owns."""
    first = next(iter(releases.values()))
    assert first["crds_before"] == {name: None for name in CRD_NAMES}, (
        "the CRDs existed before the first Helm install of the session; this check needs a fresh cluster"
    )
    chart_crds = {yaml.safe_load(c["data"])["metadata"]["name"]: yaml.safe_load(c["data"]) for c in chart.crds}
    for name, live in crd_state(cluster).items():
        assert live is not None, f"CRD {name} was not installed"
        established = {c["type"]: c["status"] for c in live.get("status", {}).get("conditions", [])}
        assert established.get("Established") == "True", f"CRD {name} not established: {established}"
        # Admitted as written: schema, CEL rules, printer columns.
        diff = differences(chart_crds[name]["spec"], live["spec"])
        assert not diff, f"CRD {name} differs from crds/: {diff}"
        # Not part of any release: nothing for an uninstall or upgrade to act on.
        assert "meta.helm.sh/release-name" not in live["metadata"].get("annotations", {})
        assert "app.kubernetes.io/managed-by" not in live["metadata"].get("labels", {})
    # The manifest of a release never carries them either.
    for r in releases.values():
        assert not by_kind(manifest_objects(r["release"]), "CustomResourceDefinition")


# --- Pod Security admission -------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_pod_template_is_admitted_under_restricted(case, releases, cluster):
    """The installed Deployment's template, created as a Pod where "restricted" is
    enforced, passes the real Pod Security admission (and the ServiceAccount plugin)."""
    r = releases[case]
    namespace = r["namespace"]
    assert cluster.get("namespaces/" + namespace)["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    (deployment,) = by_kind(manifest_objects(r["release"]), "Deployment")
    live = cluster.get(ref(deployment), namespace)
    pod = pod_from_template(live, f"{r['name']}-template-check", namespace)
    out = cluster.create(pod, dry_run="server", check=False)
    assert out.returncode == 0, f"the pod template was refused: {out.stderr}"
    assert "created (server dry run)" in out.stdout
    # Admission also produced no Pod Security warning (warn=restricted is set too).
    assert "would violate PodSecurity" not in out.stderr, out.stderr


def _drop(path):
    def change(spec):
        target = spec
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return change


def _set(path, value):
    def change(spec):
        target = spec
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


C0 = ("containers", 0, "securityContext")
VIOLATIONS = {
    "allowPrivilegeEscalation": ([_set((*C0, "allowPrivilegeEscalation"), True)],
                                 'allowPrivilegeEscalation != false (container "operator"'),
    "runAsNonRoot removed": ([_drop(("securityContext", "runAsNonRoot")), _drop((*C0, "runAsNonRoot"))],
                             "runAsNonRoot != true"),
    "capabilities not dropped": ([_drop((*C0, "capabilities"))], "unrestricted capabilities"),
    "seccomp removed": ([_drop(("securityContext", "seccompProfile")), _drop((*C0, "seccompProfile"))],
                        "seccompProfile"),
    "hostNetwork": ([_set(("hostNetwork",), True)], "host namespaces (hostNetwork=true)"),
    "hostPath volume": ([lambda s: s["volumes"].append({"name": "host", "hostPath": {"path": "/var/run"}})],
                        'restricted volume types (volume "host" uses restricted volume type "hostPath")'),
    "runAsUser 0": ([_set((*C0, "runAsUser"), 0)], "runAsUser=0"),
}


@pytest.fixture(scope="module")
def unenforced_namespace(cluster, releases):
    """A namespace without Pod Security labels, with the defaults' ServiceAccount."""
    name = "sst-psa-unenforced"
    cluster.namespace(name)
    sa = by_kind(manifest_objects(releases["defaults"]["release"]), "ServiceAccount")[0]["metadata"]["name"]
    cluster.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": name}})
    return name


@pytest.mark.parametrize("violation", list(VIOLATIONS))
def test_pod_template_with_one_violation_is_refused(violation, releases, cluster, unenforced_namespace):
    """Negative control: the admission really runs. One restricted-profile violation
    in the same template is refused with a message naming it, while the same Pod is
    accepted in a namespace that enforces nothing."""
    changes, expected = VIOLATIONS[violation]
    r = releases["defaults"]
    (deployment,) = by_kind(manifest_objects(r["release"]), "Deployment")
    live = cluster.get(ref(deployment), r["namespace"])
    pod = pod_from_template(live, "violation-check", r["namespace"])
    for change in changes:
        change(pod["spec"])
    refused = cluster.create(pod, dry_run="server", check=False)
    assert refused.returncode != 0, f"a pod with {violation} was admitted under restricted"
    assert 'violates PodSecurity "restricted:latest"' in refused.stderr, refused.stderr
    assert expected in refused.stderr, refused.stderr
    pod["metadata"]["namespace"] = unenforced_namespace
    accepted = cluster.create(pod, dry_run="server", check=False)
    assert accepted.returncode == 0, f"refused without Pod Security enforcement too: {accepted.stderr}"


def test_installed_deployments_raise_no_pod_security_audit(releases, cluster):
    """audit=restricted is set on every release namespace: the Pod Security admission
    annotates a Deployment whose template violates the profile in the audit log. None of
    the chart's Deployments is annotated, while a violating one is (the control)."""
    control_ns = release_namespace("defaults")
    (deployment,) = by_kind(manifest_objects(releases["defaults"]["release"]), "Deployment")
    bad = copy.deepcopy(cluster.get(ref(deployment), control_ns))
    bad = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "audit-control", "namespace": control_ns}, "spec": bad["spec"]}
    bad["spec"]["template"]["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    out = cluster.create(bad, dry_run="server")
    assert "would violate PodSecurity" in out.stderr, out.stderr

    def annotated():
        found = {}
        for event in cluster.audit_events():
            obj = event.get("objectRef", {})
            if obj.get("resource") == "deployments" and event.get("verb") in ("create", "patch", "update"):
                violations = event.get("annotations", {}).get("pod-security.kubernetes.io/audit-violations")
                if violations:
                    found[(obj.get("namespace"), obj.get("name"))] = violations
        return found

    found = wait_until(lambda: annotated().get((control_ns, "audit-control")) and annotated(),
                       timeout=10, what="the audit annotation of the violating control Deployment")
    assert "allowPrivilegeEscalation" in found[(control_ns, "audit-control")]
    chart_deployments = {(r["namespace"], by_kind(manifest_objects(r["release"]), "Deployment")[0]["metadata"]["name"])
                         for r in releases.values()}
    assert not {k: v for k, v in found.items() if k in chart_deployments}


# --- upgrade and uninstall ------------------------------------------------------------


def edited_chart_copy(tmp_path: Path, *, spec: bool = True) -> helm.Chart:
    """The chart with a changed ThingShadow CRD in crds/: a new label, and with `spec` a
    new short name."""
    copy_dir = tmp_path / "shadowsync"
    shutil.copytree(chartlib.CHART, copy_dir)
    path = copy_dir / "crds" / "thingshadows.yaml"
    crd = yaml.safe_load(path.read_text(encoding="utf-8"))
    crd["metadata"]["labels"] = {"shadowsync.dev/edited-crd": "true"}
    if spec:
        crd["spec"]["names"]["shortNames"].append("tshadowedited")
    path.write_text(yaml.safe_dump(crd, sort_keys=False), encoding="utf-8")
    return helm.Chart.load(str(copy_dir))


def test_upgrade_applies_changed_values_and_leaves_crds_alone(releases, cluster, chart, tmp_path):
    namespace, name = "sst-upgrade-system", "sst-upgrade"
    cluster.namespace(namespace, RESTRICTED)
    cfg = helm_config(cluster, namespace)
    try:
        first = cfg.install(chart, name, {}, namespace=namespace, timeout=120)
        fullname = by_kind(manifest_objects(first), "Deployment")[0]["metadata"]["name"]
        before = crd_state(cluster)
        deployment_before = cluster.get(f"deployments.apps/{fullname}", namespace)
        assert "--leader-election" in deployment_before["spec"]["template"]["spec"]["containers"][0]["args"]
        assert cluster.get(f"roles.rbac.authorization.k8s.io/{fullname}-leader-election", namespace)

        edited = edited_chart_copy(tmp_path)
        try:
            changed = {
                "concurrency": 4,
                "leaderElection": {"enabled": False},
                "logLevel": "debug",
                "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy.example:3128"}],
                "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/x"}},
                "podDisruptionBudget": {"enabled": True},
            }
            second = cfg.upgrade(edited, name, changed, namespace=namespace, timeout=120)
        finally:
            edited.close()
        assert (second["revision"], second["status"]) == (2, "deployed")
        assert [h["revision"] for h in cfg.history(name)] == [1, 2]

        deployment = cluster.get(f"deployments.apps/{fullname}", namespace)
        assert deployment["metadata"]["generation"] == deployment_before["metadata"]["generation"] + 1
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert "--concurrency=4" in container["args"] and "--concurrency=16" not in container["args"]
        assert "--leader-election" not in container["args"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["RUST_LOG"] == "debug" and env["HTTPS_PROXY"] == "http://proxy.example:3128"
        sa = cluster.get(f"serviceaccounts/{fullname}", namespace)
        assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == "arn:aws:iam::111122223333:role/x"
        assert cluster.get(f"poddisruptionbudgets.policy/{fullname}", namespace) is not None
        # Objects no longer rendered are deleted by the upgrade.
        for gone in (f"roles.rbac.authorization.k8s.io/{fullname}-leader-election",
                     f"rolebindings.rbac.authorization.k8s.io/{fullname}-leader-election"):
            wait_until(lambda g=gone: cluster.get(g, namespace) is None, timeout=30, what=f"{gone} deleted")

        # crds/ is never upgraded: the edited CRD of the new chart did not reach the cluster,
        # and the CRDs were not written at all.
        after = crd_state(cluster)
        for crd in CRD_NAMES:
            assert after[crd]["metadata"]["resourceVersion"] == before[crd]["metadata"]["resourceVersion"], crd
        ts = after["thingshadows.iot.shadowsync.dev"]
        assert "tshadowedited" not in ts["spec"]["names"].get("shortNames", [])
        assert "shadowsync.dev/edited-crd" not in ts["metadata"].get("labels", {})
    finally:
        cfg.uninstall(name, ignore_not_found=True, timeout=60)
        cfg.close()


def test_every_install_applies_crds_even_over_existing_ones(releases, cluster, chart, tmp_path):
    """Helm 4 (the library here) installs crds/ with server-side apply on every install,
    not only when they are missing (Helm 3 skipped existing ones): installing another
    release of a chart whose CRDs differ changes the cluster's CRDs, in both directions.
    The chart README says so. (Only a label differs here: a changed spec field that
    `kubectl apply --server-side` also owns would make the install fail with a conflict.)"""
    ts = "thingshadows.iot.shadowsync.dev"
    label = "shadowsync.dev/edited-crd"
    assert label not in crd_state(cluster)[ts]["metadata"].get("labels", {})
    edited = edited_chart_copy(tmp_path, spec=False)
    for namespace in ("sst-second-system", "sst-third-system"):
        cluster.namespace(namespace, RESTRICTED)
    second, third = helm_config(cluster, "sst-second-system"), helm_config(cluster, "sst-third-system")
    try:
        second.install(edited, "sst-second", {}, namespace="sst-second-system", timeout=120)
        after_second = crd_state(cluster)
        assert after_second[ts]["metadata"].get("labels", {}).get(label) == "true", (
            "a second install did not apply the chart's CRD over the existing one"
        )
        second.uninstall("sst-second", timeout=60)
        assert crd_state(cluster)[ts]["metadata"]["uid"] == after_second[ts]["metadata"]["uid"]
        # Installing the unedited chart again puts its CRD back.
        third.install(chart, "sst-third", {}, namespace="sst-third-system", timeout=120)
        assert label not in crd_state(cluster)[ts]["metadata"].get("labels", {})
    finally:
        second.uninstall("sst-second", ignore_not_found=True, timeout=60)
        third.uninstall("sst-third", ignore_not_found=True, timeout=60)
        second.close()
        third.close()
        edited.close()


def test_install_conflicts_with_different_crds_applied_by_kubectl(releases, cluster, tmp_path):
    """Since Helm 4 applies crds/ server-side, CRDs applied with `kubectl apply
    --server-side` (deploy/install.yaml, or the README's upgrade step) are co-owned by
    kubectl: installing a chart whose CRD sets one of those fields differently fails with
    a conflict, and changes nothing."""
    cluster.kubectl("apply", "--server-side", "-f", str(chartlib.CHART / "crds"))
    before = crd_state(cluster)
    namespace = "sst-conflict-system"
    cluster.namespace(namespace, RESTRICTED)
    edited = edited_chart_copy(tmp_path)  # a new short name
    cfg = helm_config(cluster, namespace)
    try:
        with pytest.raises(helm.HelmError) as refused:
            cfg.install(edited, "sst-conflict", {}, namespace=namespace, timeout=120)
        message = str(refused.value)
        assert "conflict" in message and '"kubectl"' in message and ".spec.names.shortNames" in message, message
        assert not cfg.list(name_filter="^sst-conflict$", all_states=True)
        after = crd_state(cluster)
        for crd in CRD_NAMES:
            assert after[crd]["metadata"]["resourceVersion"] == before[crd]["metadata"]["resourceVersion"], crd
    finally:
        cfg.uninstall("sst-conflict", ignore_not_found=True, timeout=60)
        cfg.close()
        edited.close()


def test_uninstall_deletes_the_release_but_not_crds_resources_or_kept_claim(releases, cluster, chart):
    namespace, name = "sst-uninstall-system", "sst-uninstall"
    cluster.namespace(namespace, RESTRICTED)
    values = {"dataPlane": {"mode": "embedded", "embedded": {"persistence": {"enabled": True}}},
              "podDisruptionBudget": {"enabled": True}}
    cfg = helm_config(cluster, namespace)
    try:
        release = cfg.install(chart, name, values, namespace=namespace, timeout=120)
        objects = manifest_objects(release)
        assert {"ClusterRole", "ClusterRoleBinding", "PersistentVolumeClaim", "Deployment"} <= {o["kind"] for o in objects}
        for obj in objects:
            assert cluster.get(ref(obj), obj["metadata"].get("namespace")) is not None, ref(obj)
        crds_before = crd_state(cluster)
        # A resource of the CRDs: it must survive the uninstall, since the CRDs do.
        shadow = yaml.safe_load((REPO / "deploy" / "examples" / "kitchen-lamp.yaml").read_text(encoding="utf-8"))
        shadow["metadata"]["namespace"] = namespace
        cluster.apply(shadow)

        result = cfg.uninstall(name, timeout=60)
        assert result["release"]["name"] == name
        assert not cfg.list(name_filter=f"^{name}$", all_states=True)
        # The release's Secret (Helm's storage) is gone too.
        assert not json.loads(cluster.kubectl("get", "secrets", "-n", namespace, "-l", f"owner=helm,name={name}",
                                              "-o", "json").stdout)["items"]
        for obj in objects:
            obj_ns = obj["metadata"].get("namespace")
            if obj["kind"] == "PersistentVolumeClaim":
                # helm.sh/resource-policy: keep
                claim = cluster.get(ref(obj), obj_ns)
                assert claim is not None and claim["metadata"].get("deletionTimestamp") is None, "the claim was deleted"
            else:
                wait_until(lambda o=obj, n=obj_ns: cluster.get(ref(o), n) is None, timeout=30,
                           what=f"{ref(obj)} deleted by the uninstall")
        crds_after = crd_state(cluster)
        for crd in CRD_NAMES:
            assert crds_after[crd] is not None, f"uninstall deleted CRD {crd}"
            assert crds_after[crd]["metadata"]["uid"] == crds_before[crd]["metadata"]["uid"]
            assert crds_after[crd]["metadata"].get("deletionTimestamp") is None
        assert cluster.get("thingshadows.iot.shadowsync.dev/kitchen-lamp", namespace) is not None
    finally:
        cfg.uninstall(name, ignore_not_found=True, timeout=60)
        cfg.close()


# --- deploy/install.yaml ----------------------------------------------------------------


def test_install_yaml_applies_server_side_and_reapplies_idempotently(releases, cluster):
    path = str(chartlib.INSTALL_YAML)
    objects = [d for d in yaml.safe_load_all(chartlib.INSTALL_YAML.read_text(encoding="utf-8")) if d]
    first = cluster.kubectl("apply", "--server-side", "-f", path)
    assert first.stdout.count("serverside-applied") == len(objects), first.stdout

    def versions():
        out = {}
        for obj in objects:
            live = cluster.get(ref(obj), obj["metadata"].get("namespace"))
            assert live is not None, f"{ref(obj)} not admitted"
            assert live["kind"] == obj["kind"]
            diff = differences(obj, live)
            assert not diff, f"{ref(obj)} changed on admission: {diff}"
            out[ref(obj)] = live["metadata"]["resourceVersion"]
        return out

    # The CRDs must be established before the second apply counts as a no-op.
    # Polled: right after the create a CRD has no status yet, and `kubectl wait` fails on
    # it instead of waiting.
    deadline = time.monotonic() + 60
    for crd in CRD_NAMES:
        while True:
            got = cluster.kubectl(
                "get", "crd", crd, "-o",
                'jsonpath={.status.conditions[?(@.type=="Established")].status}', check=False,
            )
            if got.returncode == 0 and got.stdout.strip() == "True":
                break
            assert time.monotonic() < deadline, f"CRD {crd} not Established: {got.stdout}{got.stderr}"
            time.sleep(0.2)
    before = versions()
    second = cluster.kubectl("apply", "--server-side", "-f", path)
    assert second.stdout.count("serverside-applied") == len(objects), second.stdout
    assert versions() == before, "a second apply changed objects"
    diff = cluster.kubectl("diff", "--server-side", "-f", path, check=False)
    assert diff.returncode == 0, f"kubectl diff after apply is not empty:\n{diff.stdout}{diff.stderr}"

    # Its Deployment's pod is admitted in its own Namespace, which enforces "restricted".
    (namespace,) = by_kind(objects, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    (deployment,) = by_kind(objects, "Deployment")
    live = cluster.get(ref(deployment), namespace["metadata"]["name"])
    pod = pod_from_template(live, "install-yaml-check", namespace["metadata"]["name"])
    out = cluster.create(pod, dry_run="server", check=False)
    assert out.returncode == 0, out.stderr


# --- ThingShadowSet children under the chart's RBAC ------------------------------------

GROUP_VERSION = "iot.shadowsync.dev/v1alpha1"
SET_LABEL = "iot.shadowsync.dev/set"
# The apiserver's words when OwnerReferencesPermissionEnforcement refuses.
NO_FINALIZERS = "cannot set blockOwnerDeletion if an ownerReference refers to a resource you can't set finalizers on"
NO_MAPPING = "cannot find RESTMapping"


def fleet_set(name: str, namespace: str) -> dict:
    # No things: the set needs no data plane, and no operator runs here anyway.
    return {"apiVersion": GROUP_VERSION, "kind": "ThingShadowSet", "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"things": []}, "template": {"desired": {"power": "on"}}}}


def child(set_obj: dict, thing: str, *, owned: bool = True, block: bool = True) -> dict:
    """A child ThingShadow as the fleet controller writes it."""
    meta = set_obj["metadata"]
    obj = {"apiVersion": GROUP_VERSION, "kind": "ThingShadow",
           "metadata": {"name": f"{meta['name']}-{thing}", "namespace": meta["namespace"],
                        "labels": {SET_LABEL: meta["name"]}},
           "spec": {"thingName": thing, "desired": {"power": "on"}}}
    if owned:
        obj["metadata"]["ownerReferences"] = [{
            "apiVersion": GROUP_VERSION, "kind": "ThingShadowSet", "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": block}]
    return obj


def as_user(cluster, kubeconfig: Path, *args: str, obj: dict | None = None) -> subprocess.CompletedProcess:
    """kubectl as a ServiceAccount. The admission plugin resolves the owner's kind through
    a discovery cache that kube-apiserver refreshes every 30 s, so right after the CRDs
    were installed it may not know ThingShadowSet yet: that answer (and only that one) is
    retried until the deadline."""
    def attempt():
        out = cluster.kubectl(*args, input=json.dumps(obj) if obj else None, kubeconfig=kubeconfig, check=False)
        return None if NO_MAPPING in out.stderr else out
    return wait_until(attempt, timeout=45, interval=0.5, what=f"the admission plugin to know ThingShadowSet ({args})")


def role_without(rules: list[dict], resource: str) -> list[dict]:
    """The chart's rules on our API group, minus every grant on `resource`."""
    kept = []
    for rule in rules:
        if rule["apiGroups"] != ["iot.shadowsync.dev"]:
            continue
        resources = [r for r in rule["resources"] if r != resource]
        if resources:
            kept.append({**rule, "resources": resources})
    return kept


@pytest.mark.parametrize("case", ["defaults", "watch-namespace"])
def test_the_chart_rbac_lets_the_operator_own_a_sets_children(case, releases, cluster, tmp_path):
    """With the release's own ServiceAccount token, under its rendered RBAC (a ClusterRole,
    or a Role in `watchNamespace`), against kube-apiserver with
    OwnerReferencesPermissionEnforcement: everything the fleet controller does with a set
    is admitted. The garbage collector then deletes the children with their set, which
    shows that the ownerReferences are real."""
    r = releases[case]
    namespace = r["values"].get("watchNamespace") or "sst-fleet"
    cluster.namespace(namespace)
    objects = manifest_objects(r["release"])
    sa = by_kind(objects, "ServiceAccount")[0]["metadata"]["name"]
    operator = cluster.token_kubeconfig(r["namespace"], sa, tmp_path / "operator.kubeconfig")
    can = lambda *a: cluster.kubectl("auth", "can-i", *a, "-n", namespace, kubeconfig=operator,  # noqa: E731
                                     check=False).returncode == 0
    for verb, resource in [("create", "thingshadows"), ("delete", "thingshadows"), ("watch", "thingshadowsets"),
                           ("update", "thingshadowsets/finalizers")]:
        assert can(verb, f"{resource.split('/')[0]}.iot.shadowsync.dev",
                   *([f"--subresource={resource.split('/')[1]}"] if "/" in resource else [])), (verb, resource)
    assert can("patch", "thingshadowsets.iot.shadowsync.dev", "--subresource=status")
    for verb, resource in [("create", "thingshadowsets"), ("delete", "thingshadowsets"), ("patch", "thingshadowsets"),
                           ("create", "retainedmessages"), ("delete", "retainedmessages"), ("update", "thingshadows")]:
        assert not can(verb, f"{resource}.iot.shadowsync.dev"), (verb, resource)

    name = f"lamps-{case}"
    cluster.apply(fleet_set(name, namespace))
    owner = cluster.get(f"{RESOURCES['ThingShadowSet']}/{name}", namespace)

    # Create a child owned by the set, blocking its deletion.
    out = as_user(cluster, operator, "create", "-f", "-", obj=child(owner, "lamp-1"))
    assert out.returncode == 0, out.stderr
    # Adopt one created without an owner: an update of ownerReferences needs delete on it.
    out = as_user(cluster, operator, "create", "-f", "-", obj=child(owner, "lamp-2", owned=False))
    assert out.returncode == 0, out.stderr
    adopted = child(owner, "lamp-2")
    out = as_user(cluster, operator, "apply", "--server-side", "--field-manager=shadowsync", "-f", "-", obj=adopted)
    assert out.returncode == 0, out.stderr
    live = cluster.get(f"{RESOURCES['ThingShadow']}/{name}-lamp-2", namespace)
    assert live["metadata"]["ownerReferences"] == adopted["metadata"]["ownerReferences"]
    # The set's status, by server-side apply on the status subresource.
    status = {"apiVersion": GROUP_VERSION, "kind": "ThingShadowSet", "metadata": {"name": name, "namespace": namespace},
              "status": {"observedGeneration": 1, "phase": "Complete", "targeted": 2, "updated": 2}}
    out = as_user(cluster, operator, "apply", "--server-side", "--field-manager=shadowsync", "--subresource=status",
                  "-f", "-", obj=status)
    assert out.returncode == 0, out.stderr
    assert cluster.get(f"{RESOURCES['ThingShadowSet']}/{name}", namespace)["status"]["targeted"] == 2
    # A thing left the set: its child is deleted.
    out = as_user(cluster, operator, "delete", RESOURCES["ThingShadow"], f"{name}-lamp-1", "-n", namespace)
    assert out.returncode == 0, out.stderr

    # Nothing the ServiceAccount asked for was refused.
    user = f"system:serviceaccount:{r['namespace']}:{sa}"
    refused = [(e["verb"], e.get("requestURI")) for e in cluster.audit_events(user)
               if e.get("responseStatus", {}).get("code") in (401, 403)]
    assert not refused, refused

    # The set goes, and the garbage collector takes its remaining child with it.
    cluster.kubectl("delete", RESOURCES["ThingShadowSet"], name, "-n", namespace, "--wait=false")
    wait_until(lambda: not json.loads(cluster.kubectl("get", RESOURCES["ThingShadow"], "-n", namespace, "-l",
                                                      f"{SET_LABEL}={name}", "-o", "json").stdout)["items"],
               timeout=60, what="the garbage collector to delete the children of the deleted set")


def test_without_the_finalizers_rule_children_are_refused(releases, cluster, tmp_path):
    """Control: the chart's rules without thingshadowsets/finalizers (and, separately,
    without delete on thingshadows), bound to another ServiceAccount. The apiserver's
    OwnerReferencesPermissionEnforcement refuses a child whose ownerReference blocks the
    set's deletion, naming the rule; the same child without blockOwnerDeletion is
    admitted, so the finalizers rule alone makes the difference. Without delete, adopting
    an existing ThingShadow (an update of its ownerReferences) is refused."""
    namespace = "sst-fleet-control"
    cluster.namespace(namespace)
    (role,) = [o for o in manifest_objects(releases["defaults"]["release"]) if o["kind"] == "ClusterRole"]
    users = {}
    for missing in ("thingshadowsets/finalizers", "thingshadows"):
        label = missing.replace("/", "-")
        rules = role_without(role["rules"], missing)
        if missing == "thingshadows":
            # Everything on ThingShadows but delete.
            rules.append({"apiGroups": ["iot.shadowsync.dev"], "resources": ["thingshadows"],
                          "verbs": ["get", "list", "watch", "patch", "create"]})
        grants = {(r, v) for rule in rules for r in rule["resources"] for v in rule["verbs"]}
        # Exactly one of the two grants is missing.
        expected = {("thingshadows", "delete"), ("thingshadowsets/finalizers", "update")}
        expected.discard(("thingshadows", "delete") if missing == "thingshadows" else (missing, "update"))
        assert grants & {("thingshadows", "delete"), ("thingshadowsets/finalizers", "update")} == expected
        cluster.apply([
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": f"no-{label}", "namespace": namespace}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": {"name": f"no-{label}", "namespace": namespace}, "rules": rules},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": f"no-{label}", "namespace": namespace},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"no-{label}"},
             "subjects": [{"kind": "ServiceAccount", "name": f"no-{label}", "namespace": namespace}]},
        ])
        users[missing] = cluster.token_kubeconfig(namespace, f"no-{label}", tmp_path / f"{label}.kubeconfig")
    cluster.apply(fleet_set("lamps", namespace))
    owner = cluster.get(f"{RESOURCES['ThingShadowSet']}/lamps", namespace)

    no_finalizers = users["thingshadowsets/finalizers"]
    refused = as_user(cluster, no_finalizers, "create", "-f", "-", obj=child(owner, "lamp-1"))
    assert refused.returncode != 0, "a child blocking its set's deletion was admitted without the finalizers rule"
    assert NO_FINALIZERS in refused.stderr, refused.stderr
    assert cluster.get(f"{RESOURCES['ThingShadow']}/lamps-lamp-1", namespace) is None
    admitted = as_user(cluster, no_finalizers, "create", "-f", "-", obj=child(owner, "lamp-1", block=False))
    assert admitted.returncode == 0, admitted.stderr

    no_delete = users["thingshadows"]
    created = as_user(cluster, no_delete, "create", "-f", "-", obj=child(owner, "lamp-2", owned=False))
    assert created.returncode == 0, created.stderr
    adopt = as_user(cluster, no_delete, "apply", "--server-side", "--field-manager=shadowsync", "-f", "-",
                    obj=child(owner, "lamp-2"))
    assert adopt.returncode != 0, "an ownerReference was added without delete on thingshadows"
    assert "cannot set an ownerRef on a resource you can't delete" in adopt.stderr, adopt.stderr


# --- the operator under the chart's namespaced RBAC -------------------------------------


def shadowsync_bin() -> Path:
    path = Path(os.environ.get("SHADOWSYNC_BIN", REPO / "target" / "debug" / "shadowsync"))
    if not path.is_file():
        pytest.fail(f"shadowsync binary not found at {path}: run `cargo build --bin shadowsync` or set SHADOWSYNC_BIN")
    return path


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test process dies, even by SIGKILL (Linux)."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Processes:
    """Processes started by a test; stopped (TERM, then KILL) at teardown, and by the
    kernel if the test process dies before that."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.started: list[tuple[subprocess.Popen, Path]] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
        log = self.dir / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    preexec_fn=_die_with_parent)
        self.started.append((proc, log))
        return proc, log

    def stop(self, proc: subprocess.Popen, timeout: float = 30) -> int:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        return proc.returncode

    def close(self) -> None:
        for proc, _ in self.started:
            self.stop(proc, timeout=15)


@pytest.fixture
def processes(tmp_path):
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.close()


def log_tail(log: Path, lines: int = 15, width: int = 400) -> str:
    return "\n".join(line[:width] for line in log.read_text(errors="replace").splitlines()[-lines:])


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def condition(obj: dict | None, kind: str) -> dict | None:
    if obj is None:
        return None
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), None)


def test_operator_syncs_a_shadow_with_the_namespaced_rbac(releases, cluster, chart, processes, tmp_path):
    binary = shadowsync_bin()
    namespace, watched, name = "sst-operator-system", "sst-operator-watched", "sst-operator"
    cluster.namespace(namespace, RESTRICTED)
    cluster.namespace(watched)
    cfg = helm_config(cluster, namespace)
    try:
        release = cfg.install(chart, name, {"watchNamespace": watched}, namespace=namespace, timeout=120)
        objects = manifest_objects(release)
        kinds = {(o["kind"], o["metadata"].get("namespace")) for o in objects}
        assert ("Role", watched) in kinds and ("RoleBinding", watched) in kinds
        assert all(o["metadata"]["name"].endswith(f"-namespace-{watched}") for o in by_kind(objects, "ClusterRole"))
        (sa,) = by_kind(objects, "ServiceAccount")
        sa_name = sa["metadata"]["name"]
        (deployment,) = by_kind(objects, "Deployment")
        live = cluster.get(ref(deployment), namespace)
        pod_spec = live["spec"]["template"]["spec"]
        assert pod_spec["serviceAccountName"] == sa_name
        (container,) = pod_spec["containers"]

        # The data plane the operator writes to.
        dataplane, dataplane_log = processes.start(
            "dataplane", [str(binary), "dataplane", "serve", "--listen", "127.0.0.1:0"],
            env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
        match = wait_until(lambda: dataplane.poll() is None and re.search(r"listening on (http://\S+)",
                                                                          dataplane_log.read_text(errors="replace")),
                           timeout=30, what=f"the data plane to listen ({dataplane_log})")
        endpoint = match.group(1)

        # Exactly the container's args: only the metrics address and the data plane change.
        metrics_port = free_port()
        args = list(container["args"])
        assert args[0] == "run"
        metrics = [i for i, a in enumerate(args) if a.startswith("--metrics-addr=")]
        assert len(metrics) == 1, args
        args[metrics[0]] = f"--metrics-addr=127.0.0.1:{metrics_port}"
        assert not any(a.startswith("--endpoint-url") for a in args)
        assert f"--namespace={watched}" in args and "--leader-election" in args and "--data-plane=aws" in args
        args.append(f"--endpoint-url={endpoint}")

        # The environment the Deployment gives, with the fieldRefs resolved as the kubelet would.
        pod_name = f"{deployment['metadata']['name']}-5f7c9d8b6d-x7k2p"
        field_refs = {"metadata.namespace": namespace, "metadata.name": pod_name}
        env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path),
               "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
               "AWS_EC2_METADATA_DISABLED": "true"}
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = var["value"]
            else:
                path = var["valueFrom"]["fieldRef"]["fieldPath"]
                assert path in field_refs, f"unexpected env source {var}"
                env[var["name"]] = field_refs[path]
        assert (env["POD_NAMESPACE"], env["POD_NAME"]) == (namespace, pod_name)
        env["KUBECONFIG"] = str(cluster.token_kubeconfig(namespace, sa_name, tmp_path / "operator.kubeconfig"))

        # What the ServiceAccount may do is namespaced.
        sa_kubeconfig = Path(env["KUBECONFIG"])
        can = lambda *a: cluster.kubectl("auth", "can-i", *a, kubeconfig=sa_kubeconfig, check=False).returncode == 0  # noqa: E731
        assert can("list", "thingshadows.iot.shadowsync.dev", "-n", watched)
        assert can("patch", "thingshadows.iot.shadowsync.dev", "--subresource=status", "-n", watched)
        assert not can("list", "thingshadows.iot.shadowsync.dev", "--all-namespaces")
        assert not can("list", "thingshadows.iot.shadowsync.dev", "-n", namespace)
        assert not can("get", f"namespaces/{namespace}")
        assert can("get", f"namespaces/{watched}")

        operator, operator_log = processes.start("operator", [str(binary), *args], env=env)

        shadow = yaml.safe_load((REPO / "deploy" / "examples" / "kitchen-lamp.yaml").read_text(encoding="utf-8"))
        shadow["metadata"]["namespace"] = watched
        thing = shadow["spec"]["thingName"]
        cluster.apply(shadow)

        user = f"system:serviceaccount:{namespace}:{sa_name}"

        def refused():
            return sorted({(e["verb"], e.get("requestURI", "")) for e in cluster.audit_events(user)
                           if e.get("responseStatus", {}).get("code") in (401, 403)})

        def ready():
            assert operator.poll() is None, f"the operator exited ({operator.returncode}):\n{log_tail(operator_log)}"
            # A refused request is a finding at once, not after the deadline.
            assert not refused(), f"requests refused to the operator: {refused()}"
            live_shadow = cluster.get(f"thingshadows.iot.shadowsync.dev/{shadow['metadata']['name']}", watched)
            cond = condition(live_shadow, "Ready")
            return cond and cond["status"] == "True" and live_shadow
        try:
            synced = wait_until(ready, timeout=90, interval=0.25, what="the ThingShadow to be Ready=True")
        except AssertionError as e:
            raise AssertionError(f"{e}\noperator log:\n{log_tail(operator_log)}") from None
        assert "iot.shadowsync.dev/cleanup" in synced["metadata"].get("finalizers", [])

        status, body = http_get(f"{endpoint}/things/{thing}/shadow")
        assert status == 200, body
        assert json.loads(body)["state"]["desired"] == shadow["spec"]["desired"]

        # Leader election: the Lease is in the release namespace, held by this "pod".
        lease = cluster.get("leases.coordination.k8s.io/shadowsync-leader", namespace)
        assert lease is not None, "no Lease shadowsync-leader in the release namespace"
        assert lease["spec"]["holderIdentity"] == pod_name
        # Ready once every cache synced (which may come just after the first reconcile).
        wait_until(lambda: http_get(f"http://127.0.0.1:{metrics_port}/readyz")[0] == 200, timeout=30,
                   what="/readyz to answer 200")

        # Deleting the resource runs its cleanup (deletionPolicy ClearDesired) and the
        # operator removes its finalizer: also through the namespaced RBAC.
        cluster.kubectl("delete", "thingshadows.iot.shadowsync.dev", shadow["metadata"]["name"], "-n", watched,
                        "--wait=false")
        wait_until(lambda: cluster.get(f"thingshadows.iot.shadowsync.dev/{shadow['metadata']['name']}", watched) is None,
                   timeout=60, what="the ThingShadow to be deleted after its cleanup")
        status, body = http_get(f"{endpoint}/things/{thing}/shadow")
        desired = (json.loads(body).get("state", {}).get("desired") or {}) if status == 200 else {}
        assert not set(desired) & set(shadow["spec"]["desired"]), desired

        # SIGTERM: the operator releases the Lease and exits cleanly.
        assert processes.stop(operator) == 0, log_tail(operator_log)
        released = cluster.get("leases.coordination.k8s.io/shadowsync-leader", namespace)
        assert not released["spec"].get("holderIdentity"), released["spec"]

        # Nothing it asked for was refused, and it asked only within its namespaces.
        events = cluster.audit_events(user)
        assert events, f"no request of {user} in the audit log"
        assert not refused(), f"requests refused to the operator: {refused()}"
        # Control: a request the ServiceAccount may not make shows up as refused.
        forbidden = cluster.kubectl("get", "secrets", "-n", namespace, kubeconfig=sa_kubeconfig, check=False)
        assert forbidden.returncode != 0 and "Forbidden" in forbidden.stderr, forbidden.stderr
        assert wait_until(lambda: [e for e in cluster.audit_events(user)
                                   if e.get("responseStatus", {}).get("code") == 403
                                   and e.get("objectRef", {}).get("resource") == "secrets"],
                          timeout=10, what="the refused control request in the audit log")
        for e in events:
            obj = e.get("objectRef", {})
            if obj.get("resource") in ("thingshadows", "retainedmessages") and e["verb"] in ("list", "watch"):
                assert obj.get("namespace") == watched, e["requestURI"]
            if obj.get("resource") == "namespaces" and e["verb"] in ("list", "watch"):
                assert f"fieldSelector=metadata.name%3D{watched}" in e["requestURI"], e["requestURI"]
    finally:
        cfg.uninstall(name, ignore_not_found=True, timeout=60)
        cfg.close()
