"""deploy/: install.yaml is the current rendering of the chart, the examples are valid
custom resources, the IAM policy is least-privilege, and the Argo CD and Flux manifests
point at a chart that accepts their values."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml

import chartlib
import crdschema
import podsecurity
import render_install

REPO = chartlib.REPO
DEPLOY = REPO / "deploy"


def load_all(path):
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


# --- CRDs ------------------------------------------------------------------------------


def test_chart_crds_are_byte_identical_to_crds_dir():
    source = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    copied = sorted(p.name for p in (chartlib.CHART / "crds").iterdir())
    assert source == copied == ["retainedmessages.yaml", "thingshadows.yaml", "thingshadowsets.yaml"]
    for name in source:
        assert (chartlib.CHART / "crds" / name).read_bytes() == (REPO / "crds" / name).read_bytes(), (
            f"charts/shadowsync/crds/{name} differs from crds/{name}: cp crds/*.yaml charts/shadowsync/crds/"
        )


def test_helm_loads_the_three_crds(chart):
    names = sorted(yaml.safe_load(c["data"])["metadata"]["name"] for c in chart.crds)
    assert names == ["retainedmessages.iot.shadowsync.dev", "thingshadows.iot.shadowsync.dev",
                     "thingshadowsets.iot.shadowsync.dev"]


# --- install.yaml ----------------------------------------------------------------------


def test_install_yaml_is_current():
    assert chartlib.INSTALL_YAML.read_text(encoding="utf-8") == render_install.render_install(), (
        "deploy/install.yaml is stale: run python3 tests/chart/render_install.py"
    )


@pytest.fixture(scope="module")
def install_objects():
    return load_all(chartlib.INSTALL_YAML)


def test_install_yaml_holds_namespace_crds_then_the_chart(install_objects, defaults):
    kinds = [o["kind"] for o in install_objects]
    assert kinds[:4] == ["Namespace"] + ["CustomResourceDefinition"] * 3
    assert "CustomResourceDefinition" not in kinds[4:]
    ns = install_objects[0]
    assert ns["metadata"]["name"] == "shadowsync-system"
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # The CRDs are the files in crds/, unchanged.
    crds = {o["metadata"]["name"]: o for o in install_objects if o["kind"] == "CustomResourceDefinition"}
    assert sorted(crds) == sorted(yaml.safe_load(p.read_text(encoding="utf-8"))["metadata"]["name"]
                                  for p in (REPO / "crds").glob("*.yaml"))
    for path in (REPO / "crds").glob("*.yaml"):
        source = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert crds[source["metadata"]["name"]] == source
        assert path.read_text(encoding="utf-8").strip("\n") in chartlib.INSTALL_YAML.read_text(encoding="utf-8")
    # The rest is the chart's default rendering minus Helm's release labels.
    def strip(obj):
        obj = copy.deepcopy(obj)
        labels = obj["metadata"].get("labels", {})
        assert labels.pop("helm.sh/chart", None) is not None
        assert labels.pop("app.kubernetes.io/managed-by", None) == "Helm"
        return obj
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(install_objects[4:], key=key) == sorted((strip(o) for o in defaults), key=key)


def test_install_yaml_is_in_apply_order(install_objects):
    """Namespace and CRDs first, then Helm's install order (ServiceAccount before the
    bindings that name it, the Deployment last)."""
    ranks = [chartlib.kind_rank(o["kind"]) for o in install_objects[4:]]
    assert ranks == sorted(ranks)
    assert install_objects[-1]["kind"] == "Deployment"


def test_install_yaml_objects_are_valid_kubernetes(install_objects):
    for obj in install_objects:
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)


def test_install_yaml_pod_is_restricted(install_objects):
    deployment = next(o for o in install_objects if o["kind"] == "Deployment")
    assert podsecurity.violations(deployment["spec"]["template"]["spec"]) == []
    text = chartlib.INSTALL_YAML.read_text(encoding="utf-8")
    assert "helm.sh/" not in text and "managed-by: Helm" not in text


def test_render_install_check_mode_detects_staleness(tmp_path, monkeypatch):
    stale = tmp_path / "install.yaml"
    stale.write_text(render_install.render_install().replace("--max-rps=100", "--max-rps=1"), encoding="utf-8")
    monkeypatch.setattr(chartlib, "INSTALL_YAML", stale)
    assert render_install.main(["--check"]) == 1
    assert render_install.main([]) == 0
    assert render_install.main(["--check"]) == 0


def test_kustomization_builds_install_yaml(install_objects):
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text(encoding="utf-8"))
    assert kustomization["resources"] == ["install.yaml"]
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed: kustomize build not checked")
    built = subprocess.run([kubectl, "kustomize", str(DEPLOY)], check=True, capture_output=True, text=True).stdout
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(load_all_text(built), key=key) == sorted(install_objects, key=key)


def load_all_text(text):
    return [d for d in yaml.safe_load_all(text) if d is not None]


# --- examples against the CRD schemas --------------------------------------------------

EXAMPLE_FILES = sorted((DEPLOY / "examples").rglob("*.yaml")) + sorted((DEPLOY / "flux" / "shadows").glob("*.yaml"))
CORE_KINDS = {("v1", "Namespace"), ("v1", "Secret"), ("v1", "ConfigMap"),
              ("kustomize.config.k8s.io/v1beta1", "Kustomization")}


@pytest.fixture(scope="module")
def crds():
    return crdschema.load_crds()


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_example_is_valid_against_the_crds(path, crds):
    docs = load_all(path)
    assert docs, f"{path} holds no object"
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in CORE_KINDS:
            continue
        assert doc["apiVersion"].startswith("iot.shadowsync.dev/"), f"{path}: unexpected kind {key}"
        assert crdschema.validate(doc, crds) == [], f"{path}: {doc['metadata']['name']}"
        assert doc["metadata"].get("namespace"), f"{path}: {doc['metadata']['name']} has no namespace"


def test_there_are_examples_of_every_kind():
    kinds = {d["kind"] for p in EXAMPLE_FILES for d in load_all(p)}
    assert {"ThingShadow", "RetainedMessage", "ThingShadowSet"} <= kinds


def test_fleet_examples_cover_each_selector_and_a_canary_rollout():
    """deploy/examples/fleet: a set per selector form, each file explained by its header
    comment, the thing-group one a canary with a failure budget and rollback, all in a
    namespace that deploy/examples/namespaces.yaml creates."""
    files = sorted((DEPLOY / "examples" / "fleet").glob("*.yaml"))
    sets = {}
    for path in files:
        text = path.read_text(encoding="utf-8")
        header = text.split("\napiVersion:", 1)[0]
        assert header.startswith("# ") and header.count("\n# ") >= 3, f"{path.name}: no header comment"
        for doc in load_all(path):
            assert doc["kind"] == "ThingShadowSet", path.name
            sets[doc["metadata"]["name"]] = doc
    forms = {name: next(iter(doc["spec"]["selector"])) for name, doc in sets.items()}
    assert sorted(forms.values()) == ["query", "thingGroup", "things"], forms
    namespaces = {d["metadata"]["name"] for d in load_all(DEPLOY / "examples" / "namespaces.yaml")}
    assert {doc["metadata"]["namespace"] for doc in sets.values()} <= namespaces
    (canary,) = [d for d in sets.values() if "thingGroup" in d["spec"]["selector"]]
    assert canary["spec"]["rollout"] == {"steps": [10, 50, 100], "stepTimeout": "15m", "maxFailures": "10%",
                                         "onFailure": "Rollback"}
    (query,) = [d for d in sets.values() if "query" in d["spec"]["selector"]]
    assert query["spec"]["selector"]["query"] == "attributes.model:lamp-v2"
    # Two sets never write the same shadow of a thing: the group's and the query's lamps
    # may overlap, so their templates name different shadows.
    targets = [(doc["spec"]["template"].get("shadowName"), name) for name, doc in sets.items()
               if "things" not in doc["spec"]["selector"]]
    assert len({shadow for shadow, _ in targets}) == len(targets), targets


VALID_SHADOW = {
    "apiVersion": "iot.shadowsync.dev/v1alpha1", "kind": "ThingShadow",
    "metadata": {"name": "lamp", "namespace": "home"},
    "spec": {"thingName": "lamp", "desired": {"power": "on", "nested": {"any": ["thing", 1]}}},
}
VALID_SET = {
    "apiVersion": "iot.shadowsync.dev/v1alpha1", "kind": "ThingShadowSet",
    "metadata": {"name": "lamps", "namespace": "fleet"},
    "spec": {"selector": {"thingGroup": {"name": "lamps", "recursive": True}},
             "template": {"shadowName": "config", "desired": {"power": "on"}},
             "rollout": {"steps": [10, 50, 100], "maxFailures": "10%", "onFailure": "Rollback"}},
}
VALID_MESSAGE = {
    "apiVersion": "iot.shadowsync.dev/v1alpha1", "kind": "RetainedMessage",
    "metadata": {"name": "cfg", "namespace": "home"},
    "spec": {"topic": "home/lamp/config", "payload": {"json": {"a": [1, 2]}}},
}


@pytest.mark.parametrize("obj, change, expected", [
    (VALID_SHADOW, lambda s: s.update(desried={"power": "on"}), "desried"),
    (VALID_SHADOW, lambda s: s.update(thingName="bad name!"), "does not match"),
    (VALID_SHADOW, lambda s: s.update(shadowName="AWSManagedGreengrassV2Deployment"), "owned by Greengrass"),
    (VALID_SHADOW, lambda s: s.update(desired="on"), "is not of type 'object'"),
    (VALID_SHADOW, lambda s: s.update(deletionPolicy="Purge"), "is not one of"),
    (VALID_SHADOW, lambda s: s.pop("thingName"), "'thingName' is a required property"),
    (VALID_MESSAGE, lambda s: s.update(topic="a/b/c/d/e/f/g/h/i"), "at most 8 levels"),
    (VALID_MESSAGE, lambda s: s.update(topic="$aws/things/x"), "does not match"),
    (VALID_MESSAGE, lambda s: s.update(qos=2), "maximum"),
    (VALID_MESSAGE, lambda s: s.update(payload={"text": "a", "base64": "AA=="}), "too many properties"),
    (VALID_MESSAGE, lambda s: s.update(payload={"base64": "not base64!"}), "is not a 'byte'"),
    (VALID_MESSAGE, lambda s: s.update(messageExpiry=604801), "maximum"),
    (VALID_SET, lambda s: s["selector"].update(things=["a"]), "selector: exactly one of things, thingGroup or query"),
    (VALID_SET, lambda s: s.update(selector={}), "selector: exactly one of things, thingGroup or query"),
    (VALID_SET, lambda s: s["selector"].update(thingGroup={"recursive": True}), "'name' is a required property"),
    (VALID_SET, lambda s: s["selector"].update(thingGroup={"name": "no spaces"}), "does not match"),
    (VALID_SET, lambda s: s.update(selector={"things": ["ok", "not ok"]}), "does not match"),
    (VALID_SET, lambda s: s.update(selector={"query": ""}), "should be non-empty"),
    (VALID_SET, lambda s: s["template"].update(thingName="lamp-1"), "thingName"),
    (VALID_SET, lambda s: s["template"].update(shadowName="AWSManagedGreengrassV2Deployment"), "owned by Greengrass"),
    (VALID_SET, lambda s: s["rollout"].update(maxFailures="150%"), "maxFailures: must be a count (3) or a percentage"),
    (VALID_SET, lambda s: s["rollout"].update(maxFailures=-1), "maxFailures: must be a count (3) or a percentage"),
    (VALID_SET, lambda s: s["rollout"].update(steps=[0, 100]), "minimum"),
    (VALID_SET, lambda s: s["rollout"].update(steps=[50, 101]), "maximum"),
    (VALID_SET, lambda s: s["rollout"].update(onFailure="Abort"), "is not one of"),
    (VALID_SET, lambda s: s.update(resyncInterval="5 minutes"), "does not match"),
])
def test_crd_validator_refuses_invalid_specs(crds, obj, change, expected):
    assert crdschema.validate(obj, crds) == []
    broken = copy.deepcopy(obj)
    change(broken["spec"])
    errors = crdschema.validate(broken, crds)
    assert any(expected in e for e in errors), errors


def test_crd_validator_refuses_unknown_kinds_and_bad_names(crds):
    assert crdschema.validate({**VALID_SHADOW, "kind": "ThingShadows"}, crds)
    assert crdschema.validate({**VALID_SHADOW, "metadata": {"name": "Kitchen_Lamp", "namespace": "home"}}, crds)


# --- IAM policy ------------------------------------------------------------------------

POLICY = json.loads((DEPLOY / "iam-policy.json").read_text(encoding="utf-8"))
EXPECTED_ACTIONS = {
    "iot:GetThingShadow", "iot:UpdateThingShadow", "iot:DeleteThingShadow",
    "iot:ListNamedShadowsForThing", "iot:Publish", "iot:RetainPublish",
    "iot:GetRetainedMessage", "iot:ListRetainedMessages", "iot:DescribeEndpoint",
    # Registry reads that select a fleet's things (never a registry write).
    "iot:ListThingsInThingGroup", "iot:SearchIndex",
}
# Actions AWS IoT documents with no resource-level permissions.
UNSCOPABLE = {"iot:ListNamedShadowsForThing", "iot:ListRetainedMessages", "iot:DescribeEndpoint"}
ARN = re.compile(r"^arn:aws:iot:REGION:ACCOUNT_ID:(?:(thing|topic|thinggroup)/\*|(index)/AWS_Things)$")


def arn_kind(resource):
    match = ARN.match(resource)
    return match.group(1) or match.group(2)


def statements():
    return POLICY["Statement"]


def as_list(x):
    return x if isinstance(x, list) else [x]


def test_policy_document_shape():
    assert POLICY["Version"] == "2012-10-17"
    assert set(POLICY) == {"Version", "Statement"}
    sids = [s["Sid"] for s in statements()]
    assert len(sids) == len(set(sids))
    for s in statements():
        assert set(s) == {"Sid", "Effect", "Action", "Resource"}, s
        assert s["Effect"] == "Allow"


def test_policy_grants_exactly_the_data_plane_actions():
    actions = [a for s in statements() for a in as_list(s["Action"])]
    assert len(actions) == len(set(actions)), "an action is granted twice"
    assert set(actions) == EXPECTED_ACTIONS
    assert not [a for a in actions if "*" in a], "wildcard action"


def test_policy_resources_are_scoped_where_aws_allows():
    for s in statements():
        actions = set(as_list(s["Action"]))
        resources = as_list(s["Resource"])
        if actions <= UNSCOPABLE:
            assert resources == ["*"]
            continue
        assert not actions & UNSCOPABLE, s["Sid"]
        for resource in resources:
            assert ARN.match(resource), resource
        kinds = {arn_kind(r) for r in resources}
        if actions & {"iot:GetThingShadow", "iot:UpdateThingShadow", "iot:DeleteThingShadow"}:
            assert kinds == {"thing"}
        if actions & {"iot:Publish", "iot:RetainPublish", "iot:GetRetainedMessage"}:
            assert kinds == {"topic"}
        if "iot:ListThingsInThingGroup" in actions:
            assert kinds == {"thinggroup"}
        if "iot:SearchIndex" in actions:
            assert kinds == {"index"}


def test_describe_endpoint_stands_alone_so_it_can_be_removed():
    owner = [s for s in statements() if "iot:DescribeEndpoint" in as_list(s["Action"])]
    assert len(owner) == 1 and as_list(owner[0]["Action"]) == ["iot:DescribeEndpoint"]


def test_iam_doc_explains_every_statement():
    doc = (DEPLOY / "IAM.md").read_text(encoding="utf-8")
    for s in statements():
        assert f"`{s['Sid']}`" in doc
        for action in as_list(s["Action"]):
            assert f"`{action}`" in doc


# --- Argo CD Application and Flux ------------------------------------------------------


def test_argocd_application_values_render(chart):
    app = yaml.safe_load((DEPLOY / "argocd" / "application.yaml").read_text(encoding="utf-8"))
    assert app["apiVersion"] == "argoproj.io/v1alpha1" and app["kind"] == "Application"
    source = app["spec"]["source"]
    assert (REPO / source["path"] / "Chart.yaml").exists()
    objects = chartlib.render(source["helm"]["valuesObject"], name=source["helm"]["releaseName"],
                              namespace=app["spec"]["destination"]["namespace"], chart=chart)
    sa = chartlib.one(objects, "ServiceAccount")
    assert "eks.amazonaws.com/role-arn" in sa["metadata"]["annotations"]
    assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]


@pytest.fixture(scope="module")
def flux():
    docs = load_all(DEPLOY / "flux" / "shadowsync.yaml")
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_flux_kustomizations_wait_and_are_ordered(flux):
    operator = flux[("Kustomization", "shadowsync-operator")]
    shadows = flux[("Kustomization", "shadowsync-shadows")]
    for k in (operator, shadows):
        assert k["apiVersion"] == "kustomize.toolkit.fluxcd.io/v1"
        assert k["spec"]["wait"] is True
        assert k["spec"]["sourceRef"] == {"kind": "GitRepository", "name": "shadowsync"}
        assert (REPO / k["spec"]["path"]).is_dir(), k["spec"]["path"]
    assert shadows["spec"]["dependsOn"] == [{"name": "shadowsync-operator"}]
    assert ("GitRepository", "shadowsync") in flux


def test_flux_folders_list_their_files():
    for folder in ("operator", "shadows"):
        base = DEPLOY / "flux" / folder
        listed = yaml.safe_load((base / "kustomization.yaml").read_text(encoding="utf-8"))["resources"]
        assert sorted(listed) == sorted(p.name for p in base.glob("*.yaml") if p.name != "kustomization.yaml")


def test_flux_helmrelease_points_at_the_chart_and_its_values_render(chart):
    release = yaml.safe_load((DEPLOY / "flux" / "operator" / "helmrelease.yaml").read_text(encoding="utf-8"))
    assert release["apiVersion"] == "helm.toolkit.fluxcd.io/v2"
    spec = release["spec"]
    assert (REPO / spec["chart"]["spec"]["chart"] / "Chart.yaml").exists()
    assert spec["chart"]["spec"]["sourceRef"]["kind"] == "GitRepository"
    assert spec["install"]["crds"] == "CreateReplace" and spec["upgrade"]["crds"] == "CreateReplace"
    objects = chartlib.render(spec["values"], name=spec["releaseName"], namespace=release["metadata"]["namespace"], chart=chart)
    assert chartlib.one(objects, "Deployment")
    # Flux installs (and replaces) the chart's CRDs: every one of crds/, the same as
    # deploy/install.yaml holds.
    chart_crds = sorted(yaml.safe_load(c["data"])["metadata"]["name"] for c in chart.crds)
    install_crds = sorted(o["metadata"]["name"] for o in load_all(chartlib.INSTALL_YAML)
                          if o["kind"] == "CustomResourceDefinition")
    assert chart_crds == install_crds == sorted(
        yaml.safe_load(p.read_text(encoding="utf-8"))["metadata"]["name"] for p in (REPO / "crds").glob("*.yaml"))
