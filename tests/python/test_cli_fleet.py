"""`shadowsync apply`, `diff` and `import --thing-group` with ThingShadowSet manifests
against `shadowsync dataplane serve`, whose registry is filled with boto3's `iot` client
and whose shadows are read back with boto3's `iot-data` client (clients shadowsync did
not write).

The manifests `import` prints are read with PyYAML, a YAML 1.1 reader like kubectl's.
"""

import json
import os
import subprocess

import boto3
import pytest
import yaml
from botocore.config import Config

from conftest import shadowsync_bin


def run(server, cwd, *args):
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_REGION="us-east-1", NO_COLOR="1")
    for var in ("SHADOWSYNC_DATA_PLANE", "SHADOWSYNC_DB", "SHADOWSYNC_STATE", "SHADOWSYNC_ENDPOINT_URL"):
        env.pop(var, None)
    cmd = [str(shadowsync_bin()), *args, "--endpoint-url", server.endpoint_url]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def output(result):
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


@pytest.fixture
def registry(server):
    return boto3.client(
        "iot",
        endpoint_url=server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="AKIDTEST",
        aws_secret_access_key="secret",
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )


def thing(registry, name, model, group=None):
    registry.create_thing(thingName=name, attributePayload={"attributes": {"model": model}})
    if group:
        registry.add_thing_to_thing_group(thingGroupName=group, thingName=name)


def fill(registry):
    """`home` > `kitchen`: `hub` in home, two lamps in kitchen; two sensors in no group."""
    registry.create_thing_group(thingGroupName="home")
    registry.create_thing_group(thingGroupName="kitchen", parentGroupName="home")
    thing(registry, "hub", "hub-1", "home")
    thing(registry, "lamp-k1", "lamp-v2", "kitchen")
    thing(registry, "lamp-k2", "lamp-v2", "kitchen")
    thing(registry, "sensor-1", "sensor")
    thing(registry, "sensor-2", "sensor")


def shadow(iot, name, shadow_name=None):
    kwargs = {"thingName": name}
    if shadow_name:
        kwargs["shadowName"] = shadow_name
    try:
        doc = json.loads(iot.get_thing_shadow(**kwargs)["payload"].read())
    except iot.exceptions.ResourceNotFoundException:
        return None
    return doc["version"], doc["state"].get("desired")


def set_manifest(name, selector, desired, **template):
    return {
        "apiVersion": "iot.shadowsync.dev/v1alpha1",
        "kind": "ThingShadowSet",
        "metadata": {"name": name, "namespace": "home"},
        "spec": {"selector": selector, "template": {"desired": desired, **template}},
    }


def write(path, docs):
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def three_sets(power):
    return [
        set_manifest("home-all", {"thingGroup": {"name": "home", "recursive": True}},
                     {"power": power, "site": "berlin"}),
        set_manifest("sensors", {"query": "attributes.model:sensor"}, {"interval": 30}),
        set_manifest("spares", {"things": ["spare-2", "spare-1"]}, {"mode": "standby"}),
    ]


def calls(server, operation):
    stats = server.admin("GET", "/_shadowsync/stats")[1]
    return sum(stats["calls"].get(operation, {}).values())


def test_sets_by_group_query_and_list_apply_once_and_then_write_nothing(server, registry, iot, tmp_path):
    fill(registry)
    write(tmp_path / "sets.yaml", three_sets("on"))

    result = run(server, tmp_path, "apply", "-f", "sets.yaml")
    assert result.returncode == 0, output(result)
    for line in [
        "ThingShadowSet home/home-all: 3 things, applied at once (staged rollouts in spec.rollout need the operator)",
        "ThingShadowSet home/sensors: 2 things, applied at once (staged rollouts in spec.rollout need the operator)",
        "ThingShadowSet home/spares: 2 things, applied at once (staged rollouts in spec.rollout need the operator)",
    ]:
        assert line in result.stdout.splitlines(), output(result)
    expected = {
        "hub": {"power": "on", "site": "berlin"},
        "lamp-k1": {"power": "on", "site": "berlin"},
        "lamp-k2": {"power": "on", "site": "berlin"},
        "sensor-1": {"interval": 30},
        "sensor-2": {"interval": 30},
        "spare-1": {"mode": "standby"},
        "spare-2": {"mode": "standby"},
    }
    versions = {}
    for name, desired in expected.items():
        version, got = shadow(iot, name)
        assert got == desired, name
        versions[name] = version

    # The same input again: the membership is read again, nothing is written.
    updates = calls(server, "UpdateThingShadow")
    result = run(server, tmp_path, "apply", "-f", "sets.yaml")
    assert result.returncode == 0, output(result)
    assert calls(server, "UpdateThingShadow") == updates
    assert {name: shadow(iot, name)[0] for name in expected} == versions


