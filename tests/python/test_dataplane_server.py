"""boto3's `iot-data` client against `shadowsync dataplane serve`.

Run from the repository root after `cargo build`:

    pip install -r tests/python/requirements.txt
    python -m pytest tests/python -q
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import urllib.request

import pytest
from botocore.exceptions import ClientError

from conftest import DEADLINE_S, DataPlaneServer, shadowsync_bin


def doc(response) -> dict:
    """The JSON document in a shadow operation's streaming payload."""
    return json.loads(response["payload"].read())


def update(iot, thing, state, shadow=None, **extra) -> dict:
    body = {"state": state, **extra}
    kwargs = {"thingName": thing, "payload": json.dumps(body).encode()}
    if shadow is not None:
        kwargs["shadowName"] = shadow
    return doc(iot.update_thing_shadow(**kwargs))


def get(iot, thing, shadow=None) -> dict:
    kwargs = {"thingName": thing}
    if shadow is not None:
        kwargs["shadowName"] = shadow
    return doc(iot.get_thing_shadow(**kwargs))


def error_of(excinfo) -> tuple[str, int, str]:
    err = excinfo.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Message"]


# --------------------------------------------------------------------------------------
# Shadows


def test_classic_shadow_update_get_delete(iot):
    out = update(iot, "lamp-1", {"desired": {"power": "on"}}, clientToken="tok-1")
    assert out["state"] == {"desired": {"power": "on"}}
    assert out["clientToken"] == "tok-1"
    assert isinstance(out["metadata"]["desired"]["power"]["timestamp"], int)
    version = out["version"]

    got = get(iot, "lamp-1")
    assert got["state"]["desired"] == {"power": "on"}
    assert got["version"] == version

    deleted = doc(iot.delete_thing_shadow(thingName="lamp-1"))
    assert deleted["version"] == version
    assert isinstance(deleted["timestamp"], int)

    with pytest.raises(ClientError) as excinfo:
        get(iot, "lamp-1")
    code, status, _ = error_of(excinfo)
    assert (code, status) == ("ResourceNotFoundException", 404)


def test_named_shadow_is_separate_from_the_classic_one(iot):
    update(iot, "lamp-2", {"desired": {"mode": "eco"}}, shadow="config")
    assert get(iot, "lamp-2", "config")["state"]["desired"] == {"mode": "eco"}
    with pytest.raises(ClientError) as excinfo:
        get(iot, "lamp-2")
    assert error_of(excinfo)[0] == "ResourceNotFoundException"


def test_merge_and_null_removal(iot):
    update(iot, "lamp-3", {"desired": {"a": 1, "b": {"c": 2, "d": 3}, "list": [1, 2, 3]}})
    update(iot, "lamp-3", {"desired": {"b": {"c": None}, "e": 5, "list": [9]}})
    assert get(iot, "lamp-3")["state"]["desired"] == {"a": 1, "b": {"d": 3}, "e": 5, "list": [9]}

    update(iot, "lamp-3", {"reported": {"a": 1}})
    update(iot, "lamp-3", {"desired": None})
    got = get(iot, "lamp-3")
    assert "desired" not in got["state"]
    assert got["state"]["reported"] == {"a": 1}


def test_delta_and_metadata(iot):
    update(iot, "lamp-4", {"desired": {"x": 1, "y": 2, "z": {"k": "v"}}, "reported": {"x": 1, "y": 3}})
    got = get(iot, "lamp-4")
    assert got["state"]["delta"] == {"y": 2, "z": {"k": "v"}}
    meta = got["metadata"]
    assert isinstance(meta["desired"]["x"]["timestamp"], int)
    assert isinstance(meta["desired"]["z"]["k"]["timestamp"], int)
    assert isinstance(meta["reported"]["y"]["timestamp"], int)

    update(iot, "lamp-4", {"reported": {"y": 2, "z": {"k": "v"}}})
    assert "delta" not in get(iot, "lamp-4")["state"]


