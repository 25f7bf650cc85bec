"""ThingShadowSets end to end, with boto3 on the AWS side and kubectl on the Kubernetes side.

The real `shadowsync run`, started with the container args of deploy/install.yaml's
Deployment and authenticated as the chart's ServiceAccount (bound by install.yaml's RBAC
objects), reconciles sets on the session's control plane (tests/kube: etcd,
kube-apiserver, kube-controller-manager with the garbage collector) against
`shadowsync dataplane serve` with simulated devices (fleetlib.py).

Everything AWS goes through boto3, as a user's tooling would: things, their attributes
and the thing groups are created with the `iot` client; the cloud every status count is
compared with is read with `iot-data`'s get_thing_shadow. A set's counts must be what the
shadows show: `updated` things hold the template in desired, `converged` ones also in
reported, `failed` ones hold it in desired only (their devices are silent: not among the
simulated devices), `targeted` is the membership as ListThingsInThingGroup or SearchIndex
gives it.

- By list: every device converges or fails its step timeout, and the status says which.
- By thing group (recursive): a canary `[10, 50, 100]` whose slice holds a silent device
  aborts (maxFailures 0) and rolls back (onFailure Rollback): the canary is back on the
  first template in the cloud, and no other device was ever written again.
- By thing group and by query: membership changes made with boto3 (a thing removed from
  the group and another added; a thing deleted and another created with the queried
  attribute) are followed at the next membership read (resyncInterval 10s).
- `kubectl delete` of a set clears the template's keys from every child's desired state
  (deletionPolicy ClearDesired) and keeps what the devices reported.
"""

from __future__ import annotations

import hashlib
import json
import math
import time

import pytest

from cluster import wait_until
from fleetlib import GROUP_VERSION, REVISION_ANNOTATION, SET_LABEL, SETS, SHADOWS, FleetStack

NAMESPACE = "fleet-e2e"
# Long enough for a step timeout, a membership resync (10 s) and a few device reports.
DEADLINE = 60.0
POLL = 0.25


@pytest.fixture(scope="module")
def stack(cluster, tmp_path_factory):
    pytest.importorskip("boto3", reason="boto3 drives the AWS side of the fleet tests "
                                        "(pip install -r tests/python/requirements.txt)")
    fleet = FleetStack(cluster, tmp_path_factory.mktemp("fleet"), NAMESPACE)
    try:
        fleet.start()
        yield fleet
    finally:
        problems = fleet.stop()
    assert not problems, "cleaning up the fleet stack:\n" + "\n".join(problems)


@pytest.fixture(scope="module")
def iot(stack):
    return stack.boto3_client("iot")


@pytest.fixture(scope="module")
def iot_data(stack):
    return stack.boto3_client("iot-data")


# --- the cloud, as boto3 sees it ---------------------------------------------------------


def shadow_state(iot_data, thing: str) -> dict | None:
    """The classic shadow of `thing` (get_thing_shadow), or None when it has none."""
    from botocore.exceptions import ClientError

    try:
        answer = iot_data.get_thing_shadow(thingName=thing)
    except ClientError as e:
        if e.response["Error"]["Code"] == "ResourceNotFoundException":
            return None
        raise
    return json.loads(answer["payload"].read())


def desired(iot_data, thing: str) -> dict:
    doc = shadow_state(iot_data, thing) or {}
    return doc.get("state", {}).get("desired") or {}


def reported(iot_data, thing: str) -> dict:
    doc = shadow_state(iot_data, thing) or {}
    return doc.get("state", {}).get("reported") or {}


def holds(section: dict, template: dict) -> bool:
    return all(section.get(key) == value for key, value in template.items())


def cloud_counts(iot_data, things: list[str], template: dict) -> dict:
    """What the status counts must be, from the shadows: updated things hold the
    template in desired, converged ones in reported too, failed ones only in desired."""
    counts = {"targeted": len(things), "updated": 0, "converged": 0, "failed": 0}
    failed = []
    for thing in things:
        doc = shadow_state(iot_data, thing) or {}
        state = doc.get("state", {})
        if holds(state.get("desired") or {}, template):
            counts["updated"] += 1
            if holds(state.get("reported") or {}, template):
                counts["converged"] += 1
            else:
                counts["failed"] += 1
                failed.append(thing)
    return {**counts, "failedThings": sorted(failed)}