def test_diff_lists_each_child_with_its_change(server, registry, iot, tmp_path):
    fill(registry)
    write(tmp_path / "sets.yaml", three_sets("on"))
    assert run(server, tmp_path, "apply", "-f", "sets.yaml").returncode == 0
    write(tmp_path / "sets.yaml", three_sets("off"))

    result = run(server, tmp_path, "diff", "-f", "sets.yaml")
    assert result.returncode == 1, output(result)
    for name in ["hub", "lamp-k1", "lamp-k2"]:
        header = next((l for l in result.stdout.splitlines() if l.endswith(f"-> {name} (classic)")), None)
        assert header and header.startswith("ThingShadow home/home-all-"), output(result)
    assert result.stdout.count('  ~ /power: "on" -> "off"') == 3, output(result)
    assert "3 of 7 resource(s) differ" in result.stderr
    assert shadow(iot, "hub")[1]["power"] == "on"


def test_a_set_whose_group_does_not_exist_fails_while_the_others_apply(server, registry, iot, tmp_path):
    fill(registry)
    write(tmp_path / "sets.yaml", [
        set_manifest("lost", {"thingGroup": {"name": "nowhere"}}, {"power": "on"}),
        set_manifest("kitchen", {"thingGroup": {"name": "kitchen"}}, {"power": "on"}),
    ])
    result = run(server, tmp_path, "apply", "-f", "sets.yaml")
    assert result.returncode == 1, output(result)
    assert ("ThingShadowSet home/lost: NotFound: thingGroup nowhere: ResourceNotFoundException: "
            in result.stdout), output(result)
    assert "1 of 3 resource(s) not Ready" in result.stderr, output(result)
    assert shadow(iot, "lamp-k1")[1] == {"power": "on"}
    assert shadow(iot, "lamp-k2")[1] == {"power": "on"}


def test_every_page_of_a_large_group_is_applied(server, registry, iot, tmp_path):
    registry.create_thing_group(thingGroupName="big")
    names = [f"sensor-{i:03}" for i in range(260)]
    for name in names:
        thing(registry, name, "sensor", "big")
    write(tmp_path / "big.yaml", [set_manifest("big", {"thingGroup": {"name": "big"}}, {"rate": 5})])

    result = run(server, tmp_path, "apply", "-f", "big.yaml", "--concurrency", "32")
    assert result.returncode == 0, output(result)
    assert "ThingShadowSet home/big: 260 things, applied at once" in result.stdout
    # Two pages of 250 at most.
    assert calls(server, "ListThingsInThingGroup") == 2
    for name in [names[0], names[249], names[250], names[-1]]:
        assert shadow(iot, name)[1] == {"rate": 5}, name


def test_import_of_a_thing_group_round_trips_without_a_write(server, registry, iot, tmp_path):
    registry.create_thing_group(thingGroupName="lamps")
    registry.create_thing_group(thingGroupName="lamps-east", parentGroupName="lamps")
    for name, group in [("lamp-1", "lamps"), ("lamp-2", "lamps"), ("lamp-3", "lamps-east"),
                        ("lamp-new", "lamps-east")]:
        thing(registry, name, "lamp", group)
    for i, name in enumerate(["lamp-1", "lamp-2", "lamp-3"]):
        desired = {
            "power": "on",
            "label": "010",
            "color": {"r": 255, "g": i},
            "days": ["mon", "yes", "no"],
        }
        iot.update_thing_shadow(thingName=name, shadowName="config",
                                payload=json.dumps({"state": {"desired": desired}}).encode())
    iot.update_thing_shadow(thingName="lamp-1", shadowName="config",
                            payload=json.dumps({"state": {"reported": {"power": "off"}}}).encode())

    result = run(server, tmp_path, "import", "--thing-group", "lamps", "--recursive",
                 "--shadow-name", "config", "-n", "home")
    assert result.returncode == 0, output(result)
    assert "# 1 member(s) without the shadow; apply would write the template to them:\n#   lamp-new\n" \
        in result.stdout, output(result)
    assert "#   /color/g\n" in result.stdout
    docs = [d for d in yaml.safe_load_all(result.stdout) if d is not None]
    assert len(docs) == 1
    assert docs[0]["kind"] == "ThingShadowSet"
    assert docs[0]["metadata"] == {"name": "lamps-config", "namespace": "home"}
    assert docs[0]["spec"]["selector"] == {"thingGroup": {"name": "lamps", "recursive": True}}
    # Read by a YAML 1.1 reader, the strings stay strings.
    assert docs[0]["spec"]["template"] == {
        "shadowName": "config",
        "desired": {"power": "on", "label": "010", "color": {"r": 255}, "days": ["mon", "yes", "no"]},
    }
    (tmp_path / "lamps.yaml").write_text(result.stdout)

    before = {name: shadow(iot, name, "config") for name in ["lamp-1", "lamp-2", "lamp-3"]}
    result = run(server, tmp_path, "apply", "-f", "lamps.yaml")
    assert result.returncode == 0, output(result)
    assert {name: shadow(iot, name, "config") for name in before} == before
    assert shadow(iot, "lamp-new", "config")[1] == docs[0]["spec"]["template"]["desired"]

    # And the import of a group that does not exist is an error that prints nothing.
    result = run(server, tmp_path, "import", "--thing-group", "nowhere")
    assert result.returncode == 2, output(result)
    assert result.stdout == ""
    assert "thingGroup nowhere: ResourceNotFoundException" in result.stderr
