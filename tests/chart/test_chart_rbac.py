"""RBAC: exactly the documented permissions (charts/shadowsync/README.md, "RBAC"), bound
to the operator's ServiceAccount, at cluster scope or in one namespace."""

from __future__ import annotations

import re

import pytest

import chartlib
from chartlib import container, find, one, render

CRS = {"thingshadows", "retainedmessages"}
KINDS = CRS | {"thingshadowsets"}
GROUP = "iot.shadowsync.dev"


def grants(*, group, resources, verbs, names=(None,)):
    return {(group, r, v, n) for r in resources for v in verbs for n in names}


# The documented set, rule by rule.
WATCHED = (
    grants(group=GROUP, resources=CRS, verbs={"get", "list", "watch", "patch"})
    | grants(group=GROUP, resources={"thingshadows/status", "retainedmessages/status"}, verbs={"patch"})
    | grants(group="events.k8s.io", resources={"events"}, verbs={"create", "patch"})
)
# ThingShadowSet: the sets themselves, their status, and the children (one ThingShadow
# per thing, owned by the set with blockOwnerDeletion, which needs update on the set's
# finalizers under the OwnerReferencesPermissionEnforcement admission plugin).
SETS = (
    grants(group=GROUP, resources={"thingshadowsets"}, verbs={"list", "watch"})
    | grants(group=GROUP, resources={"thingshadowsets/status"}, verbs={"patch"})
    | grants(group=GROUP, resources={"thingshadowsets/finalizers"}, verbs={"update"})
    | grants(group=GROUP, resources={"thingshadows"}, verbs={"create", "delete"})
)
WATCHED |= SETS
SECRETS = grants(group="", resources={"secrets"}, verbs={"get"})
CONFIGMAPS = grants(group="", resources={"configmaps"}, verbs={"get"})
ALL_NAMESPACES = grants(group="", resources={"namespaces"}, verbs={"get", "list", "watch"})
LEASE = (
    grants(group="coordination.k8s.io", resources={"leases"}, verbs={"create"})
    | grants(group="coordination.k8s.io", resources={"leases"}, verbs={"get", "patch"}, names=("shadowsync-leader",))
)


def atoms(role):
    """A role's rules as (apiGroup, resource, verb, resourceName) tuples."""
    result = set()
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in rule.get("resourceNames") or [None]:
                        result.add((group, resource, verb, name))
    return result


def bound_subjects(binding):
    return [(s["kind"], s["name"], s["namespace"]) for s in binding["subjects"]]


SA = ("ServiceAccount", "shadowsync", "shadowsync-system")


def test_cluster_scope_rules_are_exactly_the_documented_set(defaults):
    cluster_role = one(defaults, "ClusterRole")
    assert atoms(cluster_role) == WATCHED | SECRETS | CONFIGMAPS | ALL_NAMESPACES
    binding = one(defaults, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": cluster_role["metadata"]["name"]}
    assert bound_subjects(binding) == [SA]


def test_leader_election_is_a_role_in_the_lease_namespace(defaults):
    role = one(defaults, "Role")
    assert role["metadata"]["namespace"] == "shadowsync-system"
    assert atoms(role) == LEASE
    binding = one(defaults, "RoleBinding")
    assert binding["metadata"]["namespace"] == "shadowsync-system"
    assert binding["roleRef"]["kind"] == "Role" and binding["roleRef"]["name"] == role["metadata"]["name"]
    assert bound_subjects(binding) == [SA]


def test_watch_namespace_switches_to_a_role(chart):
    objects = render({"watchNamespace": "iot-fleet"}, chart=chart)
    role = one(objects, "Role", "shadowsync")
    assert role["metadata"]["namespace"] == "iot-fleet"
    assert atoms(role) == WATCHED | SECRETS | CONFIGMAPS
    binding = one(objects, "RoleBinding", "shadowsync")
    assert binding["metadata"]["namespace"] == "iot-fleet"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "shadowsync"}
    assert bound_subjects(binding) == [SA]
    # The only cluster-scoped grant left: reading the watched Namespace object itself.
    cluster_role = one(objects, "ClusterRole")
    assert atoms(cluster_role) == grants(group="", resources={"namespaces"}, verbs={"get", "list", "watch"},
                                         names=("iot-fleet",))
    cluster_binding = one(objects, "ClusterRoleBinding")
    assert cluster_binding["roleRef"]["name"] == cluster_role["metadata"]["name"]
    assert bound_subjects(cluster_binding) == [SA]
    # Leader election still in the release namespace.
    assert atoms(one(objects, "Role", "shadowsync-leader-election")) == LEASE