def status_counts(obj: dict) -> dict:
    status = obj.get("status", {})
    return {**{field: status.get(field, 0) for field in ("targeted", "updated", "converged", "failed")},
            "failedThings": sorted(t["thing"] for t in status.get("failedThings", []))}


def desired_written_at(iot_data, thing: str, key: str) -> int:
    """When `key` was last written into the desired state (the shadow's metadata)."""
    doc = shadow_state(iot_data, thing) or {}
    return doc.get("metadata", {}).get("desired", {}).get(key, {}).get("timestamp", 0)


def group_members(iot, group: str) -> list[str]:
    things, token = [], None
    while True:
        page = iot.list_things_in_thing_group(thingGroupName=group, recursive=True, maxResults=5,
                                              **({"nextToken": token} if token else {}))
        things += page["things"]
        token = page.get("nextToken")
        if not token:
            return sorted(things)


def query_members(iot, query: str) -> list[str]:
    things, token = [], None
    while True:
        page = iot.search_index(indexName="AWS_Things", queryString=query, maxResults=5,
                                **({"nextToken": token} if token else {}))
        things += [t["thingName"] for t in page["things"]]
        token = page.get("nextToken")
        if not token:
            return sorted(things)


def create_things(iot, things: list[str], attributes: dict[str, str] | None = None) -> None:
    for thing in things:
        if attributes:
            iot.create_thing(thingName=thing, attributePayload={"attributes": attributes})
        else:
            iot.create_thing(thingName=thing)


def names(prefix: str, first: int, last: int) -> list[str]:
    return [f"{prefix}-{i:02d}" for i in range(first, last + 1)]


def rollout_order(things: list[str]) -> list[str]:
    """The rollout order: by the SHA-256 of the thing names (README, Rollout rules)."""
    return sorted(things, key=lambda t: (hashlib.sha256(t.encode()).digest(), t))


# --- the sets, as kubectl sees them -------------------------------------------------------


def thing_shadow_set(name: str, spec: dict) -> dict:
    return {"apiVersion": GROUP_VERSION, "kind": "ThingShadowSet",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}


def get_set(stack, name: str) -> dict | None:
    return stack.cluster.get(f"{SETS}/{name}", NAMESPACE)


def condition(obj: dict, kind: str) -> dict | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), None)


def is_current(obj: dict) -> bool:
    """The status was written for the current generation (status and Ready condition)."""
    generation = obj["metadata"].get("generation")
    ready = condition(obj, "Ready")
    return (generation is not None and obj.get("status", {}).get("observedGeneration") == generation
            and ready is not None and ready.get("observedGeneration") == generation)


def phase_is(obj: dict, phase: str) -> bool:
    return obj.get("status", {}).get("phase") == phase and is_current(obj)


def wait_set(stack, name: str, what: str, check, timeout: float = DEADLINE) -> dict:
    """Polls the set until `check` accepts it; on timeout the message holds its last
    status and the end of the operator's log."""
    last: dict = {}

    def look():
        assert stack.operator.running(), f"the operator exited ({stack.operator.proc.returncode})"
        obj = get_set(stack, name)
        last["status"] = obj and obj.get("status")
        return obj if obj is not None and check(obj) else None
    try:
        return wait_until(look, timeout=timeout, interval=POLL, what=f"ThingShadowSet {name}: {what}")
    except AssertionError as e:
        raise AssertionError(f"{e}\nlast status: {json.dumps(last.get('status'), indent=1)}\n"
                             f"{stack.operator.tail()}") from None


def children(stack, set_name: str) -> dict[str, dict]:
    """The set's child ThingShadows, by thing name."""
    out = stack.cluster.kubectl("get", SHADOWS, "-n", NAMESPACE, "-l", f"{SET_LABEL}={set_name}", "-o", "json")
    return {c["spec"]["thingName"]: c for c in json.loads(out.stdout)["items"]}


def patch_set(stack, name: str, patch: dict) -> dict:
    """A merge patch with kubectl; the set as patched."""
    out = stack.cluster.kubectl("patch", SETS, name, "-n", NAMESPACE, "--type=merge", "-p", json.dumps(patch),
                                "-o", "json")
    return json.loads(out.stdout)


