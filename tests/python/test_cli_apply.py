"""`shadowsync apply` and `diff` against a moto server and against the local data
plane, observed through boto3 (a client shadowsync did not write).

Each backend runs the same scenarios. moto needs the Thing created through its `iot`
API first, and does not retain messages: those cases are skipped on moto with a
printed reason.
"""

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import pytest
import yaml
from botocore.config import Config

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("SHADOWSYNC_BIN", str(REPO / "target" / "debug" / "shadowsync"))
CREDS = dict(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, deadline_s=60):
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {deadline_s}s")


@pytest.fixture(scope="module", params=["local", "moto"])
def backend(request, tmp_path_factory):
    if request.param == "local":
        proc = subprocess.Popen(
            [BIN, "dataplane", "serve", "--listen", "127.0.0.1:0",
             "--db", str(tmp_path_factory.mktemp("db") / "dp.redb")],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        line = proc.stdout.readline().strip()
        assert "http://" in line, f"unexpected first line from dataplane serve: {line!r}"
        endpoint = line[line.index("http://"):].split()[0]
    else:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_http(endpoint + "/")
        yield Backend(request.param, endpoint)
    finally:
        proc.kill()
        proc.wait()


class Backend:
    def __init__(self, name, endpoint):
        self.name = name
        self.endpoint = endpoint
        cfg = Config(retries={"max_attempts": 1})
        self.data = boto3.client("iot-data", endpoint_url=endpoint, config=cfg, **CREDS)
        self.iot = boto3.client("iot", endpoint_url=endpoint, config=cfg, **CREDS)

    def new_thing(self, prefix="thing"):
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        if self.name == "moto":
            self.iot.create_thing(thingName=name)
        return name

    def shadow(self, thing, shadow=None):
        kwargs = {"thingName": thing}
        if shadow:
            kwargs["shadowName"] = shadow
        return json.loads(self.data.get_thing_shadow(**kwargs)["payload"].read())

    def update(self, thing, doc, shadow=None):
        kwargs = {"thingName": thing, "payload": json.dumps(doc).encode()}
        if shadow:
            kwargs["shadowName"] = shadow
        return json.loads(self.data.update_thing_shadow(**kwargs)["payload"].read())


def run_cli(backend, cwd, *args):
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_REGION="us-east-1", NO_COLOR="1")
    cmd = [BIN, *args, "--endpoint-url", backend.endpoint]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def write(path, text):
    path.write_text(text)
    return path


def shadow_manifest(name, thing, desired, shadow=None, extra=""):
    shadow_line = f"  shadowName: {shadow}\n" if shadow else ""
    return (
        "apiVersion: iot.shadowsync.dev/v1alpha1\nkind: ThingShadow\n"
        f"metadata: {{name: {name}, namespace: test}}\n"
        f"spec:\n  thingName: {thing}\n{shadow_line}  desired: {json.dumps(desired)}\n{extra}"
    )


def test_apply_writes_owned_keys_and_leaves_foreign_keys(backend, tmp_path):
    thing = backend.new_thing()
    # Someone else's keys, before shadowsync arrives.
    backend.update(thing, {"state": {"desired": {"app": "keep-me"}, "reported": {"power": "off"}}})
    manifest = write(tmp_path / "lamp.yaml", shadow_manifest(
        "lamp", thing, {"power": "on", "color": {"r": 255, "g": 180}}))

    first = run_cli(backend, tmp_path, "apply", "-f", str(manifest))
    assert first.returncode == 0, first.stdout + first.stderr
    assert "True" in first.stdout and thing in first.stdout

    doc = backend.shadow(thing)
    assert doc["state"]["desired"] == {"app": "keep-me", "power": "on", "color": {"r": 255, "g": 180}}
    assert doc["state"]["reported"] == {"power": "off"}
    assert doc["state"]["delta"]["power"] == "on"
    version = doc["version"]

    # A second apply with nothing changed writes nothing: the version does not move.
    again = run_cli(backend, tmp_path, "apply", "-f", str(manifest))
    assert again.returncode == 0, again.stdout + again.stderr
    assert backend.shadow(thing)["version"] == version

    in_sync = run_cli(backend, tmp_path, "diff", "-f", str(manifest))
    assert in_sync.returncode == 0, in_sync.stdout + in_sync.stderr


