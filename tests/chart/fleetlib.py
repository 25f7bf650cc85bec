"""The stack of the fleet end-to-end tests (test_fleet.py), on the session's control plane.

- The CRDs (crds/) and what deploy/install.yaml installs around the operator (its
  Namespace, ServiceAccount and RBAC objects, exactly as rendered from the chart).
- `shadowsync dataplane serve` on an ephemeral loopback port, with simulated devices set
  through `PUT /_shadowsync/simulation`; the registry and the shadows are read and written
  only through boto3 (`iot` and `iot-data`, the server as endpoint, dummy credentials).
- `shadowsync run` with the container args and environment of install.yaml's
  Deployment (the metrics address moved to loopback, `--endpoint-url` added),
  authenticated as the chart's ServiceAccount with a TokenRequest token.

Everything the stack creates in the cluster is removed again when it stops, CRDs included
when they were not there before, so the suites after it find the control plane as it was
(test_install.py checks that the first Helm install of a session creates the CRDs).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import yaml

from cluster import Cluster, wait_until

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
INSTALL_YAML = REPO / "deploy" / "install.yaml"

GROUP = "iot.shadowsync.dev"
GROUP_VERSION = f"{GROUP}/v1alpha1"
SETS = f"thingshadowsets.{GROUP}"
SHADOWS = f"thingshadows.{GROUP}"
SET_LABEL = f"{GROUP}/set"
REVISION_ANNOTATION = f"{GROUP}/template-revision"

# What install.yaml installs around the operator, besides the CRDs and the Deployment.
RBAC_KINDS = ("Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
# kubectl's group-qualified resource for each kind the stack creates.
RESOURCES = {
    "Namespace": "namespaces",
    "ServiceAccount": "serviceaccounts",
    "ClusterRole": "clusterroles.rbac.authorization.k8s.io",
    "ClusterRoleBinding": "clusterrolebindings.rbac.authorization.k8s.io",
    "Role": "roles.rbac.authorization.k8s.io",
    "RoleBinding": "rolebindings.rbac.authorization.k8s.io",
    "CustomResourceDefinition": "customresourcedefinitions.apiextensions.k8s.io",
}
# The apiserver's words while OwnerReferencesPermissionEnforcement does not know a kind
# yet: its discovery cache is refreshed every 30 s, so right after the CRDs are created
# a child that blocks its set's deletion is refused with this.
NO_MAPPING = "cannot find RESTMapping"
START_DEADLINE = 60.0
AWS_REGION = "us-east-1"


def shadowsync_bin() -> Path:
    path = Path(os.environ.get("SHADOWSYNC_BIN", REPO / "target" / "debug" / "shadowsync"))
    if not path.is_absolute():
        path = REPO / path
    if not path.is_file():
        raise AssertionError(
            f"shadowsync binary not found at {path}: run `cargo build --bins` or set SHADOWSYNC_BIN")
    return path


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test process dies, even by SIGKILL (Linux)."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def ref(obj: dict) -> str:
    return f"{RESOURCES[obj['kind']]}/{obj['metadata']['name']}"


class Process:
    """A process started by the stack, its output (both streams) in `log`."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log: Path):
        self.name = name
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 25, width: int = 600) -> str:
        kept = "\n".join(line[:width] for line in self.text().splitlines()[-lines:])
        return f"{self.name} ({self.log}), last lines:\n{kept}"

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait_line(self, pick: Callable[[str], Any], what: str) -> Any:
        """The first output line `pick` accepts, as picked."""
        def found():
            assert self.running(), f"{self.name} exited ({self.proc.returncode}) before printing {what}"
            return next((v for v in map(pick, self.text().splitlines()) if v), None)
        try:
            return wait_until(found, timeout=START_DEADLINE, what=f"{self.name} to print {what}")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.tail()}") from None

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then SIGKILL after `timeout`; the exit code."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


