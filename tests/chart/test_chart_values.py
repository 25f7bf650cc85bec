"""values.schema.json refuses wrong values (one case each), the templates refuse the
dangerous combinations even without the schema, `helm lint` is clean, and the README
tables document every value with its real default."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

import helm_python as helm

import chartlib
from chartlib import render

VALUES = yaml.safe_load((chartlib.CHART / "values.yaml").read_text(encoding="utf-8"))
SCHEMA = json.loads((chartlib.CHART / "values.schema.json").read_text(encoding="utf-8"))

BAD_VALUES = {
    "unknown top-level key": {"replicaCount": 2},
    "unknown nested key": {"image": {"registry": "docker.io"}},
    "replicas not an integer": {"replicas": "2"},
    "replicas negative": {"replicas": -1},
    "replicas above 10": {"replicas": 11},
    "replicas > 1 without leader election": {"replicas": 2, "leaderElection": {"enabled": False}},
    "leaderElection.enabled not a boolean": {"leaderElection": {"enabled": "yes"}},
    "lease namespace not a DNS label": {"leaderElection": {"namespace": "Kube_System"}},
    "watchNamespace not a DNS label": {"watchNamespace": "My Namespace"},
    "watchNamespace a list": {"watchNamespace": ["a", "b"]},
    "dataPlane.mode unknown": {"dataPlane": {"mode": "moto"}},
    "embedded with two replicas": {"dataPlane": {"mode": "embedded"}, "replicas": 2},
    "embedded with an endpoint": {"dataPlane": {"mode": "embedded"}, "aws": {"endpointUrl": "http://localhost:8443"}},
    "embedded path relative": {"dataPlane": {"embedded": {"path": "data"}}},
    "embedded path is root": {"dataPlane": {"embedded": {"path": "/"}}},
    "persistence size not a quantity": {"dataPlane": {"embedded": {"persistence": {"size": "lots"}}}},
    "persistence access mode read-only": {"dataPlane": {"embedded": {"persistence": {"accessModes": ["ReadOnlyMany"]}}}},
    "region malformed": {"aws": {"region": "Frankfurt"}},
    "endpoint without scheme": {"aws": {"endpointUrl": "abc-ats.iot.eu-west-1.amazonaws.com"}},
    "endpoint with a path": {"aws": {"endpointUrl": "https://abc-ats.iot.eu-west-1.amazonaws.com/things"}},
    "concurrency zero": {"concurrency": 0},
    "concurrency a float": {"concurrency": 2.5},
    "maxRps negative": {"maxRps": -1},
    "maxRps a string": {"maxRps": "100"},
    "maxThingRps negative": {"maxThingRps": -5},
    "logFormat unknown": {"logFormat": "yaml"},
    "logLevel unknown": {"logLevel": "verbose"},
    "logLevel directive with bad level": {"logLevel": "shadowsync=loud"},
    "metrics port privileged": {"metrics": {"port": 80}},
    "metrics port out of range": {"metrics": {"port": 70000}},
    "metrics bind address a hostname": {"metrics": {"bindAddress": "localhost"}},
    "service type unknown": {"metrics": {"service": {"type": "Ingress"}}},
    "serviceMonitor without service": {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}},
    "serviceMonitor interval malformed": {"metrics": {"serviceMonitor": {"interval": "30 seconds"}}},
    "probe period zero": {"probes": {"liveness": {"periodSeconds": 0}}},
    "probe threshold a string": {"probes": {"readiness": {"failureThreshold": "3"}}},
    "resources without requests": {"resources": {"requests": None}},
    "resources without memory limit": {"resources": {"limits": {"memory": None}}},
    "resources quantity malformed": {"resources": {"requests": {"cpu": "fast"}}},
    "image pull policy unknown": {"image": {"pullPolicy": "Sometimes"}},
    "image tag with a colon": {"image": {"tag": "v1:latest"}},
    "image digest malformed": {"image": {"digest": "sha256:abc"}},
    "image repository empty": {"image": {"repository": ""}},
    "pull secret empty name": {"image": {"pullSecrets": [""]}},
    "serviceAccount.create a string": {"serviceAccount": {"create": "true"}},
    "serviceAccount annotation not a string": {"serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": 5}}},
    "rbac.readSecrets a string": {"rbac": {"readSecrets": "no"}},
    "runAsUser root": {"securityContext": {"runAsUser": 0}},
    "runAsUser a string": {"securityContext": {"runAsUser": "65532"}},
    "unknown securityContext key": {"securityContext": {"privileged": True}},
    "pdb without bounds": {"podDisruptionBudget": {"enabled": True, "maxUnavailable": None}},
    "pdb percentage malformed": {"podDisruptionBudget": {"enabled": True, "minAvailable": "150%"}},
    "extraEnv overrides RUST_LOG": {"extraEnv": [{"name": "RUST_LOG", "value": "debug"}]},
    "extraEnv overrides a chart flag": {"extraEnv": [{"name": "SHADOWSYNC_MAX_RPS", "value": "5"}]},
    "extraEnv without a name": {"extraEnv": [{"value": "x"}]},
    "extraEnv a map": {"extraEnv": {"HTTPS_PROXY": "http://proxy"}},
    "extraArgs repeats a chart flag": {"extraArgs": ["--leader-election-namespace=x"]},
    "extraArgs not a flag": {"extraArgs": ["run"]},
    "extraArgs repeats the allow-list flag": {"extraArgs": ["--require-namespace-allowlist"]},
    "extraEnv overrides the allow-list flag": {"extraEnv": [{"name": "SHADOWSYNC_REQUIRE_NAMESPACE_ALLOWLIST", "value": "true"}]},
    "requireNamespaceAllowlist a string": {"requireNamespaceAllowlist": "true"},
    "podLabels overrides the selector": {"podLabels": {"app.kubernetes.io/instance": "other"}},
    "podAnnotations value not a string": {"podAnnotations": {"prometheus.io/scrape": True}},
    "nodeSelector a list": {"nodeSelector": ["linux"]},
    "tolerations a map": {"tolerations": {"key": "x"}},
    "terminationGracePeriodSeconds zero": {"terminationGracePeriodSeconds": 0},
    "priorityClassName with spaces": {"priorityClassName": "high priority"},
}


@pytest.mark.parametrize("values", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_schema_rejects(chart, values):
    with pytest.raises(helm.HelmValuesError) as refused:
        render(values, chart=chart)
    assert "values don't meet the specifications of the schema" in str(refused.value)


GOOD_VALUES = {
    "many replicas": {"replicas": 3},
    "zero replicas": {"replicas": 0},
    "log directives": {"logLevel": "warn,shadowsync=trace,aws_smithy_runtime=off"},
    "no rate limit": {"maxRps": 0, "maxThingRps": 0},
    "govcloud region": {"aws": {"region": "us-gov-west-1"}},
    "local endpoint with port": {"aws": {"endpointUrl": "http://shadowsync-dataplane.iot.svc:8443"}},
    "ipv6 endpoint": {"aws": {"endpointUrl": "http://[fd00::10]:8443/"}},
    "percentage pdb": {"podDisruptionBudget": {"enabled": True, "maxUnavailable": "50%"}},
    "cpu limit removed": {"resources": {"limits": {"cpu": None}}},
    "numeric quantities": {"resources": {"requests": {"cpu": 0.1, "memory": "128Mi"}}},
    "null uids": {"securityContext": {"runAsUser": None, "runAsGroup": None, "fsGroup": None}},
    "pull secret objects": {"image": {"pullSecrets": [{"name": "regcred"}]}},
    "ipv6 bind": {"metrics": {"bindAddress": "::"}},
    "allow-list required in one namespace": {"requireNamespaceAllowlist": True, "watchNamespace": "plant"},
}


@pytest.mark.parametrize("values", GOOD_VALUES.values(), ids=GOOD_VALUES.keys())
def test_schema_accepts(chart, values):
    assert chartlib.find(render(values, chart=chart), "Deployment")


@pytest.fixture(scope="module")
def chart_without_schema(tmp_path_factory):
    """A copy of the chart with no values.schema.json, as `--skip-schema-validation` sees it."""
    target = tmp_path_factory.mktemp("noschema") / "shadowsync"
    shutil.copytree(chartlib.CHART, target)
    (target / "values.schema.json").unlink()
    loaded = helm.Chart.load(str(target))
    yield loaded
    loaded.close()


@pytest.mark.parametrize("values, message", [
    ({"replicas": 2, "leaderElection": {"enabled": False}}, "replicas > 1 requires leaderElection.enabled=true"),
    ({"replicas": 2, "dataPlane": {"mode": "embedded"}}, "use replicas=1"),
    ({"dataPlane": {"mode": "embedded"}, "aws": {"endpointUrl": "http://x:1"}}, "aws.endpointUrl applies to dataPlane.mode=aws"),
    ({"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}}, "requires metrics.service.enabled"),
    ({"serviceAccount": {"create": False}}, "serviceAccount.name is required"),
], ids=["ha-without-election", "embedded-ha", "embedded-endpoint", "monitor-without-service", "sa-without-name"])
def test_templates_refuse_without_the_schema(chart_without_schema, values, message):
    with pytest.raises(helm.HelmRenderError) as refused:
        render(values, chart=chart_without_schema)
    assert message in str(refused.value)


def test_chart_without_schema_still_renders_defaults(chart_without_schema):
    assert chartlib.find(render({}, chart=chart_without_schema), "Deployment")


# --- lint ------------------------------------------------------------------------------

LINT_VALUES = [
    {},
    {"watchNamespace": "iot", "replicas": 2, "podDisruptionBudget": {"enabled": True}},
    {"dataPlane": {"mode": "embedded", "embedded": {"persistence": {"enabled": True}}}},
    {"metrics": {"serviceMonitor": {"enabled": True}}},
]


@pytest.mark.parametrize("values", LINT_VALUES, ids=["defaults", "namespaced-ha", "embedded-pvc", "servicemonitor"])
def test_lint_is_clean(values):
    report = helm.lint(str(chartlib.CHART), values, strict=True, namespace="shadowsync-system")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report
    assert report["total_charts_linted"] == 1


def test_lint_reports_schema_errors():
    report = helm.lint(str(chartlib.CHART), {"replicas": "many"}, strict=True)
    assert any(m["severity"] == 3 for m in report["messages"]) or report["errors"], report


# --- values.yaml, schema and README in step --------------------------------------------


def leaves(values, schema, prefix=""):
    """Dotted paths of values.yaml down to the schema's closed objects; free-form maps
    (labels, affinity, resources.requests) count as one value."""
    for key, value in values.items():
        sub = schema["properties"][key]
        path = f"{prefix}{key}"
        if isinstance(value, dict) and "properties" in sub and sub.get("additionalProperties") is False:
            yield from leaves(value, sub, path + ".")
        else:
            yield path, value


def lookup(values, path):
    for part in path.split("."):
        values = values[part]
    return values


def closed_objects(schema, path="<root>"):
    if schema.get("type") == "object" and "properties" in schema:
        yield path, schema
        for key, sub in schema["properties"].items():
            yield from closed_objects(sub, key if path == "<root>" else f"{path}.{key}")


def test_schema_closes_every_object_it_describes():
    for path, node in closed_objects(SCHEMA):
        assert node.get("additionalProperties") is False, path


def test_every_default_is_in_the_schema():
    paths = [p for p, _ in leaves(VALUES, SCHEMA)]
    assert len(paths) > 50
    assert set(SCHEMA["properties"]) == set(VALUES)


def documented(readme: Path):
    """value path -> documented default, from the README's configuration table."""
    rows = {}
    text = readme.read_text(encoding="utf-8")
    # "## Configuration" in the chart README, "### Configuration" in the project README.
    section = re.split(r"\n#{2,3} Configuration\n", text, maxsplit=1)[1]
    section = re.split(r"\n#{2,3} ", section, maxsplit=1)[0]
    for line in section.splitlines():
        m = re.match(r"^\| `([A-Za-z][\w.]*)` \| `([^`]*)` \| .+ \|$", line)
        if m:
            assert m.group(1) not in rows, f"{m.group(1)} documented twice in {readme}"
            rows[m.group(1)] = yaml.safe_load(m.group(2))
    return rows


@pytest.mark.parametrize("readme", ["charts/shadowsync/README.md", "README.md"])
def test_readme_table_documents_every_value_with_its_default(readme):
    rows = documented(chartlib.REPO / readme)
    expected = dict(leaves(VALUES, SCHEMA))
    assert sorted(rows) == sorted(expected), "README table and values.yaml differ"
    for path, default in expected.items():
        assert rows[path] == default, f"{readme}: {path} documented as {rows[path]!r}, values.yaml has {default!r}"


def test_values_yaml_defaults_match_what_the_chart_merges(chart):
    assert chart.values == VALUES
    merged = chart.merge_values({})
    for path, default in leaves(VALUES, SCHEMA):
        if default is not None:
            assert lookup(merged, path) == default


@pytest.mark.parametrize("kube_version", ["v1.25.0", "v1.33.0"])
def test_lint_is_clean_on_supported_kubernetes_versions(kube_version):
    report = helm.lint(str(chartlib.CHART), strict=True, kube_version=kube_version)
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == [], report
