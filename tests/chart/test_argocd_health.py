"""The Argo CD health check (deploy/argocd/health.lua) run by a real Lua interpreter
(lupa's bundled Lua 5.1, the dialect of Argo CD's gopher-lua, and Lua 5.4) on sample
ThingShadow and RetainedMessage objects."""

from __future__ import annotations

import copy

import pytest
import yaml
from lupa import lua51, lua54

import chartlib

SCRIPT_PATH = chartlib.REPO / "deploy" / "argocd" / "health.lua"
SCRIPT = SCRIPT_PATH.read_text(encoding="utf-8")
ARGOCD_CM = chartlib.REPO / "deploy" / "argocd" / "argocd-cm.yaml"
RUNTIMES = {"lua5.1": lua51, "lua5.4": lua54}


def run(obj, runtime="lua5.1"):
    """Runs the script as Argo CD does: `obj` is a global table, the script returns `hs`."""
    lua = RUNTIMES[runtime].LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    hs = lua.execute(SCRIPT)
    assert hs is not None, "script returned nothing"
    result = dict(hs.items())
    assert set(result) == {"status", "message"}, result
    return result["status"], result["message"]


def cond(type_, status, reason, message="", generation=3):
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "observedGeneration": generation, "lastTransitionTime": "2025-01-01T00:00:00Z"}


def shadow(conditions, generation=3, observed=3, **metadata):
    obj = {
        "apiVersion": "iot.shadowsync.dev/v1alpha1",
        "kind": "ThingShadow",
        "metadata": {"name": "kitchen-lamp", "namespace": "home", "generation": generation, **metadata},
        "spec": {"thingName": "kitchen-lamp", "desired": {"power": "on"}},
    }
    if conditions is not None:
        obj["status"] = {"observedGeneration": observed, "conditions": conditions}
        if observed is None:
            del obj["status"]["observedGeneration"]
    return obj


def message(status_conditions, **kw):
    obj = shadow(status_conditions, **kw)
    obj["kind"] = "RetainedMessage"
    obj["spec"] = {"topic": "home/lamp/config", "payload": {"text": "x"}}
    return obj


READY = cond("Ready", "True", "InSync", "desired state written at version 42")
SYNCED = cond("Synced", "True", "Succeeded")