def set_events(stack, name: str) -> list[dict]:
    out = stack.cluster.kubectl("get", "events", "-n", NAMESPACE, "--field-selector",
                                f"involvedObject.kind=ThingShadowSet,involvedObject.name={name}", "-o", "json")
    return json.loads(out.stdout)["items"]


def kubectl_row(stack, name: str) -> dict[str, str]:
    """`kubectl get tshadowset NAME`: the printer columns of the set, by header."""
    out = stack.cluster.kubectl("get", "tshadowset", name, "-n", NAMESPACE).stdout
    header, row = out.splitlines()[:2]
    # STEP holds a space ("1/1 (100%)"): cut the row where the (left-aligned) headers start.
    starts = [i for i, c in enumerate(header) if c != " " and (i == 0 or header[i - 1] == " ")]
    bounds = list(zip(starts, starts[1:] + [None]))
    return {header[a:b].strip(): row[a:b].strip() for a, b in bounds}


# --- the tests ---------------------------------------------------------------------------


def test_a_set_by_list_counts_what_the_cloud_shows(stack, iot, iot_data):
    things = names("fl-lamp", 1, 6)
    talking, silent = things[:4], things[4:]
    create_things(iot, things)
    stack.simulation.talk(*talking)
    template = {"power": "on", "level": 3}
    stack.cluster.create(thing_shadow_set("lamps", {
        "selector": {"things": things},
        "template": {"desired": template, "refreshInterval": "1s"},
        "rollout": {"stepTimeout": "3s", "maxFailures": 2},
    }))

    done = wait_set(stack, "lamps", "Complete, 4 converged and the 2 silent devices failed", lambda o: (
        phase_is(o, "Complete") and o["status"].get("converged") == 4 and o["status"].get("failed") == 2))
    status = done["status"]
    # The counts are what the cloud shows.
    expected = cloud_counts(iot_data, things, template)
    assert status_counts(done) == expected, (status, expected)
    assert expected == {"targeted": 6, "updated": 6, "converged": 4, "failed": 2, "failedThings": silent}
    assert status.get("conflicting", 0) == 0 and not status.get("conflictingThings")
    for issue in status["failedThings"]:
        assert f"not converged 3s after it got revision {status['revision']}" in issue["reason"], issue
    for thing in talking:
        assert reported(iot_data, thing) == template, thing
    for thing in silent:
        assert reported(iot_data, thing) == {}, f"{thing} is silent"
    assert status["step"] == "1/1 (100%)" and status["completeRevision"] == status["revision"], status
    ready = condition(done, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "RolloutComplete"), ready

    # One child per thing, owned by the set (so the garbage collector deletes it with the
    # set) and annotated with the revision it carries.
    kids = children(stack, "lamps")
    assert sorted(kids) == things
    for thing, child in kids.items():
        assert child["metadata"]["annotations"][REVISION_ANNOTATION] == status["revision"], thing
        (owner,) = child["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"], owner["blockOwnerDeletion"]) == (
            "ThingShadowSet", "lamps", done["metadata"]["uid"], True, True), owner
    assert kubectl_row(stack, "lamps") | {"AGE": ""} == {
        "NAME": "lamps", "TARGETED": "6", "UPDATED": "6", "CONVERGED": "4", "FAILED": "2",
        "STEP": "1/1 (100%)", "PHASE": "Complete", "AGE": ""}


