"""The Argo CD health check (deploy/argocd/health.lua) run by a real Lua interpreter
(lupa's bundled Lua 5.1, the dialect of Argo CD's gopher-lua, and Lua 5.4) on sample
ThingShadow, RetainedMessage and ThingShadowSet objects."""

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


def fleet(conditions, phase=None, generation=3, observed=3, targeted=40, updated=20, converged=18, failed=1,
          conflicting=0, step="2/3 (50%)", **metadata):
    """A ThingShadowSet with the status the fleet controller writes."""
    obj = {
        "apiVersion": "iot.shadowsync.dev/v1alpha1",
        "kind": "ThingShadowSet",
        "metadata": {"name": "lamps", "namespace": "fleet", "generation": generation, **metadata},
        "spec": {"selector": {"thingGroup": {"name": "lamps"}}, "template": {"desired": {"power": "on"}},
                 "rollout": {"steps": [10, 50, 100], "maxFailures": "10%", "onFailure": "Rollback"}},
    }
    if conditions is not None:
        obj["status"] = {"observedGeneration": observed, "conditions": conditions, "targeted": targeted,
                         "updated": updated, "converged": converged, "failed": failed, "conflicting": conflicting,
                         "currentStep": 1}
        if phase is not None:
            obj["status"]["phase"] = phase
        if step is not None:
            obj["status"]["step"] = step
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
    # ThingShadowSet: the phase and the kstatus conditions the fleet controller writes.
    "set progressing": (
        fleet([cond("Ready", "False", "RolloutProgressing", "waiting for step 2 to converge"),
               cond("Reconciling", "True", "RolloutProgressing", "waiting for step 2 to converge")],
              phase="Progressing"),
        "Progressing",
        "RolloutProgressing: waiting for step 2 to converge; step 2/3 (50%): 20/40 updated, 18 converged, 1 failed"),
    "set progressing without Reconciling": (
        fleet([cond("Ready", "False", "RolloutProgressing", "step 1 of 3")], phase="Progressing"),
        "Progressing", "RolloutProgressing: step 1 of 3; step 2/3 (50%): 20/40 updated, 18 converged, 1 failed"),
    "set complete": (
        fleet([cond("Ready", "True", "RolloutComplete", "40 of 40 things carry revision 3f2a9c01de"),
               cond("Reconciling", "False", "RolloutComplete")],
              phase="Complete", updated=40, converged=39, failed=1, step="3/3 (100%)"),
        "Healthy",
        "RolloutComplete: 40 of 40 things carry revision 3f2a9c01de; step 3/3 (100%): 40/40 updated, 39 converged, "
        "1 failed"),
    "set complete with conflicting things": (
        fleet([cond("Ready", "True", "RolloutComplete")], phase="Complete", targeted=5, updated=3, converged=3,
              failed=0, conflicting=2, step=None),
        "Healthy", "RolloutComplete; 3/5 updated, 3 converged, 0 failed, 2 conflicting"),
    "set paused by annotation": (
        fleet([cond("Ready", "False", "Paused", "annotation iot.shadowsync.dev/paused is true")], phase="Paused"),
        "Suspended",
        "Paused: annotation iot.shadowsync.dev/paused is true; step 2/3 (50%): 20/40 updated, 18 converged, 1 failed"),
    "set paused while a step was reconciling": (
        fleet([cond("Ready", "False", "Paused"), cond("Reconciling", "True", "RolloutProgressing")], phase="Paused"),
        "Suspended", None),
    "set aborted": (
        fleet([cond("Ready", "False", "RolloutAborted", "5 failed, more than maxFailures 10% (4)"),
               cond("Stalled", "True", "RolloutAborted", "5 failed, more than maxFailures 10% (4)")],
              phase="Aborted", failed=5),
        "Degraded",
        "RolloutAborted: 5 failed, more than maxFailures 10% (4); step 2/3 (50%): 20/40 updated, 18 converged, 5 failed"),
    "set aborted without Stalled": (
        fleet([cond("Ready", "False", "RolloutAborted", "rolled back")], phase="Aborted"), "Degraded", None),
    "set with an invalid spec": (
        fleet([cond("Ready", "False", "InvalidSpec", "spec.rollout.steps: the last step must be 100"),
               cond("Stalled", "True", "InvalidSpec", "spec.rollout.steps: the last step must be 100")],
              phase=None, targeted=0, updated=0, converged=0, failed=0, step=None),
        "Degraded", "InvalidSpec: spec.rollout.steps: the last step must be 100; 0/0 updated, 0 converged, 0 failed"),
    "set with an invalid spec after a complete rollout": (
        fleet([cond("Ready", "False", "InvalidSpec", "spec.resyncInterval"),
               cond("Stalled", "True", "InvalidSpec", "spec.resyncInterval")], phase="Complete"),
        "Degraded", None),
    "set status older than the spec": (
        fleet([cond("Ready", "True", "RolloutComplete", generation=3)], phase="Complete", generation=4, observed=3),
        "Progressing", "Waiting for the operator to observe generation 4"),
    "set complete for an older generation": (
        fleet([cond("Ready", "True", "RolloutComplete", generation=3)], phase="Complete", generation=4, observed=4),
        "Progressing", "Waiting for the operator to observe generation 4"),
    "set without status": (fleet(None), "Progressing", "Waiting for the operator to report status"),
    "set being deleted": (
        fleet([cond("Ready", "True", "RolloutComplete")], phase="Complete", deletionTimestamp="2025-01-01T00:00:00Z"),
        "Progressing", "Deleting: the set's ThingShadows clean up in AWS IoT before they are removed"),
    "set whose group cannot be read": (
        fleet([cond("Ready", "False", "Throttled", "ListThingsInThingGroup: rate exceeded"),
               cond("Reconciling", "True", "Throttled", "retrying in 4s")], phase="Complete"),
        "Progressing", None),
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


