"""`shadowsync import` against `shadowsync dataplane serve` filled with boto3, then
`shadowsync apply` of what it printed, observed through boto3.

The manifests are read with PyYAML, a YAML 1.1 reader like the one in kubectl: strings
such as `on` or `010` must come back as strings.
"""

import base64
import json
import os
import subprocess

import pytest
import yaml

from conftest import shadowsync_bin

GATEWAY_SHADOWS = 27  # more than one page of ListNamedShadowsForThing (25)
GREENGRASS = "AWSManagedGreengrassV2Deployment"


def run(server, cwd, *args):
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_REGION="us-east-1", NO_COLOR="1")
    for var in ("SHADOWSYNC_DATA_PLANE", "SHADOWSYNC_DB", "SHADOWSYNC_STATE", "SHADOWSYNC_ENDPOINT_URL"):
        env.pop(var, None)
    cmd = [str(shadowsync_bin()), *args, "--endpoint-url", server.endpoint_url]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def output(result):
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def documents(text):
    return [d for d in yaml.safe_load_all(text) if d is not None]


def update(iot, thing, doc, shadow=None):
    kwargs = {"thingName": thing, "payload": json.dumps(doc).encode()}
    if shadow:
        kwargs["shadowName"] = shadow
    iot.update_thing_shadow(**kwargs)


def get(iot, thing, shadow=None):
    kwargs = {"thingName": thing}
    if shadow:
        kwargs["shadowName"] = shadow
    return json.loads(iot.get_thing_shadow(**kwargs)["payload"].read())


LAMP_DESIRED = {
    "power": "on",
    "label": "010",
    "schedule": {"on": "06:30", "off": "23:00", "days": ["mon", "yes", "no"]},
    "color": {"r": 255, "g": 180},
    "ratio": 0.25,
}


def gateway_desired(i):
    return {"i": i, "cfg": {"mode": "on" if i % 2 == 0 else "off", "limits": [i, i + 1]}}


def fill_shadows(iot):
    update(iot, "py-lamp", {"state": {"desired": LAMP_DESIRED, "reported": {"power": "off"}}})
    update(iot, "py-lamp", {"state": {"reported": {"power": "on"}}})
    for i in reversed(range(GATEWAY_SHADOWS)):
        update(iot, "py-gw", {"state": {"desired": gateway_desired(i)}}, shadow=f"s-{i:02d}")
    update(iot, "py-gw", {"state": {"reported": {"only": "reported"}}}, shadow="status")
    update(iot, "py-gw", {"state": {"desired": {"deployment": "x"}}}, shadow=GREENGRASS)


def shadow_versions(iot):
    versions = {"py-lamp": get(iot, "py-lamp")["version"]}
    for name in [f"s-{i:02d}" for i in range(GATEWAY_SHADOWS)] + ["status", GREENGRASS]:
        versions[f"py-gw/{name}"] = get(iot, "py-gw", name)["version"]
    return versions


def test_import_then_apply_writes_no_shadow(server, iot, tmp_path):
    fill_shadows(iot)
    result = run(server, tmp_path, "import", "--thing", "py-lamp", "py-gw", "--namespace", "fleet")
    assert result.returncode == 0, output(result)
    assert result.stdout.startswith(
        f"# Imported by `shadowsync import` from the AWS IoT data plane at {server.endpoint_url}"), output(result)
    assert f"py-gw/{GREENGRASS}: skipped" in result.stderr

    docs = documents(result.stdout)
    names = [d["metadata"]["name"] for d in docs]
    assert names == ["py-lamp", *[f"py-gw-s-{i:02d}" for i in range(GATEWAY_SHADOWS)], "py-gw-status"]
    assert all(d["kind"] == "ThingShadow" and d["metadata"]["namespace"] == "fleet" for d in docs)
    # What a YAML 1.1 reader sees is the cloud's desired section, types included.
    assert docs[0]["spec"] == {"thingName": "py-lamp", "desired": get(iot, "py-lamp")["state"]["desired"]}
    assert docs[0]["spec"]["desired"] == LAMP_DESIRED
    for i, doc in enumerate(docs[1:-1]):
        assert doc["spec"] == {"thingName": "py-gw", "shadowName": f"s-{i:02d}", "desired": gateway_desired(i)}
    assert docs[-1]["spec"] == {"thingName": "py-gw", "shadowName": "status"}

    imported = tmp_path / "imported.yaml"
    imported.write_text(result.stdout)
    before = shadow_versions(iot)
    applied = run(server, tmp_path, "apply", "-f", str(imported), "--state", str(tmp_path / "fresh.json"))
    assert applied.returncode == 0, output(applied)
    assert shadow_versions(iot) == before
    in_sync = run(server, tmp_path, "diff", "-f", str(imported), "--state", str(tmp_path / "fresh.json"))
    assert in_sync.returncode == 0, output(in_sync)