def test_a_canary_by_thing_group_aborts_on_a_silent_device_and_rolls_back(stack, iot, iot_data):
    west, east = names("fc-west", 1, 8), names("fc-east", 1, 4)
    everyone = west + east
    create_things(iot, everyone)
    iot.create_thing_group(thingGroupName="fc-lamps")
    iot.create_thing_group(thingGroupName="fc-lamps-east", parentGroupName="fc-lamps")
    for thing in west:
        iot.add_thing_to_thing_group(thingGroupName="fc-lamps", thingName=thing)
    for thing in east:
        iot.add_thing_to_thing_group(thingGroupName="fc-lamps-east", thingName=thing)
    assert group_members(iot, "fc-lamps") == sorted(everyone)
    stack.simulation.talk(*everyone)

    def spec(mode: str) -> dict:
        return {"selector": {"thingGroup": {"name": "fc-lamps", "recursive": True}},
                "template": {"desired": {"mode": mode}, "refreshInterval": "1s"},
                "rollout": {"steps": [10, 50, 100], "stepTimeout": "4s", "maxFailures": 0, "onFailure": "Rollback"}}

    stack.cluster.create(thing_shadow_set("canary", spec("eco")))
    first = wait_set(stack, "canary", "the first rollout Complete", lambda o: (
        phase_is(o, "Complete") and o["status"].get("converged") == 12))
    assert status_counts(first) == cloud_counts(iot_data, everyone, {"mode": "eco"})
    eco = first["status"]["revision"]
    written = {thing: desired_written_at(iot_data, thing, "mode") for thing in everyone}
    assert all(written.values()), written

    # The canary slice: ceil(12 x 10%) = 2 devices, the first in the rollout order. The
    # first of them goes silent.
    canary = rollout_order(everyone)[:math.ceil(12 * 10 / 100)]
    silent = canary[0]
    stack.simulation.silence(silent)
    # Every version of the set from here on, none missed between two polls.
    watch = stack.watch(SETS, "canary")
    try:
        wait_until(watch.versions, timeout=30, interval=0.1, what="kubectl get --watch to print the set")
        generation = patch_set(stack, "canary", {"spec": {"template": {"desired": {"mode": "boost"}}}})[
            "metadata"]["generation"]

        def statuses() -> list[dict]:
            """The statuses written for the boost template, in order."""
            return [v["status"] for v in watch.versions()
                    if v["metadata"].get("generation") == generation and is_current(v)]
        try:
            wait_until(lambda: any(s.get("phase") == "Aborted" for s in statuses()), timeout=DEADLINE,
                       interval=POLL, what="the canary to abort")
        except AssertionError as e:
            seen = [{k: s.get(k) for k in ("phase", "step", "updated", "converged", "failed")} for s in statuses()]
            raise AssertionError(f"{e}\nthe statuses of the new template: {seen}\n{stack.operator.tail()}") from None
    finally:
        watch.stop()
    seen = statuses()
    progressing = [s for s in seen if s["phase"] == "Progressing"]
    assert progressing, f"never Progressing before the abort: {seen}"
    boost = progressing[0]["revision"]
    assert boost != eco
    for status in progressing:
        # The canary step, never more than its 2 devices.
        assert (status["step"], status["revision"]) == ("1/3 (10%)", boost), status
        assert status.get("updated", 0) <= 2 and status.get("failed", 0) == 0, status
    aborted = next(v for v in watch.versions() if v["metadata"].get("generation") == generation
                   and is_current(v) and v["status"]["phase"] == "Aborted")
    stalled, ready = condition(aborted, "Stalled"), condition(aborted, "Ready")
    assert (stalled["status"], stalled["reason"], ready["status"]) == ("True", "RolloutAborted", "False"), aborted
    status = aborted["status"]
    assert (status["step"], status.get("updated"), status.get("failed")) == ("1/3 (10%)", 2, 1), status
    assert [f["thing"] for f in status.get("failedThings", [])] == [silent], status
    assert f"not converged 4s after it got revision {boost}" in status["failedThings"][0]["reason"], status
    events = wait_until(lambda: (found := set_events(stack, "canary")) and {"RolloutAborted", "RolledBack"} <= {
        e["reason"] for e in found} and found, timeout=DEADLINE, interval=POLL, what="the abort's Events")
    assert {(e["type"], e["reason"], e["message"]) for e in events if e["reason"] == "RolledBack"} == {
        ("Warning", "RolledBack", f"2 things returned to revision {eco}")}, events

    # The rollback: every child carries the first revision again, the cloud says eco
    # everywhere, and only the canary was ever written again.
    def rolled_back():
        off = sorted(t for t, c in children(stack, "canary").items()
                     if c["metadata"]["annotations"][REVISION_ANNOTATION] != eco)
        assert not off, f"not back on the first revision yet: {off}"
        return True
    wait_until(rolled_back, timeout=DEADLINE, interval=POLL, what="the canary back on the first template")
    wait_until(lambda: all(desired(iot_data, t) == {"mode": "eco"} for t in everyone), timeout=DEADLINE,
               interval=POLL, what="every desired state back on eco (boto3)")
    for thing in everyone:
        again = desired_written_at(iot_data, thing, "mode")
        if thing in canary:
            assert again > written[thing], f"{thing}: the canary was written twice (boost, then eco)"
        else:
            assert again == written[thing], f"{thing} is outside the canary: never written again"
    # The talking canary device reported boost and then eco; the silent one still holds eco.
    wait_until(lambda: all(reported(iot_data, t) == {"mode": "eco"} for t in everyone), timeout=DEADLINE,
               interval=POLL, what="every device to report eco again")
    # Still aborted: nobody carries boost, in Kubernetes or in the cloud.
    settled = wait_set(stack, "canary", "Aborted with nobody on the abandoned revision", lambda o: (
        phase_is(o, "Aborted") and o["status"].get("updated", 0) == 0))
    assert settled["status"]["revision"] == boost and settled["status"]["completeRevision"] == eco
    # The aborted set keeps showing what stopped it: the silent device stays counted and
    # listed as failed, though after the rollback it no longer carries the revision.
    assert kubectl_row(stack, "canary") | {"AGE": ""} == {
        "NAME": "canary", "TARGETED": "12", "UPDATED": "0", "CONVERGED": "0", "FAILED": "1",
        "STEP": "1/3 (10%)", "PHASE": "Aborted", "AGE": ""}
    assert cloud_counts(iot_data, everyone, {"mode": "boost"}) == {
        "targeted": 12, "updated": 0, "converged": 0, "failed": 0, "failedThings": []}
    assert status_counts(settled) == {
        "targeted": 12, "updated": 0, "converged": 0, "failed": 1, "failedThings": [silent]}