def test_removed_key_is_nulled_on_next_apply(backend, tmp_path):
    thing = backend.new_thing()
    path = tmp_path / "lamp.yaml"
    write(path, shadow_manifest("lamp", thing, {"power": "on", "color": {"r": 1, "g": 2}}))
    assert run_cli(backend, tmp_path, "apply", "-f", str(path)).returncode == 0
    backend.update(thing, {"state": {"desired": {"foreign": True}}})

    write(path, shadow_manifest("lamp", thing, {"power": "on", "color": {"r": 1}}))
    planned = run_cli(backend, tmp_path, "diff", "-f", str(path))
    assert planned.returncode == 1, planned.stdout + planned.stderr
    assert "/color/g" in planned.stdout
    version_before = backend.shadow(thing)["version"]
    assert backend.shadow(thing)["version"] == version_before  # diff wrote nothing

    applied = run_cli(backend, tmp_path, "apply", "-f", str(path))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    doc = backend.shadow(thing)
    assert doc["state"]["desired"] == {"power": "on", "color": {"r": 1}, "foreign": True}
    assert doc["version"] == version_before + 1


def test_named_shadow_and_yaml_output(backend, tmp_path):
    thing = backend.new_thing()
    path = write(tmp_path / "s.yaml", shadow_manifest("cfg", thing, {"mode": "eco"}, shadow="config"))
    result = run_cli(backend, tmp_path, "apply", "-f", str(path), "-o", "yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    # Read the output as YAML: its layout and quoting are the writer's to choose.
    (printed,) = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert printed["metadata"] == {"name": "cfg", "namespace": "test"}
    assert printed["status"]["managedPaths"] == ["/mode"]
    assert backend.shadow(thing, "config")["state"]["desired"] == {"mode": "eco"}
    with pytest.raises(backend.data.exceptions.ResourceNotFoundException):
        backend.shadow(thing)  # the classic shadow was not created


def test_invalid_spec_is_refused_naming_the_field_with_no_call(backend, tmp_path):
    path = write(tmp_path / "bad.yaml", shadow_manifest("bad", "bad name!", {"a": 1}))
    result = run_cli(backend, tmp_path, "apply", "-f", str(path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'spec.thingName "bad name!"' in result.stdout
    planned = run_cli(backend, tmp_path, "diff", "-f", str(path))
    assert planned.returncode == 2
    assert 'spec.thingName "bad name!"' in planned.stdout


def test_unknown_field_stops_before_any_write(backend, tmp_path):
    thing = backend.new_thing()
    good = shadow_manifest("good", thing, {"a": 1})
    bad = shadow_manifest("typo", thing + "-x", {"a": 1}).replace("desired:", "desried:")
    path = write(tmp_path / "m.yaml", good + "---\n" + bad)
    result = run_cli(backend, tmp_path, "apply", "-f", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "spec.desried: unknown field" in result.stderr
    with pytest.raises(backend.data.exceptions.ResourceNotFoundException):
        backend.shadow(thing)


def test_retained_message_publishes_once(backend, tmp_path):
    if backend.name == "moto":
        print("SKIP moto: retained messages: moto accepts Publish but retains nothing "
              "(GetRetainedMessage answers 500)")
        pytest.skip("moto does not retain messages")
    topic = f"test/{uuid.uuid4().hex[:8]}/config"
    path = write(tmp_path / "r.yaml", (
        "apiVersion: iot.shadowsync.dev/v1alpha1\nkind: RetainedMessage\n"
        "metadata: {name: cfg, namespace: test}\n"
        f"spec:\n  topic: {topic}\n  qos: 1\n  payload: {{json: {{interval: 30}}}}\n"
        "  userProperties: [{key: site, value: a}, {key: site, value: b}]\n"))
    assert run_cli(backend, tmp_path, "apply", "-f", str(path)).returncode == 0
    msg = backend.data.get_retained_message(topic=topic)
    assert json.loads(msg["payload"]) == {"interval": 30}
    assert msg["qos"] == 1
    assert json.loads(msg["userProperties"]) == [{"site": "a"}, {"site": "b"}]
    stamp = msg["lastModifiedTime"]

    again = run_cli(backend, tmp_path, "apply", "-f", str(path))
    assert again.returncode == 0, again.stdout + again.stderr
    assert backend.data.get_retained_message(topic=topic)["lastModifiedTime"] == stamp

    write(path, path.read_text().replace("interval: 30", "interval: 60"))
    planned = run_cli(backend, tmp_path, "diff", "-f", str(path))
    assert planned.returncode == 1 and "payload:" in planned.stdout
    assert run_cli(backend, tmp_path, "apply", "-f", str(path)).returncode == 0
    assert json.loads(backend.data.get_retained_message(topic=topic)["payload"]) == {"interval": 60}