def test_version_conflict_is_a_conflict_exception(iot):
    version = update(iot, "lamp-5", {"desired": {"a": 1}})["version"]
    update(iot, "lamp-5", {"reported": {"a": 1}})  # a device report bumps the version too
    with pytest.raises(ClientError) as excinfo:
        update(iot, "lamp-5", {"desired": {"a": 2}}, version=version)
    code, status, message = error_of(excinfo)
    assert (code, status) == ("ConflictException", 409)
    assert "version" in message.lower()
    assert get(iot, "lamp-5")["state"]["desired"] == {"a": 1}

    fresh = update(iot, "lamp-5", {"desired": {"a": 2}}, version=version + 1)
    assert fresh["version"] == version + 2


def test_delete_and_recreate_continues_versions(iot):
    update(iot, "lamp-6", {"desired": {"a": 1}})
    version = update(iot, "lamp-6", {"desired": {"a": 2}})["version"]
    iot.delete_thing_shadow(thingName="lamp-6")
    again = update(iot, "lamp-6", {"desired": {"b": 1}})
    assert again["version"] == version + 1
    assert get(iot, "lamp-6")["state"]["desired"] == {"b": 1}


def test_list_named_shadows_with_paging(iot):
    names = ["alpha", "beta", "gamma", "delta", "epsilon"]
    for name in names:
        update(iot, "lamp-7", {"desired": {"n": name}}, shadow=name)
    update(iot, "lamp-7", {"desired": {"classic": True}})

    seen, token, pages = [], None, 0
    while True:
        kwargs = {"thingName": "lamp-7", "pageSize": 2}
        if token:
            kwargs["nextToken"] = token
        page = iot.list_named_shadows_for_thing(**kwargs)
        assert len(page["results"]) <= 2
        assert isinstance(page["timestamp"], int)
        seen += page["results"]
        pages += 1
        token = page.get("nextToken")
        if not token:
            break
        assert pages < 10, "paging does not end"
    assert sorted(seen) == sorted(names)
    assert pages == 3


# --------------------------------------------------------------------------------------
# Retained messages


def test_publish_retained_and_get_it_back(iot):
    iot.publish(
        topic="home/kitchen/config",
        qos=1,
        retain=True,
        payload=b'{"interval":30}',
        userProperties=[{"site": "berlin"}, {"site": "hamburg"}, {"floor": "2"}],
        payloadFormatIndicator="UTF8_DATA",
        contentType="application/json",
    )
    got = iot.get_retained_message(topic="home/kitchen/config")
    assert got["topic"] == "home/kitchen/config"
    assert got["payload"] == b'{"interval":30}'
    assert got["qos"] == 1
    assert got["lastModifiedTime"] > 1_600_000_000_000  # epoch milliseconds
    assert json.loads(got["userProperties"]) == [{"site": "berlin"}, {"site": "hamburg"}, {"floor": "2"}]


def test_retained_binary_payload_without_properties(iot):
    payload = bytes(range(256))
    iot.publish(topic="bin/blob", retain=True, payload=payload, payloadFormatIndicator="UNSPECIFIED_BYTES")
    got = iot.get_retained_message(topic="bin/blob")
    assert got["payload"] == payload
    assert got["qos"] == 0
    assert "userProperties" not in got


def test_newest_retained_message_wins(iot):
    iot.publish(topic="t/newest", retain=True, payload=b"one", qos=0)
    iot.publish(topic="t/newest", retain=True, payload=b"two", qos=1)
    got = iot.get_retained_message(topic="t/newest")
    assert (got["payload"], got["qos"]) == (b"two", 1)