def test_membership_changes_made_with_boto3_are_followed_at_the_next_resync(stack, iot, iot_data):
    # A thing group, and a fleet-indexing query on an attribute.
    grouped = names("fm-lamp", 1, 4)
    create_things(iot, grouped)
    iot.create_thing_group(thingGroupName="fm-lamps")
    for thing in grouped:
        iot.add_thing_to_thing_group(thingGroupName="fm-lamps", thingName=thing)
    v2, v1 = names("fq-lamp", 1, 4), ["fq-old-01"]
    create_things(iot, v2, {"model": "lamp-v2"})
    create_things(iot, v1, {"model": "lamp-v1"})
    query = "attributes.model:lamp-v2"
    assert query_members(iot, query) == v2
    quiet = "fq-lamp-04"
    stack.simulation.talk(*grouped, *v1, *(t for t in v2 if t != quiet))

    evening, x1 = {"scene": "evening"}, {"x": 1}
    stack.cluster.create(thing_shadow_set("by-group", {
        "selector": {"thingGroup": {"name": "fm-lamps", "recursive": True}},
        "template": {"desired": evening, "refreshInterval": "1s"},
        "resyncInterval": "10s",
    }))
    stack.cluster.create(thing_shadow_set("by-query", {
        "selector": {"query": query},
        "template": {"desired": x1, "refreshInterval": "1s"},
        "rollout": {"stepTimeout": "3s", "maxFailures": 1},
        "resyncInterval": "10s",
    }))
    group_done = wait_set(stack, "by-group", "Complete", lambda o: (
        phase_is(o, "Complete") and o["status"].get("converged") == 4))
    query_done = wait_set(stack, "by-query", "Complete, the quiet device failed", lambda o: (
        phase_is(o, "Complete") and o["status"].get("converged") == 3 and o["status"].get("failed") == 1))
    assert status_counts(group_done) == cloud_counts(iot_data, group_members(iot, "fm-lamps"), evening)
    assert status_counts(query_done) == cloud_counts(iot_data, query_members(iot, query), x1) == {
        "targeted": 4, "updated": 4, "converged": 3, "failed": 1, "failedThings": [quiet]}
    assert desired(iot_data, "fq-old-01") == {}, "lamp-v1 is not selected"
    read_before = {name: obj["status"]["membershipReadTime"] for name, obj in
                   (("by-group", group_done), ("by-query", query_done))}

    # Membership changes, through boto3 only.
    iot.remove_thing_from_thing_group(thingGroupName="fm-lamps", thingName="fm-lamp-01")
    create_things(iot, ["fm-lamp-05"])
    iot.add_thing_to_thing_group(thingGroupName="fm-lamps", thingName="fm-lamp-05")
    iot.delete_thing(thingName="fq-lamp-02")
    create_things(iot, ["fq-lamp-05"], {"model": "lamp-v2"})
    stack.simulation.talk("fm-lamp-05", "fq-lamp-05")
    changed = time.monotonic()
    group_now, query_now = group_members(iot, "fm-lamps"), query_members(iot, query)
    assert group_now == ["fm-lamp-02", "fm-lamp-03", "fm-lamp-04", "fm-lamp-05"]
    assert query_now == ["fq-lamp-01", "fq-lamp-03", "fq-lamp-04", "fq-lamp-05"]

    def follows(name: str, members: list[str]):
        def check(obj: dict) -> bool:
            return (sorted(children(stack, name)) == members
                    and obj["status"].get("membershipReadTime") != read_before[name]
                    and phase_is(obj, "Complete"))
        return check
    # Read again within one resyncInterval (10 s), plus a few passes.
    for name, members in (("by-group", group_now), ("by-query", query_now)):
        wait_set(stack, name, "the new membership", follows(name, members),
                 timeout=max(1.0, changed + 10 + 15 - time.monotonic()))

    # The newcomers got the template and their devices reported it; the leavers lost their
    # child, whose deletionPolicy (ClearDesired) cleared the template's keys.
    group_after = wait_set(stack, "by-group", "the newcomer converged", lambda o: (
        phase_is(o, "Complete") and o["status"].get("converged") == 4))
    query_after = wait_set(stack, "by-query", "the newcomer converged", lambda o: (
        phase_is(o, "Complete") and o["status"].get("converged") == 3 and o["status"].get("failed") == 1))
    assert status_counts(group_after) == cloud_counts(iot_data, group_now, evening) == {
        "targeted": 4, "updated": 4, "converged": 4, "failed": 0, "failedThings": []}
    assert status_counts(query_after) == cloud_counts(iot_data, query_now, x1) == {
        "targeted": 4, "updated": 4, "converged": 3, "failed": 1, "failedThings": [quiet]}
    assert desired(iot_data, "fm-lamp-01") == {}, "ClearDesired ran for the thing removed from the group"
    assert desired(iot_data, "fq-lamp-02") == {}, "ClearDesired ran for the deleted thing"
    assert reported(iot_data, "fm-lamp-01") == evening, "reported is kept"
    assert (desired(iot_data, "fm-lamp-05"), reported(iot_data, "fm-lamp-05")) == (evening, evening)
    assert (desired(iot_data, "fq-lamp-05"), reported(iot_data, "fq-lamp-05")) == (x1, x1)