def test_every_argo_status_is_reachable_for_a_set():
    statuses = {run(obj)[0] for obj, _, _ in CASES.values() if obj["kind"] == "ThingShadowSet"}
    assert statuses == {"Healthy", "Progressing", "Degraded", "Suspended"}


@pytest.mark.parametrize("phase, expected", [
    ("Progressing", "Progressing"), ("Complete", "Healthy"), ("Paused", "Suspended"), ("Aborted", "Degraded")])
def test_each_set_phase_with_its_kstatus_conditions(phase, expected):
    """The conditions the fleet controller pairs with each phase (kstatus), as the README
    states them, give the Argo CD status of the same meaning."""
    conditions = {
        "Progressing": [cond("Ready", "False", "RolloutProgressing"), cond("Reconciling", "True", "RolloutProgressing")],
        "Complete": [cond("Ready", "True", "RolloutComplete")],
        "Paused": [cond("Ready", "False", "Paused")],
        "Aborted": [cond("Ready", "False", "RolloutAborted"), cond("Stalled", "True", "RolloutAborted")],
    }[phase]
    for runtime in RUNTIMES:
        assert run(fleet(conditions, phase=phase), runtime)[0] == expected


def test_the_set_figures_are_only_for_sets():
    """A ThingShadow carrying fields named like a set's counts gets no rollout figures."""
    obj = shadow([READY])
    obj["status"]["targeted"] = 3
    assert run(obj) == ("Healthy", "InSync: desired state written at version 42")


def test_argocd_cm_embeds_the_script_for_every_kind():
    cm = yaml.safe_load(ARGOCD_CM.read_text(encoding="utf-8"))
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "argocd-cm"
    kinds = sorted(yaml.safe_load(p.read_text(encoding="utf-8"))["spec"]["names"]["kind"]
                   for p in (chartlib.REPO / "crds").glob("*.yaml"))
    assert kinds == ["RetainedMessage", "ThingShadow", "ThingShadowSet"]
    assert cm["data"] == {f"resource.customizations.health.iot.shadowsync.dev_{kind}": SCRIPT for kind in kinds}


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
    assert run(as_argo_passes_it(CASES["set progressing"][0]), runtime) == CASES["set progressing"][1:]
    assert run(as_argo_passes_it(CASES["set complete with conflicting things"][0]), runtime) == (
        CASES["set complete with conflicting things"][1:])
