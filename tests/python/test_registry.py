"""boto3's `iot` (control-plane) client against `shadowsync dataplane serve`: the registry
operations fleet rollouts need, and the simulated devices.

Run from the repository root after `cargo build`:

    pip install -r tests/python/requirements.txt
    python -m pytest tests/python -q
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import DEADLINE_S, DataPlaneServer


def control_plane(server: DataPlaneServer, **config):
    """A boto3 `iot` client for the server: same URL as `iot-data`, dummy credentials."""
    options = {"retries": {"total_max_attempts": 1, "mode": "standard"}}
    options.update(config)
    return boto3.client(
        "iot",
        endpoint_url=server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="AKIDTEST",
        aws_secret_access_key="secret",
        config=Config(**options),
    )


@pytest.fixture
def registry(server):
    return control_plane(server)


def error_of(excinfo) -> tuple[str, int, str]:
    err = excinfo.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Message"]


def all_things(registry, group: str, recursive: bool = False, page: int = 2) -> tuple[list[str], int]:
    names, token, pages = [], None, 0
    while True:
        kwargs = {"thingGroupName": group, "recursive": recursive, "maxResults": page}
        if token:
            kwargs["nextToken"] = token
        out = registry.list_things_in_thing_group(**kwargs)
        pages += 1
        assert len(out["things"]) <= page
        names += out["things"]
        token = out.get("nextToken")
        if not token:
            return names, pages


# --------------------------------------------------------------------------------------
# Things and groups


def test_create_thing_is_idempotent_and_conflicts_on_other_attributes(registry):
    first = registry.create_thing(thingName="lamp-1", attributePayload={"attributes": {"color": "red"}})
    assert first["thingName"] == "lamp-1"
    assert first["thingArn"].endswith(":thing/lamp-1")
    again = registry.create_thing(thingName="lamp-1", attributePayload={"attributes": {"color": "red"}})
    assert again["thingId"] == first["thingId"]
    with pytest.raises(ClientError) as excinfo:
        registry.create_thing(thingName="lamp-1", attributePayload={"attributes": {"color": "blue"}})
    code, status, message = error_of(excinfo)
    assert (code, status) == ("ResourceAlreadyExistsException", 409)
    assert "lamp-1" in message


def test_delete_thing_succeeds_for_a_missing_thing(registry):
    registry.delete_thing(thingName="never-created")
    registry.create_thing(thingName="short-lived")
    with pytest.raises(ClientError) as excinfo:
        registry.delete_thing(thingName="short-lived", expectedVersion=5)
    assert error_of(excinfo)[:2] == ("VersionConflictException", 409)
    registry.delete_thing(thingName="short-lived", expectedVersion=1)


def test_thing_types_and_billing_groups_do_not_exist_here(registry):
    with pytest.raises(ClientError) as excinfo:
        registry.create_thing(thingName="typed", thingTypeName="LightBulb")
    assert error_of(excinfo)[:2] == ("ResourceNotFoundException", 404)


def test_invalid_names_are_refused(server):
    raw = control_plane(server, parameter_validation=False)
    for bad in ["a b", "x" * 129]:
        with pytest.raises(ClientError) as excinfo:
            raw.create_thing(thingName=bad)
        assert error_of(excinfo)[:2] == ("InvalidRequestException", 400)


def test_groups_membership_and_recursive_listing(registry):
    registry.create_thing_group(thingGroupName="fleet")
    registry.create_thing_group(thingGroupName="canary", parentGroupName="fleet")
    registry.create_thing_group(thingGroupName="wave-1", parentGroupName="fleet")
    again = registry.create_thing_group(thingGroupName="canary", parentGroupName="fleet")
    assert again["thingGroupArn"].endswith(":thinggroup/canary")
    for n in range(5):
        registry.create_thing(thingName=f"dev-{n}")
        registry.add_thing_to_thing_group(thingGroupName="canary" if n < 2 else "wave-1", thingName=f"dev-{n}")
    # Adding again is fine; by ARN too.
    thing_arn = registry.create_thing(thingName="dev-0")["thingArn"]
    registry.add_thing_to_thing_group(thingGroupName="canary", thingArn=thing_arn)

    assert registry.list_things_in_thing_group(thingGroupName="fleet")["things"] == []
    names, pages = all_things(registry, "fleet", recursive=True, page=2)
    assert names == [f"dev-{n}" for n in range(5)]
    assert pages == 3
    assert all_things(registry, "canary")[0] == ["dev-0", "dev-1"]

    # One group per hierarchy.
    with pytest.raises(ClientError) as excinfo:
        registry.add_thing_to_thing_group(thingGroupName="wave-1", thingName="dev-0")
    assert error_of(excinfo)[:2] == ("InvalidRequestException", 400)

    registry.remove_thing_from_thing_group(thingGroupName="canary", thingName="dev-1")
    registry.remove_thing_from_thing_group(thingGroupName="canary", thingName="dev-1")
    assert all_things(registry, "canary")[0] == ["dev-0"]

    with pytest.raises(ClientError) as excinfo:
        registry.delete_thing_group(thingGroupName="fleet")
    assert error_of(excinfo)[:2] == ("InvalidRequestException", 400)
    registry.delete_thing_group(thingGroupName="canary")
    registry.delete_thing_group(thingGroupName="no-such-group")
    with pytest.raises(ClientError) as excinfo:
        registry.list_things_in_thing_group(thingGroupName="canary")
    assert error_of(excinfo)[:2] == ("ResourceNotFoundException", 404)


def test_missing_things_and_groups_are_not_found(registry):
    registry.create_thing_group(thingGroupName="g-nf")
    registry.create_thing(thingName="t-nf")
    for kwargs in ({"thingGroupName": "nope", "thingName": "t-nf"}, {"thingGroupName": "g-nf", "thingName": "nope"}):
        with pytest.raises(ClientError) as excinfo:
            registry.add_thing_to_thing_group(**kwargs)
        assert error_of(excinfo)[:2] == ("ResourceNotFoundException", 404)


def test_dynamic_groups_are_refused_clearly(registry):
    with pytest.raises(ClientError) as excinfo:
        registry.create_dynamic_thing_group(thingGroupName="dyn", queryString="attributes.color:red")
    code, status, message = error_of(excinfo)
    assert (code, status) == ("InvalidRequestException", 400)
    assert "Dynamic thing groups are not supported" in message
    assert "SearchIndex" in message


# --------------------------------------------------------------------------------------
# SearchIndex


def test_search_forms_and_paging(registry):
    registry.create_thing_group(thingGroupName="kitchen")
    for name, color in [("s-lamp-1", "red"), ("s-lamp-2", "blue"), ("s-plug-1", "red")]:
        registry.create_thing(thingName=name, attributePayload={"attributes": {"color": color}})
    registry.add_thing_to_thing_group(thingGroupName="kitchen", thingName="s-lamp-1")
    registry.add_thing_to_thing_group(thingGroupName="kitchen", thingName="s-plug-1")

    def names(query, **kwargs):
        out = registry.search_index(indexName="AWS_Things", queryString=query, **kwargs)
        assert out["thingGroups"] == []
        return [t["thingName"] for t in out["things"]]

    assert names("thingName:s-lamp-1") == ["s-lamp-1"]
    assert names("thingName:s-lamp-*") == ["s-lamp-1", "s-lamp-2"]
    assert names("thingGroupNames:kitchen") == ["s-lamp-1", "s-plug-1"]
    assert names("thingName:s-* AND attributes.color:red") == ["s-lamp-1", "s-plug-1"]
    assert names("thingName:s-lamp-2 OR thingGroupNames:kitchen") == ["s-lamp-1", "s-lamp-2", "s-plug-1"]
    assert names("thingName:s-* NOT thingGroupNames:kitchen") == ["s-lamp-2"]
    doc = registry.search_index(queryString="thingName:s-lamp-1")["things"][0]
    assert doc["attributes"] == {"color": "red"}
    assert doc["thingGroupNames"] == ["kitchen"]
    assert doc["thingId"]

    first = registry.search_index(queryString="thingName:s-*", maxResults=2)
    assert len(first["things"]) == 2 and first["nextToken"]
    rest = registry.search_index(queryString="thingName:s-*", maxResults=2, nextToken=first["nextToken"])
    assert [t["thingName"] for t in rest["things"]] == ["s-plug-1"]
    assert "nextToken" not in rest

    for query in ["lamp", "shadow.reported.on:true", "attributes.n:[1 TO 2]"]:
        with pytest.raises(ClientError) as excinfo:
            registry.search_index(queryString=query)
        assert error_of(excinfo)[:2] == ("InvalidQueryException", 400), query
    with pytest.raises(ClientError) as excinfo:
        registry.search_index(indexName="AWS_Nope", queryString="*")
    assert error_of(excinfo)[:2] == ("ResourceNotFoundException", 404)


def test_boto3_paginator_walks_every_page(registry):
    registry.create_thing_group(thingGroupName="paged")
    for n in range(7):
        registry.create_thing(thingName=f"pg-{n}")
        registry.add_thing_to_thing_group(thingGroupName="paged", thingName=f"pg-{n}")
    pages = registry.get_paginator("list_things_in_thing_group").paginate(
        thingGroupName="paged", PaginationConfig={"PageSize": 3})
    assert [t for p in pages for t in p["things"]] == [f"pg-{n}" for n in range(7)]


# --------------------------------------------------------------------------------------
# Stats, faults, persistence


def test_registry_calls_are_counted_and_faulted(server, registry):
    server.admin("POST", "/_shadowsync/stats/reset")
    registry.create_thing(thingName="counted")
    with pytest.raises(ClientError):
        registry.list_things_in_thing_group(thingGroupName="missing-group")
    stats = server.admin("GET", "/_shadowsync/stats")[1]
    assert stats["calls"]["CreateThing"] == {"ok": 1}
    assert stats["calls"]["ListThingsInThingGroup"] == {"ResourceNotFoundException": 1}

    status, _ = server.admin("PUT", "/_shadowsync/faults", {"throttleRate": 1.0, "operations": ["SearchIndex"]})
    assert status == 200
    with pytest.raises(ClientError) as excinfo:
        registry.search_index(queryString="*")
    assert error_of(excinfo)[0] == "ThrottlingException"
    registry.create_thing(thingName="not-faulted")
    server.admin("PUT", "/_shadowsync/faults", {})


def test_the_registry_persists_in_the_db_file(tmp_path):
    srv = DataPlaneServer(tmp_path / "reg.db", tmp_path).start()
    try:
        reg = control_plane(srv)
        reg.create_thing_group(thingGroupName="kept")
        created = reg.create_thing(thingName="kept-1", attributePayload={"attributes": {"a": "1"}})
        reg.add_thing_to_thing_group(thingGroupName="kept", thingName="kept-1")
        # SIGKILL: only what was committed before each answer survives.
        srv.kill()
        srv.start()
        reg = control_plane(srv)
        assert reg.list_things_in_thing_group(thingGroupName="kept")["things"] == ["kept-1"]
        again = reg.create_thing(thingName="kept-1", attributePayload={"attributes": {"a": "1"}})
        assert again["thingId"] == created["thingId"]
    finally:
        if srv.proc is not None:
            assert srv.stop() == 0, srv.log()


# --------------------------------------------------------------------------------------
# Simulated devices


def draw(thing: str) -> float:
    """The number a thing's simulated behaviour is chosen by (see src/dataplane/simulate.rs)."""
    return int.from_bytes(hashlib.sha256(thing.encode()).digest()[:8], "big") / 2**64