def test_list_retained_messages_with_paging(iot):
    topics = {f"fleet/dev-{i}/cfg": b"x" * (i + 1) for i in range(5)}
    for topic, payload in topics.items():
        iot.publish(topic=topic, retain=True, payload=payload)
    iot.publish(topic="fleet/not-retained", payload=b"gone")

    seen, token, pages = {}, None, 0
    while True:
        kwargs = {"maxResults": 2}
        if token:
            kwargs["nextToken"] = token
        page = iot.list_retained_messages(**kwargs)
        assert len(page["retainedTopics"]) <= 2
        for entry in page["retainedTopics"]:
            assert "payload" not in entry
            assert isinstance(entry["lastModifiedTime"], int)
            seen[entry["topic"]] = entry["payloadSize"]
        pages += 1
        token = page.get("nextToken")
        if not token:
            break
        assert pages < 10, "paging does not end"
    assert seen == {topic: len(payload) for topic, payload in topics.items()}
    assert pages == 3

    paginated = iot.get_paginator("list_retained_messages").paginate(PaginationConfig={"PageSize": 2})
    assert sorted(e["topic"] for p in paginated for e in p["retainedTopics"]) == sorted(topics)


def test_empty_payload_deletes_the_retained_message(iot):
    iot.publish(topic="t/del", retain=True, payload=b"1")
    assert iot.get_retained_message(topic="t/del")["payload"] == b"1"
    iot.publish(topic="t/del", retain=True, payload=b"")
    with pytest.raises(ClientError) as excinfo:
        iot.get_retained_message(topic="t/del")
    assert error_of(excinfo)[:2] == ("ResourceNotFoundException", 404)


@pytest.mark.parametrize("topic", ["a/+/b", "a/#", "#", "$aws/things/x/shadow/update", "$SYS/x"])
def test_wildcard_and_reserved_topics_are_refused(iot, topic):
    with pytest.raises(ClientError) as excinfo:
        iot.publish(topic=topic, retain=True, payload=b"x")
    assert error_of(excinfo)[:2] == ("InvalidRequestException", 400)
    assert iot.list_retained_messages()["retainedTopics"] == []


# --------------------------------------------------------------------------------------
# Errors


def test_missing_things_are_resource_not_found(iot):
    for call in (
        lambda: iot.get_thing_shadow(thingName="ghost"),
        lambda: iot.get_thing_shadow(thingName="ghost", shadowName="cfg"),
        lambda: iot.delete_thing_shadow(thingName="ghost"),
        lambda: iot.get_retained_message(topic="ghost/topic"),
    ):
        with pytest.raises(ClientError) as excinfo:
            call()
        assert error_of(excinfo)[:2] == ("ResourceNotFoundException", 404)
        assert isinstance(excinfo.value, iot.exceptions.ResourceNotFoundException)


def test_oversized_documents_are_413(iot):
    with pytest.raises(ClientError) as excinfo:
        update(iot, "lamp-8", {"desired": {"blob": "x" * 9000}})
    assert error_of(excinfo)[:2] == ("RequestEntityTooLargeException", 413)
    # The limit is on the merged document: two halves that fit alone do not fit together.
    update(iot, "lamp-8", {"desired": {"a": "x" * 5000}})
    with pytest.raises(ClientError) as excinfo:
        update(iot, "lamp-8", {"reported": {"b": "y" * 5000}})
    assert error_of(excinfo)[:2] == ("RequestEntityTooLargeException", 413)


def test_invalid_requests_are_400(iot, raw_iot):
    with pytest.raises(ClientError) as excinfo:
        iot.update_thing_shadow(thingName="lamp-9", payload=b"{not json")
    assert error_of(excinfo)[:2] == ("InvalidRequestException", 400)

    for call, named in (
        (lambda: raw_iot.list_named_shadows_for_thing(thingName="lamp-9", pageSize=0), "pageSize"),
        (lambda: raw_iot.list_named_shadows_for_thing(thingName="lamp-9", pageSize=101), "pageSize"),
        (lambda: raw_iot.list_retained_messages(maxResults=500), "maxResults"),
        (lambda: raw_iot.publish(topic="t/q", qos=2, payload=b"x"), "qos"),
    ):
        with pytest.raises(ClientError) as excinfo:
            call()
        code, status, message = error_of(excinfo)
        assert (code, status) == ("InvalidRequestException", 400)
        assert named in message


