"""The chart rendered with the Helm library: defaults and a matrix of values."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest

import chartlib
import podsecurity
from chartlib import args, container, env, find, one, render

ROLE_ARN = "arn:aws:iam::111122223333:role/shadowsync"


def pod_spec(objects):
    return one(objects, "Deployment")["spec"]["template"]["spec"]


def flag(objects, name):
    """Value of --name=VALUE in the container args; True for a bare --name; None if absent."""
    found = []
    for a in args(objects):
        if a == f"--{name}":
            found.append(True)
        elif a.startswith(f"--{name}="):
            found.append(a.split("=", 1)[1])
    assert len(found) <= 1, f"--{name} given {len(found)} times"
    return found[0] if found else None


# A matrix of value sets that together touch every template branch.
MATRIX = {
    "defaults": {},
    "irsa-region-endpoint": {
        "aws": {"region": "eu-west-1", "endpointUrl": "https://abc123-ats.iot.eu-west-1.amazonaws.com"},
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": ROLE_ARN}},
    },
    "watch-one-namespace": {"watchNamespace": "iot-fleet"},
    "ha": {"replicas": 3, "podDisruptionBudget": {"enabled": True, "minAvailable": 2}},
    "no-leader-election": {"leaderElection": {"enabled": False}},
    "lease-elsewhere": {"leaderElection": {"namespace": "kube-leases"}},
    "embedded-emptydir": {"dataPlane": {"mode": "embedded"}},
    "embedded-pvc": {
        "dataPlane": {"mode": "embedded", "embedded": {"persistence": {"enabled": True, "storageClass": "gp3", "size": "2Gi"}}},
    },
    "embedded-existing-claim": {
        "dataPlane": {"mode": "embedded", "embedded": {"persistence": {"enabled": True, "existingClaim": "my-store"}}},
    },
    "monitoring": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus"}}}},
    "no-service": {"metrics": {"service": {"enabled": False}}},
    "ipv6-custom-port": {"metrics": {"bindAddress": "::", "port": 9090}},
    "scheduling": {
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "iot", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]}]}]}}},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                       "whenUnsatisfiable": "ScheduleAnyway",
                                       "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "shadowsync"}}}],
        "priorityClassName": "system-cluster-critical",
    },
    "existing-service-account": {"serviceAccount": {"create": False, "name": "iot-operator"}},
    "no-rbac": {"rbac": {"create": False}},
    "no-payload-sources": {"rbac": {"readSecrets": False, "readConfigMaps": False}},
    "openshift-uids": {"securityContext": {"runAsUser": None, "runAsGroup": None, "fsGroup": None}},
    "digest-and-pull-secrets": {
        "image": {"digest": "sha256:" + "a" * 64, "pullSecrets": ["regcred", {"name": "other"}], "pullPolicy": "Always"},
    },
    "extras": {
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"},
                     {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "aws", "key": "id"}}}],
        "extraArgs": ["--max-document-bytes=30720"],
        "podAnnotations": {"example.com/team": "iot"},
        "podLabels": {"team": "iot"},
    },
}


@pytest.fixture(scope="module", params=sorted(MATRIX), ids=sorted(MATRIX))
def rendered(request, chart):
    return request.param, chartlib.render(MATRIX[request.param], chart=chart)


# --- every value set -------------------------------------------------------------------


def test_objects_are_valid_kubernetes(rendered):
    """Every object (bar the ServiceMonitor CRD kind) passes the Kubernetes API schema of
    the oldest (kubeVersion >= 1.25) and a current version, with unknown fields refused."""
    _, objects = rendered
    checked = []
    for obj in objects:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue
        for version in ("1.25", kubernetes_validate.latest_version()):
            kubernetes_validate.validate(obj, version, strict=True)
        checked.append(obj["kind"])
    assert "Deployment" in checked


def test_pod_meets_restricted_pod_security(rendered):
    _, objects = rendered
    assert podsecurity.violations(pod_spec(objects)) == []


def test_hardening_is_not_configurable_away(rendered):
    _, objects = rendered
    sc = container(objects)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod_spec(objects)["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_probes_use_the_metrics_port(rendered):
    _, objects = rendered
    c = container(objects)
    port = next(p for p in c["ports"] if p["name"] == "metrics")
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert flag(objects, "metrics-addr").rsplit(":", 1)[1] == str(port["containerPort"])


def test_resources_have_requests_and_limits(rendered):
    _, objects = rendered
    resources = container(objects)["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]


def test_objects_are_namespaced_in_the_release_namespace(rendered):
    _, objects = rendered
    for obj in objects:
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            assert "namespace" not in obj["metadata"]
        elif obj["kind"] in ("Role", "RoleBinding"):
            assert obj["metadata"]["namespace"] in ("shadowsync-system", "iot-fleet", "kube-leases")
        else:
            assert obj["metadata"]["namespace"] == "shadowsync-system", obj["kind"]


def test_selector_matches_pod_labels_and_service(rendered):
    _, objects = rendered
    deployment = one(objects, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
    for service in find(objects, "Service"):
        assert service["spec"]["selector"] == selector
    for pdb in find(objects, "PodDisruptionBudget"):
        assert pdb["spec"]["selector"]["matchLabels"] == selector


def test_every_flag_is_given_once(rendered):
    _, objects = rendered
    names = [a.split("=", 1)[0] for a in args(objects)[1:]]
    assert args(objects)[0] == "run"
    assert len(names) == len(set(names)), names


# --- defaults --------------------------------------------------------------------------


def test_defaults_flags(defaults):
    assert args(defaults) == [
        "run",
        "--data-plane=aws",
        "--concurrency=16",
        "--max-rps=100",
        "--max-thing-rps=20",
        "--metrics-addr=0.0.0.0:8080",
        "--leader-election",
        "--log-format=json",
    ]


def test_defaults_env(defaults):
    e = env(defaults)
    assert e["RUST_LOG"] == "info"
    assert e["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert e["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_defaults_security_context_values(defaults):
    pod = pod_spec(defaults)["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == 65532 and pod["runAsGroup"] == 65532 and pod["fsGroup"] == 65532
    assert container(defaults)["securityContext"]["runAsUser"] == 65532


def test_defaults_image_is_app_version(chart, defaults):
    assert container(defaults)["image"] == f"ghcr.io/shadowsync/shadowsync:{chart.metadata['appVersion']}"
    assert container(defaults)["imagePullPolicy"] == "IfNotPresent"


def test_defaults_single_replica_with_leader_election(defaults):
    assert one(defaults, "Deployment")["spec"]["replicas"] == 1
    assert flag(defaults, "leader-election") is True
    assert flag(defaults, "leader-election-namespace") is None  # POD_NAMESPACE applies


def test_defaults_rolling_update_never_drops_the_only_pod(defaults):
    strategy = one(defaults, "Deployment")["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def test_defaults_service_account_token_and_name(defaults):
    spec = pod_spec(defaults)
    sa = one(defaults, "ServiceAccount")
    assert spec["serviceAccountName"] == sa["metadata"]["name"] == "shadowsync"
    assert spec["automountServiceAccountToken"] is True
    assert "annotations" not in sa["metadata"]


def test_defaults_metrics_service(defaults):
    service = one(defaults, "Service")
    assert service["metadata"]["name"] == "shadowsync-metrics"
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]


def test_defaults_have_no_optional_objects(defaults):
    kinds = sorted(o["kind"] for o in defaults)
    assert kinds == sorted([
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
        "Service", "Deployment",
    ])


def test_defaults_only_tmp_is_writable(defaults):
    c = container(defaults)
    assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod_spec(defaults)["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}}]


# --- value by value --------------------------------------------------------------------


def test_irsa_annotation_region_and_endpoint(chart):
    objects = render(MATRIX["irsa-region-endpoint"], chart=chart)
    sa = one(objects, "ServiceAccount")
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": ROLE_ARN}
    assert flag(objects, "region") == "eu-west-1"
    assert flag(objects, "endpoint-url") == "https://abc123-ats.iot.eu-west-1.amazonaws.com"
    assert flag(objects, "data-plane") == "aws"


def test_release_name_and_overrides(chart):
    objects = render({}, name="iot", chart=chart)
    assert one(objects, "Deployment")["metadata"]["name"] == "iot-shadowsync"
    assert one(objects, "ServiceAccount")["metadata"]["name"] == "iot-shadowsync"
    objects = render({"fullnameOverride": "edge-sync"}, chart=chart)
    assert one(objects, "Deployment")["metadata"]["name"] == "edge-sync"
    assert one(objects, "ClusterRoleBinding")["subjects"][0]["name"] == "edge-sync"


@pytest.mark.parametrize(
    "values, expected",
    [
        ({"concurrency": 4}, ("concurrency", "4")),
        ({"maxRps": 0}, ("max-rps", "0")),
        ({"maxRps": 250}, ("max-rps", "250")),
        ({"maxThingRps": 5}, ("max-thing-rps", "5")),
        ({"logFormat": "text"}, ("log-format", "text")),
        ({"metrics": {"port": 9443}}, ("metrics-addr", "0.0.0.0:9443")),
        ({"metrics": {"bindAddress": "::"}}, ("metrics-addr", "[::]:8080")),
        ({"watchNamespace": "plant"}, ("namespace", "plant")),
        ({"requireNamespaceAllowlist": True}, ("require-namespace-allowlist", True)),
        ({"requireNamespaceAllowlist": False}, ("require-namespace-allowlist", None)),
        ({"leaderElection": {"namespace": "kube-leases"}}, ("leader-election-namespace", "kube-leases")),
        ({"dataPlane": {"mode": "embedded"}}, ("data-plane", "embedded")),
        ({"dataPlane": {"mode": "embedded"}}, ("db", "/var/lib/shadowsync/dataplane.redb")),
        ({"dataPlane": {"mode": "embedded", "embedded": {"path": "/data/"}}}, ("db", "/data/dataplane.redb")),
    ],
    ids=lambda v: str(v),
)
def test_value_reaches_flag(chart, values, expected):
    name, value = expected
    assert flag(render(values, chart=chart), name) == value


def test_log_level_reaches_rust_log(chart):
    objects = render({"logLevel": "info,shadowsync=debug,kube=warn"}, chart=chart)
    assert env(objects)["RUST_LOG"] == "info,shadowsync=debug,kube=warn"


def test_aws_settings_are_not_passed_to_the_embedded_data_plane(chart):
    objects = render({"dataPlane": {"mode": "embedded"}, "aws": {"region": "eu-west-1"}}, chart=chart)
    assert flag(objects, "region") is None and flag(objects, "endpoint-url") is None


def test_db_flag_only_for_embedded(defaults):
    assert flag(defaults, "db") is None


def test_no_leader_election(chart):
    objects = render(MATRIX["no-leader-election"], chart=chart)
    assert flag(objects, "leader-election") is None
    assert not [r for r in find(objects, "Role") if r["metadata"]["name"].endswith("leader-election")]
    assert not find(objects, "RoleBinding")


def test_leader_election_role_follows_lease_namespace(chart):
    objects = render(MATRIX["lease-elsewhere"], chart=chart)
    role = one(objects, "Role", "shadowsync-leader-election")
    binding = one(objects, "RoleBinding", "shadowsync-leader-election")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "kube-leases"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "shadowsync", "namespace": "shadowsync-system"}]


def test_replicas_with_leader_election(chart):
    objects = render({"replicas": 3}, chart=chart)
    assert one(objects, "Deployment")["spec"]["replicas"] == 3
    assert flag(objects, "leader-election") is True


def test_embedded_emptydir(chart):
    objects = render(MATRIX["embedded-emptydir"], chart=chart)
    volumes = {v["name"]: v for v in pod_spec(objects)["volumes"]}
    assert volumes["data"] == {"name": "data", "emptyDir": {"sizeLimit": "256Mi"}}
    mounts = {m["name"]: m["mountPath"] for m in container(objects)["volumeMounts"]}
    assert mounts["data"] == "/var/lib/shadowsync"
    assert one(objects, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert not find(objects, "PersistentVolumeClaim")


def test_embedded_pvc(chart):
    objects = render(MATRIX["embedded-pvc"], chart=chart)
    pvc = one(objects, "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == "shadowsync-data"
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert pvc["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": "gp3",
        "resources": {"requests": {"storage": "2Gi"}},
    }
    volumes = {v["name"]: v for v in pod_spec(objects)["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "shadowsync-data"}
    assert pod_spec(objects)["securityContext"]["fsGroup"] == 65532


def test_embedded_existing_claim(chart):
    objects = render(MATRIX["embedded-existing-claim"], chart=chart)
    assert not find(objects, "PersistentVolumeClaim")
    volumes = {v["name"]: v for v in pod_spec(objects)["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "my-store"}


def test_persistence_ignored_in_aws_mode(chart):
    objects = render({"dataPlane": {"embedded": {"persistence": {"enabled": True}}}}, chart=chart)
    assert not find(objects, "PersistentVolumeClaim")
    assert [v["name"] for v in pod_spec(objects)["volumes"]] == ["tmp"]


def test_service_monitor(chart):
    objects = render(MATRIX["monitoring"], chart=chart)
    sm = one(objects, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus"
    assert sm["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}]
    assert sm["spec"]["selector"]["matchLabels"].items() <= one(objects, "Service")["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["shadowsync-system"]}


def test_metrics_service_can_be_disabled(chart):
    assert not find(render(MATRIX["no-service"], chart=chart), "Service")


@pytest.mark.parametrize("pdb, expected", [
    ({"enabled": True}, {"maxUnavailable": 1}),
    ({"enabled": True, "minAvailable": 2}, {"minAvailable": 2}),
    ({"enabled": True, "maxUnavailable": "50%"}, {"maxUnavailable": "50%"}),
])
def test_pod_disruption_budget(chart, pdb, expected):
    spec = one(render({"replicas": 3, "podDisruptionBudget": pdb}, chart=chart), "PodDisruptionBudget")["spec"]
    assert {k: v for k, v in spec.items() if k != "selector"} == expected


def test_scheduling_values_reach_the_pod(chart):
    values = MATRIX["scheduling"]
    spec = pod_spec(render(values, chart=chart))
    for key in ("nodeSelector", "tolerations", "affinity", "topologySpreadConstraints", "priorityClassName"):
        assert spec[key] == values[key]


def test_image_digest_and_pull_secrets(chart):
    objects = render(MATRIX["digest-and-pull-secrets"], chart=chart)
    assert container(objects)["image"] == "ghcr.io/shadowsync/shadowsync@sha256:" + "a" * 64
    assert container(objects)["imagePullPolicy"] == "Always"
    assert pod_spec(objects)["imagePullSecrets"] == [{"name": "regcred"}, {"name": "other"}]


def test_image_tag(chart):
    objects = render({"image": {"repository": "registry.example.com/iot/shadowsync", "tag": "1.2.3"}}, chart=chart)
    assert container(objects)["image"] == "registry.example.com/iot/shadowsync:1.2.3"


def test_extra_env_args_and_pod_metadata(chart):
    objects = render(MATRIX["extras"], chart=chart)
    e = env(objects)
    assert e["HTTPS_PROXY"] == "http://proxy:3128"
    assert e["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "aws", "key": "id"}}
    assert e["RUST_LOG"] == "info"
    assert args(objects)[-1] == "--max-document-bytes=30720"
    template = one(objects, "Deployment")["spec"]["template"]
    assert template["metadata"]["annotations"] == {"example.com/team": "iot"}
    assert template["metadata"]["labels"]["team"] == "iot"
    assert template["metadata"]["labels"]["app.kubernetes.io/name"] == "shadowsync"


def test_platform_assigned_uids(chart):
    objects = render(MATRIX["openshift-uids"], chart=chart)
    pod = pod_spec(objects)["securityContext"]
    assert pod == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert "runAsUser" not in container(objects)["securityContext"]
    assert podsecurity.violations(pod_spec(objects)) == []


def test_existing_service_account(chart):
    objects = render(MATRIX["existing-service-account"], chart=chart)
    assert not find(objects, "ServiceAccount")
    assert pod_spec(objects)["serviceAccountName"] == "iot-operator"
    for binding in find(objects, "ClusterRoleBinding") + find(objects, "RoleBinding"):
        assert binding["subjects"][0]["name"] == "iot-operator"


def test_termination_grace_period(chart):
    assert pod_spec(render({"terminationGracePeriodSeconds": 90}, chart=chart))["terminationGracePeriodSeconds"] == 90


def test_probe_timings(chart):
    c = container(render({"probes": {"liveness": {"periodSeconds": 7, "failureThreshold": 5}}}, chart=chart))
    assert c["livenessProbe"]["periodSeconds"] == 7 and c["livenessProbe"]["failureThreshold"] == 5
    assert c["readinessProbe"]["periodSeconds"] == 10


# --- NOTES.txt -------------------------------------------------------------------------


def test_notes_point_at_missing_credentials_and_region(chart):
    text = " ".join(chartlib.notes({}, chart=chart).split())
    assert "no eks.amazonaws.com/role-arn annotation" in text
    assert "aws.region is empty" in text
    assert "kubectl apply --server-side -f charts/shadowsync/crds/" in text


def test_notes_name_the_three_crds_and_what_sets_need(chart):
    text = " ".join(chartlib.notes({}, chart=chart).split())
    assert "(thingshadows, retainedmessages and thingshadowsets)" in text
    assert "ThingShadowSet" in text and "kubectl apply -f deploy/examples/fleet/" in text
    assert ("the operator is granted: create and delete on thingshadows (the children), get, list and watch on "
            "thingshadowsets, patch on thingshadowsets/status, and update on thingshadowsets/finalizers") in text
    assert "iot:ListThingsInThingGroup and iot:SearchIndex (granted by deploy/iam-policy.json)" in text
    # Without the chart's RBAC, the same list is what to grant; without AWS, no IAM.
    text = " ".join(chartlib.notes({"rbac": {"create": False}, "dataPlane": {"mode": "embedded"}}, chart=chart).split())
    assert "the operator must be granted (rbac.create is false): create and delete on thingshadows" in text
    assert "iot:SearchIndex" not in text


def test_notes_quiet_when_configured(chart):
    text = " ".join(chartlib.notes(MATRIX["irsa-region-endpoint"], chart=chart).split())
    assert "role-arn annotation" not in text
    assert "aws.region is empty" not in text
    assert "endpoint https://abc123-ats.iot.eu-west-1.amazonaws.com, region eu-west-1" in text


def test_notes_warn_about_embedded(chart):
    text = " ".join(chartlib.notes({"dataPlane": {"mode": "embedded"}}, chart=chart).split())
    assert "Nothing is written to AWS IoT" in text
    assert "lost when the pod is deleted" in text


# --- the checker itself ----------------------------------------------------------------


@pytest.mark.parametrize("mutate, expected", [
    (lambda s: s["containers"][0]["securityContext"].update(allowPrivilegeEscalation=True), "allowPrivilegeEscalation"),
    (lambda s: s["containers"][0]["securityContext"].pop("runAsNonRoot") and s["securityContext"].pop("runAsNonRoot"), "runAsNonRoot"),
    (lambda s: s["containers"][0]["securityContext"]["capabilities"].update(drop=["NET_RAW"]), "drop must include ALL"),
    (lambda s: s["containers"][0]["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]), "beyond"),
    (lambda s: s["containers"][0]["securityContext"].pop("seccompProfile") and s["securityContext"].pop("seccompProfile"), "seccompProfile"),
    (lambda s: s["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
    (lambda s: s.update(hostNetwork=True), "hostNetwork"),
    (lambda s: s["containers"][0]["securityContext"].update(runAsUser=0), "runAsUser=0"),
])
def test_pod_security_checker_catches_violations(defaults, mutate, expected):
    spec = copy.deepcopy(pod_spec(defaults))
    mutate(spec)
    found = podsecurity.violations(spec)
    assert any(expected in v for v in found), found