def wait_for(predicate, what: str, timeout: float = DEADLINE_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def shadow(iot, thing):
    return json.loads(iot.get_thing_shadow(thingName=thing)["payload"].read())


def test_simulated_devices_report_after_the_delay(tmp_path):
    silent, wrong = 0.25, 0.25
    things = [f"sim-{n}" for n in range(12)]
    kind = {t: "silent" if draw(t) < silent else "wrong" if draw(t) < silent + wrong else "faithful"
            for t in things}
    assert set(kind.values()) == {"silent", "wrong", "faithful"}, kind
    srv = DataPlaneServer(None, tmp_path, (
        "--simulate-devices", "sim-*",
        "--simulate-report-delay", "300ms",
        "--simulate-silent-fraction", str(silent),
        "--simulate-wrong-fraction", str(wrong),
    )).start()
    try:
        iot = srv.client()
        started = time.monotonic()
        for t in things + ["other-1"]:
            iot.update_thing_shadow(thingName=t, payload=json.dumps(
                {"state": {"desired": {"power": "on", "level": 3}}}).encode())
        reporting = [t for t in things if kind[t] != "silent"]
        wait_for(lambda: all("reported" in shadow(iot, t)["state"] for t in reporting), "the reports")
        assert time.monotonic() - started >= 0.3
        for t in things:
            state = shadow(iot, t)["state"]
            if kind[t] == "faithful":
                assert state["reported"] == {"power": "on", "level": 3}, t
                assert "delta" not in state, t
            elif kind[t] == "wrong":
                # The first leaf in key order is `level`: one more than desired.
                assert state["reported"] == {"power": "on", "level": 4}, t
                assert state["delta"] == {"level": 3}, t
            else:
                assert "reported" not in state, t
        assert "reported" not in shadow(iot, "other-1")["state"]

        status, sim = srv.admin("GET", "/_shadowsync/simulation")
        assert status == 200
        assert sim["settings"]["devices"] == "sim-*"
        assert sim["settings"]["reportDelayMs"] == 300
        assert sim["stats"]["reported"] == len(reporting)
        assert sim["stats"]["wrong"] == sum(1 for t in things if kind[t] == "wrong")
        assert sim["stats"]["ignored"] == sum(1 for t in things if kind[t] == "silent")
        # Device reports are not client calls.
        stats = srv.admin("GET", "/_shadowsync/stats")[1]
        assert stats["calls"]["UpdateThingShadow"] == {"ok": len(things) + 1}

        # At runtime: other devices, no delay.
        status, sim = srv.admin("PATCH", "/_shadowsync/simulation", {"devices": "other-*", "reportDelayMs": 0,
                                                                      "silentFraction": 0, "wrongFraction": 0})
        assert status == 200, sim
        iot.update_thing_shadow(thingName="other-1", payload=b'{"state":{"desired":{"x":1}}}')
        wait_for(lambda: shadow(iot, "other-1")["state"].get("reported") == {"power": "on", "level": 3, "x": 1},
                 "other-1 to report")
        status, err = srv.admin("PUT", "/_shadowsync/simulation", {"devices": "a/b"})
        assert status == 400 and "devices" in err["message"], err
    finally:
        if srv.proc is not None:
            assert srv.stop() == 0, srv.log()


def test_bad_simulation_flags_are_refused(tmp_path):
    from conftest import shadowsync_bin
    for flags in (["--simulate-silent-fraction", "0.7", "--simulate-wrong-fraction", "0.7",
                   "--simulate-devices", "x"],
                  ["--simulate-report-delay", "5"]):
        proc = subprocess.run(
            [str(shadowsync_bin()), "dataplane", "serve", "--listen", "127.0.0.1:0", *flags],
            capture_output=True, timeout=DEADLINE_S,
        )
        assert proc.returncode != 0, flags
        assert proc.stdout == b""


# --------------------------------------------------------------------------------------
# The AWS CLI, when installed


def test_aws_cli_registry_round_trip(server, tmp_path):
    aws = shutil.which("aws")
    if aws is None:
        pytest.skip("the AWS CLI is not installed: `pip install awscli` to run this test")
    env = dict(os.environ)
    env.update({
        "AWS_ACCESS_KEY_ID": "AKIDTEST",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
    })
    env.pop("AWS_PROFILE", None)
    common = ["--endpoint-url", server.endpoint_url, "--output", "json"]

    def cli(*args, check=True):
        return subprocess.run([aws, "iot", *args, *common], check=check, env=env,
                              capture_output=True, timeout=DEADLINE_S)

    cli("create-thing-group", "--thing-group-name", "cli-group")
    cli("create-thing", "--thing-name", "cli-thing", "--attribute-payload", '{"attributes":{"site":"lab"}}')
    cli("add-thing-to-thing-group", "--thing-group-name", "cli-group", "--thing-name", "cli-thing")
    listed = json.loads(cli("list-things-in-thing-group", "--thing-group-name", "cli-group").stdout)
    assert listed["things"] == ["cli-thing"]
    found = json.loads(cli("search-index", "--query-string", "attributes.site:lab").stdout)
    assert [t["thingName"] for t in found["things"]] == ["cli-thing"]
    refused = cli("search-index", "--query-string", "site", check=False)
    assert refused.returncode != 0
    assert b"InvalidQueryException" in refused.stderr


def test_operations_not_served_are_unknown_not_disallowed(registry):
    registry.create_thing(thingName="described")
    with pytest.raises(ClientError) as excinfo:
        registry.describe_thing(thingName="described")
    code, status, message = error_of(excinfo)
    assert (code, status) == ("UnknownOperationException", 404)
    assert "SearchIndex" in message