# --------------------------------------------------------------------------------------
# Persistence


def test_restart_after_sigkill_keeps_everything(tmp_path):
    srv = DataPlaneServer(tmp_path / "persist.db", tmp_path).start()
    try:
        iot = srv.client()
        v_classic = update(iot, "dev-1", {"desired": {"a": 1}, "reported": {"a": 0}})["version"]
        v_named = update(iot, "dev-1", {"desired": {"mode": "eco"}}, shadow="cfg")["version"]
        iot.publish(topic="site/a/cfg", retain=True, qos=1, payload=b"first",
                    userProperties=[{"k": "v1"}, {"k": "v2"}])
        update(iot, "dev-2", {"desired": {"gone": True}})
        iot.delete_thing_shadow(thingName="dev-2")
        assert srv.kill() == -9

        srv.start()
        iot = srv.client()
        got = get(iot, "dev-1")
        assert got["state"]["desired"] == {"a": 1}
        assert got["state"]["delta"] == {"a": 1}
        assert got["version"] == v_classic
        assert get(iot, "dev-1", "cfg")["version"] == v_named
        msg = iot.get_retained_message(topic="site/a/cfg")
        assert (msg["payload"], msg["qos"]) == (b"first", 1)
        assert json.loads(msg["userProperties"]) == [{"k": "v1"}, {"k": "v2"}]
        with pytest.raises(ClientError):
            get(iot, "dev-2")

        # Writes after the restart continue the versions, and survive a second kill.
        assert update(iot, "dev-1", {"desired": {"a": 2}})["version"] == v_classic + 1
        assert update(iot, "dev-2", {"desired": {"back": True}})["version"] > 0
        iot.publish(topic="site/a/cfg", retain=True, payload=b"")
        iot.publish(topic="site/b/cfg", retain=True, payload=b"second")
        assert srv.kill() == -9

        srv.start()
        iot = srv.client()
        assert get(iot, "dev-1")["state"]["desired"] == {"a": 2}
        assert get(iot, "dev-1")["version"] == v_classic + 1
        assert get(iot, "dev-2")["state"]["desired"] == {"back": True}
        topics = [t["topic"] for t in iot.list_retained_messages()["retainedTopics"]]
        assert topics == ["site/b/cfg"]
        assert sorted(iot.list_named_shadows_for_thing(thingName="dev-1")["results"]) == ["cfg"]
    finally:
        if srv.proc is not None:
            assert srv.stop() == 0, srv.log()


def test_without_db_nothing_survives_a_restart(tmp_path):
    srv = DataPlaneServer(None, tmp_path).start()
    try:
        update(srv.client(), "mem-1", {"desired": {"a": 1}})
        assert srv.stop() == 0
        srv.start()
        with pytest.raises(ClientError) as excinfo:
            get(srv.client(), "mem-1")
        assert error_of(excinfo)[0] == "ResourceNotFoundException"
    finally:
        if srv.proc is not None:
            srv.stop()


# --------------------------------------------------------------------------------------
# Faults and stats through the admin API


def test_throttling_fault_and_stats(server, iot):
    status, faults = server.admin("PUT", "/_shadowsync/faults", {"throttleRate": 1.0, "operations": ["UpdateThingShadow"]})
    assert status == 200 and faults["throttleRate"] == 1.0
    for _ in range(3):
        with pytest.raises(ClientError) as excinfo:
            update(iot, "lamp-10", {"desired": {"a": 1}})
        assert error_of(excinfo)[:2] == ("ThrottlingException", 429)
    # Other operations pass, and the throttled writes never reached the store.
    with pytest.raises(ClientError) as excinfo:
        get(iot, "lamp-10")
    assert error_of(excinfo)[0] == "ResourceNotFoundException"

    status, stats = server.admin("GET", "/_shadowsync/stats")
    assert status == 200
    assert stats["calls"]["UpdateThingShadow"] == {"ThrottlingException": 3}
    assert stats["calls"]["GetThingShadow"] == {"ResourceNotFoundException": 1}
    assert stats["injected"]["throttled"] == 3
    assert stats["totals"] == {"calls": 4, "ok": 0, "errors": 4}

    status, cleared = server.admin("POST", "/_shadowsync/stats/reset")
    assert status == 200 and cleared["totals"]["calls"] == 4
    assert server.admin("GET", "/_shadowsync/stats")[1]["totals"]["calls"] == 0

    assert server.admin("PUT", "/_shadowsync/faults", {"throttleRate": 7})[0] == 400
    assert server.admin("PUT", "/_shadowsync/faults", {})[0] == 200
    assert update(iot, "lamp-10", {"desired": {"a": 1}})["state"]["desired"] == {"a": 1}