def fill_retained(iot):
    iot.publish(topic="py/config/json", retain=True, qos=1, payload=b'{"a":1,"b":{"c":[true,null],"d":"on"}}',
                userProperties=[{"site": "berlin"}, {"site": "lab"}, {"owner": "ops"}])
    iot.publish(topic="py/config/pretty", retain=True, payload=b'{"b": 1, "a": 2}')
    iot.publish(topic="py/firmware/blob", retain=True, qos=1, payload=bytes([0xFF, 0x00, 0x10, 0x80]))
    iot.publish(topic="py/banner", retain=True, payload=b"yes")
    iot.publish(topic="elsewhere/x", retain=True, payload=b"not under the prefix")


def retained_state(iot, topics):
    state = {}
    for topic in topics:
        got = iot.get_retained_message(topic=topic)
        state[topic] = (got["payload"], got["qos"], got.get("userProperties"), got["lastModifiedTime"])
    return state


PY_TOPICS = ["py/banner", "py/config/json", "py/config/pretty", "py/firmware/blob"]


def test_import_retained_messages_under_a_prefix(server, iot, tmp_path):
    fill_retained(iot)
    result = run(server, tmp_path, "import", "--retained", "--topic-prefix", "py/")
    assert result.returncode == 0, output(result)
    docs = documents(result.stdout)
    assert [d["spec"]["topic"] for d in docs] == PY_TOPICS
    by_topic = {d["spec"]["topic"]: d for d in docs}
    assert by_topic["py/config/json"]["metadata"]["name"] == "py-config-json"
    assert by_topic["py/config/json"]["spec"] == {
        "topic": "py/config/json",
        "payload": {"json": {"a": 1, "b": {"c": [True, None], "d": "on"}}},
        "qos": 1,
        "userProperties": [{"key": "site", "value": "berlin"}, {"key": "site", "value": "lab"},
                           {"key": "owner", "value": "ops"}],
    }
    assert by_topic["py/config/pretty"]["spec"]["payload"] == {"text": '{"b": 1, "a": 2}'}
    blob = by_topic["py/firmware/blob"]["spec"]["payload"]
    assert base64.b64decode(blob["base64"]) == bytes([0xFF, 0x00, 0x10, 0x80])
    assert by_topic["py/banner"]["spec"]["payload"] == {"text": "yes"}

    # Applying changes no payload, qos or user properties.
    before = retained_state(iot, PY_TOPICS)
    imported = tmp_path / "imported.yaml"
    imported.write_text(result.stdout)
    applied = run(server, tmp_path, "apply", "-f", str(imported), "--state", str(tmp_path / "fresh.json"))
    assert applied.returncode == 0, output(applied)
    after = retained_state(iot, PY_TOPICS)
    assert {t: v[:3] for t, v in after.items()} == {t: v[:3] for t, v in before.items()}


def test_applying_imported_retained_messages_publishes_nothing(server, iot, tmp_path):
    fill_retained(iot)
    result = run(server, tmp_path, "import", "--retained", "--topic-prefix", "py/")
    assert result.returncode == 0, output(result)
    imported = tmp_path / "imported.yaml"
    imported.write_text(result.stdout)
    before = retained_state(iot, PY_TOPICS)
    applied = run(server, tmp_path, "apply", "-f", str(imported), "--state", str(tmp_path / "fresh.json"))
    assert applied.returncode == 0, output(applied)
    after = retained_state(iot, PY_TOPICS)
    moved = sorted(t for t in PY_TOPICS if after[t][3] != before[t][3])
    assert moved == [], f"re-published: {moved}"


def test_a_failed_read_exits_2_and_prints_what_was_read(server, iot, tmp_path):
    update(iot, "py-lamp", {"state": {"desired": {"power": "on"}}})
    fill_retained(iot)
    status, _ = server.admin("PUT", "/_shadowsync/faults",
                             {"errorRate": 1.0, "operations": ["GetRetainedMessage"]})
    assert status == 200
    result = run(server, tmp_path, "import", "--thing", "py-lamp", "--retained", "--topic-prefix", "py/banner")
    assert result.returncode == 2, output(result)
    assert "error: GetRetainedMessage py/banner: " in result.stderr, output(result)
    lines = result.stdout.splitlines()
    assert lines[1].startswith("# Incomplete: 1 read(s) failed"), output(result)
    docs = documents(result.stdout)
    assert [d["kind"] for d in docs] == ["ThingShadow"]