CASES = {
    "ready": (
        shadow([READY, SYNCED, cond("Converged", "True", "DeviceConverged"),
                cond("Reconciling", "False", "InSync"), cond("Stalled", "False", "InSync")]),
        "Healthy", "InSync: desired state written at version 42"),
    "ready without message": (shadow([cond("Ready", "True", "InSync")]), "Healthy", "InSync"),
    "ready while the device lags": (
        shadow([READY, cond("Converged", "False", "AwaitingDevice", "/power still in delta")]), "Healthy", None),
    "observe": (shadow([cond("Ready", "True", "Observed", "shadow read")]), "Healthy", "Observed: shadow read"),
    "expired retained message": (message([cond("Ready", "True", "Expired")]), "Healthy", "Expired"),
    "writing": (
        shadow([cond("Ready", "False", "Writing", "writing 2 paths"), cond("Reconciling", "True", "Writing", "writing 2 paths")]),
        "Progressing", "Writing: writing 2 paths"),
    "benign conflict retry": (
        shadow([cond("Ready", "False", "VersionConflict"), cond("Reconciling", "True", "VersionConflict", "retry 2 of 5")]),
        "Progressing", "VersionConflict: retry 2 of 5"),
    "invalid spec": (
        shadow([cond("Ready", "False", "InvalidSpec", "spec.thingName: bad"),
                cond("Stalled", "True", "InvalidSpec", "spec.thingName: bad")]),
        "Degraded", "InvalidSpec: spec.thingName: bad"),
    "conflict under Preserve": (
        message([cond("Ready", "False", "Conflict"), cond("Reconciling", "False", "Conflict"),
                 cond("Stalled", "True", "Conflict", "/mode: ours heat, theirs cool")]),
        "Degraded", "Conflict: /mode: ours heat, theirs cool"),
    "stalled wins over reconciling": (
        shadow([cond("Reconciling", "True", "Writing"), cond("Stalled", "True", "AccessDenied", "iot:UpdateThingShadow")]),
        "Degraded", "AccessDenied: iot:UpdateThingShadow"),
    "duplicate target": (
        shadow([cond("Ready", "False", "DuplicateTarget", "owned by home/other")]), "Degraded", "DuplicateTarget: owned by home/other"),
    "throttled": (shadow([cond("Ready", "False", "Throttled", "429")]), "Degraded", "Throttled: 429"),
    "paused": (shadow([cond("Ready", "False", "Paused", "annotation iot.shadowsync.dev/paused")]), "Suspended", None),
    "ready unknown": (shadow([cond("Ready", "Unknown", "Pending")]), "Progressing", "Waiting for the Ready condition"),
    "no status": (shadow(None), "Progressing", "Waiting for the operator to report status"),
    "empty conditions": (shadow([]), "Progressing", "Waiting for the operator to report status"),
    "status from an older generation": (
        shadow([READY], generation=4, observed=3), "Progressing", "Waiting for the operator to observe generation 4"),
    "stalled on an older generation": (
        shadow([cond("Stalled", "True", "InvalidSpec", generation=3)], generation=4, observed=3),
        "Progressing", "Waiting for the operator to observe generation 4"),
    "no observedGeneration": (shadow([READY], observed=None), "Progressing", "Waiting for the operator to observe generation 3"),
    "ready condition from an older generation": (
        shadow([cond("Ready", "True", "InSync", generation=2)], generation=3, observed=3),
        "Progressing", "Waiting for the operator to observe generation 3"),
    "being deleted": (
        shadow([READY], deletionTimestamp="2025-01-01T00:00:00Z", finalizers=["iot.shadowsync.dev/cleanup"]),
        "Progressing", None),
    "deletion blocked by access denied": (
        shadow([cond("Stalled", "True", "AccessDenied", "iot:DeleteThingShadow")], deletionTimestamp="2025-01-01T00:00:00Z"),
        "Degraded", "AccessDenied: iot:DeleteThingShadow"),
}


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
@pytest.mark.parametrize("name", sorted(CASES))
def test_health(name, runtime):
    obj, expected_status, expected_message = CASES[name]
    status, msg = run(copy.deepcopy(obj), runtime)
    assert status == expected_status
    if expected_message is not None:
        assert msg == expected_message
    else:
        assert msg


def test_every_argo_status_is_reachable():
    statuses = {run(obj)[0] for obj, _, _ in CASES.values()}
    assert statuses == {"Healthy", "Progressing", "Degraded", "Suspended"}


def test_argocd_cm_embeds_the_script_for_both_kinds():
    cm = yaml.safe_load(ARGOCD_CM.read_text(encoding="utf-8"))
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "argocd-cm"
    assert cm["data"] == {
        "resource.customizations.health.iot.shadowsync.dev_ThingShadow": SCRIPT,
        "resource.customizations.health.iot.shadowsync.dev_RetainedMessage": SCRIPT,
    }


def as_argo_passes_it(obj):
    """Argo CD converts the object from JSON, so every number arrives as a float."""
    if isinstance(obj, dict):
        return {k: as_argo_passes_it(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [as_argo_passes_it(v) for v in obj]
    if isinstance(obj, int) and not isinstance(obj, bool):
        return float(obj)
    return obj


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
def test_generations_as_floats(runtime):
    obj = as_argo_passes_it(CASES["status from an older generation"][0])
    assert run(obj, runtime) == ("Progressing", "Waiting for the operator to observe generation 4")
    assert run(as_argo_passes_it(CASES["ready"][0]), runtime)[0] == "Healthy"