def test_fault_flags_and_outage(tmp_path):
    srv = DataPlaneServer(None, tmp_path, ("--fault-outage", "--fault-operations", "Publish,GetRetainedMessage")).start()
    try:
        iot = srv.client()
        with pytest.raises(ClientError) as excinfo:
            iot.publish(topic="t/x", retain=True, payload=b"x")
        assert error_of(excinfo)[:2] == ("ServiceUnavailableException", 503)
        assert update(iot, "lamp-11", {"desired": {"a": 1}})["version"] > 0
        status, health = srv.admin("GET", "/_shadowsync/healthz")
        assert (status, health["status"]) == (200, "ok")
        faults = srv.admin("GET", "/_shadowsync/faults")[1]
        assert faults["outage"] is True
        assert faults["operations"] == ["Publish", "GetRetainedMessage"]
    finally:
        if srv.proc is not None:
            assert srv.stop() == 0, srv.log()


def test_non_loopback_listen_is_refused():
    proc = subprocess.run(
        [str(shadowsync_bin()), "dataplane", "serve", "--listen", "0.0.0.0:0"],
        capture_output=True,
        timeout=DEADLINE_S,
    )
    assert proc.returncode != 0
    assert proc.stdout == b""
    assert b"--allow-remote" in proc.stderr


# --------------------------------------------------------------------------------------
# The AWS CLI, when installed


def test_aws_cli_round_trip(server, tmp_path):
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
    common = ["--endpoint-url", server.endpoint_url]
    payload = tmp_path / "in.json"
    payload.write_text(json.dumps({"state": {"desired": {"cli": True}}}))
    subprocess.run(
        [aws, "iot-data", "update-thing-shadow", "--thing-name", "cli-lamp",
         "--payload", f"fileb://{payload}", str(tmp_path / "out1.json"), *common],
        check=True, env=env, capture_output=True, timeout=DEADLINE_S,
    )
    subprocess.run(
        [aws, "iot-data", "get-thing-shadow", "--thing-name", "cli-lamp", str(tmp_path / "out2.json"), *common],
        check=True, env=env, capture_output=True, timeout=DEADLINE_S,
    )
    assert json.loads((tmp_path / "out2.json").read_text())["state"]["desired"] == {"cli": True}
    missing = subprocess.run(
        [aws, "iot-data", "get-retained-message", "--topic", "no/such", *common],
        env=env, capture_output=True, timeout=DEADLINE_S,
    )
    assert missing.returncode != 0
    assert b"ResourceNotFoundException" in missing.stderr


def test_user_properties_header_is_base64_json(server):
    """Clients other than the SDKs send the header by hand: base64 of the JSON array."""
    header = base64.b64encode(json.dumps([{"a": "1"}, {"a": "2"}]).encode()).decode()
    req = urllib.request.Request(
        server.endpoint_url + "/topics/hand%2Fmade?retain=true&qos=1",
        data=b"payload",
        method="POST",
        headers={"x-amz-mqtt5-user-properties": header},
    )
    with urllib.request.urlopen(req, timeout=DEADLINE_S) as resp:
        assert resp.status == 200
    got = server.client().get_retained_message(topic="hand/made")
    assert json.loads(got["userProperties"]) == [{"a": "1"}, {"a": "2"}]