def test_kubectl_delete_of_a_set_clears_the_desired_keys_of_its_children(stack, iot, iot_data):
    things = names("fd-lamp", 1, 4)
    talking = things[:3]
    create_things(iot, things)
    stack.simulation.talk(*talking)
    template = {"power": "off", "scene": "night"}
    stack.cluster.create(thing_shadow_set("doomed", {
        "selector": {"things": things},
        "template": {"desired": template, "refreshInterval": "1s"},
        "rollout": {"stepTimeout": "3s", "maxFailures": 1},
    }))
    done = wait_set(stack, "doomed", "Complete", lambda o: (
        phase_is(o, "Complete") and o["status"].get("converged") == 3 and o["status"].get("failed") == 1))
    assert status_counts(done) == cloud_counts(iot_data, things, template)
    assert sorted(children(stack, "doomed")) == things

    # kubectl delete: the set goes at once (it has no finalizer), the garbage collector
    # deletes the children, and each child's deletionPolicy (ClearDesired, the default)
    # runs before it goes.
    stack.wait_garbage_collector()
    stack.cluster.kubectl("delete", "tshadowset", "doomed", "-n", NAMESPACE)
    assert get_set(stack, "doomed") is None
    wait_until(lambda: not children(stack, "doomed"), timeout=DEADLINE, interval=POLL,
               what="the garbage collector and the finalizers to remove the children of doomed")
    for thing in things:
        left = desired(iot_data, thing)
        assert not set(left) & set(template), f"{thing}: desired still holds {left}"
    for thing in talking:
        assert reported(iot_data, thing) == template, f"{thing}: reported is kept"
    assert reported(iot_data, things[3]) == {}, "the silent device never reported"