def http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    """(status, the answer as JSON, or as text when it is not JSON)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


class Simulation:
    """The data plane's simulated devices: exactly the things named here report (after
    `delay_ms`); every other thing is silent. Each change replaces the server's settings."""

    def __init__(self, endpoint: str, delay_ms: int = 100):
        self.url = f"{endpoint}/_shadowsync/simulation"
        self.delay_ms = delay_ms
        self.devices: set[str] = set()

    def talk(self, *things: str) -> None:
        self.devices.update(things)
        self._put()

    def silence(self, *things: str) -> None:
        self.devices.difference_update(things)
        self._put()

    def _put(self) -> None:
        settings = {"devices": ",".join(sorted(self.devices)), "reportDelayMs": self.delay_ms,
                    "silentFraction": 0.0, "wrongFraction": 0.0}
        status, answer = http("PUT", self.url, settings)
        assert status == 200, f"PUT /_shadowsync/simulation: {status} {answer}"
        status, now = http("GET", self.url)
        assert status == 200 and now["settings"]["devices"] == settings["devices"], now


class Watch:
    """`kubectl get RESOURCE NAME --watch -o json` in the background: every version of
    the object the apiserver sends, none missed between two polls."""

    def __init__(self, cluster: Cluster, resource: str, name: str, namespace: str, out: Path):
        self.out = out
        self._file = open(out, "wb")
        self.proc = subprocess.Popen(
            [cluster.kubectl_path, "--kubeconfig", str(cluster.kubeconfig), "get", resource, name,
             "-n", namespace, "-o", "json", "--watch"],
            stdout=self._file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)

    def versions(self) -> list[dict]:
        """The versions received so far, in order (kubectl prints one JSON document each)."""
        text, decoder, versions, at = self.out.read_text(errors="replace"), json.JSONDecoder(), [], 0
        while True:
            while at < len(text) and text[at].isspace():
                at += 1
            if at >= len(text):
                return versions
            try:
                obj, at = decoder.raw_decode(text, at)
            except ValueError:
                return versions  # a document still being written
            versions.append(obj)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self._file.close()


def install_yaml_rbac() -> list[dict]:
    """install.yaml's Namespace, ServiceAccount and RBAC objects, as rendered."""
    docs = [d for d in yaml.safe_load_all(INSTALL_YAML.read_text(encoding="utf-8")) if d]
    kept = [d for d in docs if d["kind"] in RBAC_KINDS]
    assert sorted(d["kind"] for d in kept) == sorted(RBAC_KINDS), "install.yaml holds one object of each kind"
    return kept


def install_yaml_container() -> dict:
    docs = [d for d in yaml.safe_load_all(INSTALL_YAML.read_text(encoding="utf-8")) if d]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