def test_namespace_rule_follows_the_flags_the_operator_gets(chart):
    """Tenancy reads Namespace annotations: with --namespace, the operator lists and watches
    only that Namespace (field selector metadata.name), which is exactly what the
    resourceNames-limited ClusterRole allows; without it, every Namespace."""
    objects = render({"watchNamespace": "iot-fleet", "requireNamespaceAllowlist": True}, chart=chart)
    args = container(objects)["args"]
    assert "--namespace=iot-fleet" in args and "--require-namespace-allowlist" in args
    rules = [r for r in one(objects, "ClusterRole")["rules"] if "namespaces" in r["resources"]]
    assert rules == [{"apiGroups": [""], "resources": ["namespaces"], "resourceNames": ["iot-fleet"],
                      "verbs": ["get", "list", "watch"]}]
    objects = render({"requireNamespaceAllowlist": True}, chart=chart)
    rules = [r for r in one(objects, "ClusterRole")["rules"] if "namespaces" in r["resources"]]
    assert rules == [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]}]


@pytest.mark.parametrize("rbac, expected", [
    ({"readSecrets": False}, WATCHED | CONFIGMAPS | ALL_NAMESPACES),
    ({"readConfigMaps": False}, WATCHED | SECRETS | ALL_NAMESPACES),
    ({"readSecrets": False, "readConfigMaps": False}, WATCHED | ALL_NAMESPACES),
])
def test_payload_source_access_can_be_dropped(chart, rbac, expected):
    assert atoms(one(render({"rbac": rbac}, chart=chart), "ClusterRole")) == expected


def test_rbac_create_false_renders_no_rbac(chart):
    objects = render({"rbac": {"create": False}}, chart=chart)
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        assert not find(objects, kind)


@pytest.mark.parametrize("values", [{}, {"watchNamespace": "a"}, {"replicas": 2}, {"leaderElection": {"namespace": "x"}}],
                         ids=["defaults", "namespaced", "ha", "lease-ns"])
def test_no_wildcards_and_no_write_access_to_core_objects(chart, values):
    for role in find(render(values, chart=chart), "ClusterRole") + find(render(values, chart=chart), "Role"):
        for group, resource, verb, _ in atoms(role):
            assert "*" not in (group, resource, verb)
            if group == "":
                assert verb in {"get", "list", "watch"}, (resource, verb)
            if resource in ("secrets", "configmaps"):
                assert verb == "get"


def test_readme_documents_every_rule(defaults, chart):
    """Each (group, resource, verbs) line of the RBAC table in the chart README matches a
    rendered rule, and each rendered rule is in the table."""
    readme = (chartlib.CHART / "README.md").read_text(encoding="utf-8")
    section = readme.split("## RBAC", 1)[1].split("\n## ", 1)[0]
    documented = set()
    for line in section.splitlines():
        m = re.match(r"^\|\s*`([^`]*)`\s*\|\s*`([^`]+)`\s*\|\s*`([^`]+)`\s*\|", line)
        if m:
            group = "" if m.group(1) in ("core", '""') else m.group(1)
            names = [n.replace("<watchNamespace>", "watched") for n in re.findall(r"name `([^`]+)`", line)] or [None]
            for resource in m.group(2).split(", "):
                for verb in m.group(3).split(", "):
                    for name in names:
                        documented.add((group, resource, verb, name))
    namespaced = render({"watchNamespace": "watched"}, chart=chart)
    rendered = set()
    for objects in (defaults, namespaced):
        for role in find(objects, "ClusterRole") + find(objects, "Role"):
            rendered |= atoms(role)
    assert documented == rendered


@pytest.mark.parametrize("values", [{}, {"watchNamespace": "iot-fleet"}], ids=["cluster", "namespaced"])
def test_set_rules_and_nothing_more_on_the_custom_resources(chart, values):
    """What ThingShadowSet adds, in both scopes: watch the sets, write their status, create
    and delete children, and update on thingshadowsets/finalizers (never sent: it is what
    lets a child's ownerReference carry blockOwnerDeletion). Nothing is granted on kinds
    the chart does not install, no `update` except on the finalizers subresource (status
    and finalizers change by patch), and no create or delete of RetainedMessages or sets."""
    objects = render(values, chart=chart)
    name = "shadowsync"
    role = one(objects, "Role", name) if values else one(objects, "ClusterRole", name)
    ours = {a for a in atoms(role) if a[0] == GROUP}
    assert SETS <= ours
    assert {r.split("/")[0] for _, r, _, _ in ours} == KINDS
    assert {(r, v) for _, r, v, _ in ours if v == "update"} == {("thingshadowsets/finalizers", "update")}
    assert {(r, v) for _, r, v, _ in ours if v in ("create", "delete")} == {
        ("thingshadows", "create"), ("thingshadows", "delete")}
    assert not {(r, v) for _, r, v, _ in ours if r == "thingshadowsets" and v not in ("list", "watch")}
    # Each rule of the template carries its own comment (the README table is the long form).
    text = (chartlib.CHART / "templates" / "_rules.tpl").read_text(encoding="utf-8")
    body = text.split('define "shadowsync.rules"', 1)[1].split("{{- end }}\n{{- end }}", 1)[0]
    lines = [line for line in body.splitlines() if line.strip() and not line.startswith("{{")]
    for i, line in enumerate(lines):
        if line.startswith("- apiGroups:"):
            assert i > 0 and lines[i - 1].startswith("#"), f"rule without a comment: {line}"