class FleetStack:
    """The CRDs, the operator's RBAC, a data plane and the operator, on `cluster`."""

    def __init__(self, cluster: Cluster, directory: Path, namespace: str):
        self.cluster = cluster
        self.dir = directory
        self.namespace = namespace
        self.binary = shadowsync_bin()
        self.created: list[dict] = []  # objects this stack created, deleted in reverse
        self.dataplane: Process | None = None
        self.operator: Process | None = None
        self.endpoint = ""
        self.metrics_url = ""
        self.watches = 0

    # --- start ---------------------------------------------------------------------------

    def start(self) -> "FleetStack":
        crds = [yaml.safe_load(p.read_text(encoding="utf-8")) for p in sorted(CRDS.glob("*.yaml"))]
        self._apply_new(crds)
        self._apply_new(install_yaml_rbac())
        self._apply_new([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}}])
        self._wait_established([c["metadata"]["name"] for c in crds])

        self.dataplane = Process("dataplane", [str(self.binary), "dataplane", "serve", "--listen", "127.0.0.1:0"],
                                 self._env({"RUST_LOG": "warn,shadowsync=info"}), self.dir / "dataplane.log")
        self.endpoint = self.dataplane.wait_line(
            lambda line: (m := re.fullmatch(r"listening on (http://\S+)", line.strip())) and m.group(1),
            "its address")
        self.simulation = Simulation(self.endpoint)

        (sa,) = [o for o in install_yaml_rbac() if o["kind"] == "ServiceAccount"]
        self.operator_namespace = sa["metadata"]["namespace"]
        self.service_account = sa["metadata"]["name"]
        self.operator_kubeconfig = self.cluster.token_kubeconfig(
            self.operator_namespace, self.service_account, self.dir / "operator.kubeconfig")
        self._wait_owner_references_admitted()
        self.start_operator()
        return self

    def _env(self, extra: dict[str, str]) -> dict[str, str]:
        # Nothing of the developer's AWS or shadowsync settings leaks in.
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.dir), **extra}

    def _apply_new(self, objects: list[dict]) -> None:
        """Server-side applies `objects`, remembering those that did not exist before."""
        for obj in objects:
            existed = self.cluster.get(ref(obj), obj["metadata"].get("namespace")) is not None
            self.cluster.apply(obj)
            if not existed:
                self.created.append(obj)

    def _wait_established(self, names: list[str]) -> None:
        for name in names:
            def established(name=name):
                live = self.cluster.get(f"{RESOURCES['CustomResourceDefinition']}/{name}") or {}
                return any(c["type"] == "Established" and c["status"] == "True"
                           for c in live.get("status", {}).get("conditions", []))
            wait_until(established, timeout=60, interval=0.2, what=f"CRD {name} to be Established")

    def _wait_owner_references_admitted(self) -> None:
        """Until kube-apiserver's admission knows ThingShadowSet, every child the operator
        creates is refused (see NO_MAPPING): wait for it here, with a server-side dry run of
        such a child as the operator's ServiceAccount, so that the tests' deadlines measure
        the operator and not the apiserver's discovery refresh."""
        probe = {"apiVersion": GROUP_VERSION, "kind": "ThingShadow",
                 "metadata": {"name": "admission-probe", "namespace": self.namespace,
                              "ownerReferences": [{"apiVersion": GROUP_VERSION, "kind": "ThingShadowSet",
                                                   "name": "admission-probe",
                                                   "uid": "00000000-0000-0000-0000-000000000000",
                                                   "controller": True, "blockOwnerDeletion": True}]},
                 "spec": {"thingName": "admission-probe", "desired": {"probe": True}}}

        def admitted():
            out = self.cluster.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(probe),
                                       kubeconfig=self.operator_kubeconfig, check=False)
            if NO_MAPPING in out.stderr:
                return None
            assert out.returncode == 0, f"the operator's ServiceAccount may not create a set's child: {out.stderr}"
            return True
        wait_until(admitted, timeout=45, interval=0.5,
                   what="kube-apiserver's owner-reference admission to know ThingShadowSet")

    def start_operator(self) -> None:
        """`shadowsync run` as install.yaml's Deployment runs it, against the data plane."""
        container = install_yaml_container()
        args = list(container["args"])
        assert args[0] == "run" and "--data-plane=aws" in args, args
        metrics = [i for i, a in enumerate(args) if a.startswith("--metrics-addr=")]
        assert len(metrics) == 1, args
        args[metrics[0]] = "--metrics-addr=127.0.0.1:0"
        assert "--log-format=json" in args, "the metrics address is read from the JSON log"
        args.append(f"--endpoint-url={self.endpoint}")
        pod_name = "shadowsync-fleet-e2e"
        field_refs = {"metadata.namespace": self.operator_namespace, "metadata.name": pod_name}
        env = self._env({"KUBECONFIG": str(self.operator_kubeconfig), "AWS_REGION": AWS_REGION,
                         "AWS_ACCESS_KEY_ID": "fleet-e2e", "AWS_SECRET_ACCESS_KEY": "fleet-e2e",
                         "AWS_EC2_METADATA_DISABLED": "true"})
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = var["value"]
            else:
                env[var["name"]] = field_refs[var["valueFrom"]["fieldRef"]["fieldPath"]]
        self.operator = Process("operator", [str(self.binary), *args], env, self.dir / "operator.log")

        def metrics_addr(line: str):
            try:
                fields = json.loads(line).get("fields", {})
            except ValueError:
                return None
            return fields.get("message") == "serving /metrics, /healthz and /readyz" and fields.get("addr")
        self.metrics_url = "http://" + self.operator.wait_line(metrics_addr, "its metrics address")

        def ready():
            assert self.operator.running(), f"the operator exited ({self.operator.proc.returncode})"
            try:
                return http("GET", f"{self.metrics_url}/readyz")[0] == 200
            except OSError:
                return False
        try:
            wait_until(ready, timeout=START_DEADLINE, interval=0.2, what="the operator's /readyz to answer 200")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.operator.tail()}") from None

    def watch(self, resource: str, name: str) -> Watch:
        """A Watch of one object of the test namespace (stopped by the caller)."""
        self.watches += 1
        return Watch(self.cluster, resource, name, self.namespace, self.dir / f"watch-{self.watches}.json")

    def wait_garbage_collector(self) -> None:
        """Until kube-controller-manager's garbage collector watches the CRDs' resources
        (it re-reads the API's resources every 30 s), nothing deletes a deleted set's
        children. Waits for it with a probe: a ThingShadowSet that selects no thing,
        owned by a ConfigMap; once the ConfigMap is deleted, the set goes when the
        collector knows ThingShadowSets."""
        name = "garbage-collector-probe"
        config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": self.namespace}}
        self.cluster.create(config_map)
        owner = self.cluster.get(f"configmaps/{name}", self.namespace)
        self.cluster.create({
            "apiVersion": GROUP_VERSION, "kind": "ThingShadowSet",
            "metadata": {"name": name, "namespace": self.namespace, "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": name, "uid": owner["metadata"]["uid"]}]},
            "spec": {"selector": {"things": []}, "template": {"desired": {"probe": True}}}})
        self.cluster.kubectl("delete", "configmap", name, "-n", self.namespace)
        wait_until(lambda: self.cluster.get(f"{SETS}/{name}", self.namespace) is None, timeout=60, interval=0.25,
                   what="the garbage collector to delete a ThingShadowSet whose owner is gone")

    # --- AWS, through boto3 ---------------------------------------------------------------

    def boto3_client(self, service: str):
        import boto3
        from botocore.config import Config

        return boto3.client(service, endpoint_url=self.endpoint, region_name=AWS_REGION,
                            aws_access_key_id="fleet-e2e", aws_secret_access_key="fleet-e2e",
                            config=Config(retries={"total_max_attempts": 3, "mode": "standard"},
                                          connect_timeout=5, read_timeout=10))

    # --- stop ------------------------------------------------------------------------------

    def stop(self) -> list[str]:
        """Deletes what the tests created (while the operator runs, so that its
        finalizers run), stops the processes and deletes what `start` created. Returns
        what went wrong, for the caller to report."""
        problems: list[str] = []
        k = self.cluster.kubectl

        def attempt(what: str, action: Callable[[], Any]) -> None:
            try:
                action()
            except Exception as e:  # noqa: BLE001 - every step of the cleanup is tried
                problems.append(f"{what}: {e}")

        if self.operator is not None and self.operator.running():
            # The sets first (they have no finalizer): the garbage collector deletes their
            # children, whose finalizers the operator runs.
            attempt("delete the sets", lambda: k("delete", SETS, "--all", "-n", self.namespace, "--ignore-not-found"))
            attempt("delete the shadows", lambda: k(
                "delete", SHADOWS, "--all", "-n", self.namespace, "--wait=false", "--ignore-not-found"))
            attempt("wait for the operator's cleanup", lambda: wait_until(
                lambda: not self._left(), timeout=60, interval=0.25,
                what=f"the ThingShadows of {self.namespace} to be cleaned up and deleted"))
        for process in (self.operator, self.dataplane):
            if process is not None:
                code = process.stop()
                if code != 0:
                    problems.append(f"{process.name} exited {code} on SIGTERM\n{process.tail()}")
        # Whatever is left would hold its namespace (and the CRD) forever: no operator runs.
        for name in self._left():
            attempt(f"drop the finalizer of {name}", lambda name=name: k(
                "patch", SHADOWS, name, "-n", self.namespace, "--type=merge",
                "-p", '{"metadata":{"finalizers":null}}'))
        if self.created:
            listed = {"apiVersion": "v1", "kind": "List", "items": list(reversed(self.created))}
            attempt("delete what the stack created", lambda: k(
                "delete", "-f", "-", "--wait=false", "--ignore-not-found", input=json.dumps(listed)))
        for obj in self.created:
            if obj["kind"] in ("Namespace", "CustomResourceDefinition"):
                attempt(f"wait for {ref(obj)} to go", lambda obj=obj: wait_until(
                    lambda: self.cluster.get(ref(obj)) is None, timeout=90, interval=0.25,
                    what=f"{ref(obj)} to be deleted"))
        return problems

    def _left(self) -> list[str]:
        out = self.cluster.kubectl("get", SHADOWS, "-n", self.namespace, "-o", "name", "--ignore-not-found",
                                   check=False)
        return [line.split("/", 1)[1] for line in out.stdout.split() if "/" in line]
