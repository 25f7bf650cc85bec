"""A real Kubernetes control plane for the chart tests (tests/kube/cluster.sh).

One per pytest session (the `cluster` fixture in conftest.py): etcd, kube-apiserver
(TLS, RBAC, the default admission plugins with PodSecurity, an audit log) and
kube-controller-manager on loopback. No kubelet runs, so no pod ever starts.

`cluster.sh up` builds the binaries the first time (cached under
~/.cache/shadowsync/kube; several minutes on 2 cores, and it may wait for another build
holding the lock). It runs with `--owner <this pid>`, so the control plane stops by
itself if the test process dies; `stop()` stops it at the end of a normal run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO / "tests" / "kube" / "cluster.sh"

# Generous: the first `up` builds kube-apiserver, kube-controller-manager and etcd.
UP_TIMEOUT = 3600


class ClusterError(RuntimeError):
    pass


def wait_until(check: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Calls `check` until it returns something truthy (returned), or fails after
    `timeout` seconds naming `what` and the last value or exception seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
            if last:
                return last
        except AssertionError as e:  # a check may assert; the last failure is reported
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A running control plane and the ways the tests talk to it."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.kubeconfig = directory / "admin.kubeconfig"
        self.audit_log = directory / "audit.log"

    # --- lifecycle ---------------------------------------------------------------------

    @classmethod
    def up(cls, directory: Path, *, owner: int, log: Path) -> "Cluster":
        with open(log, "ab") as out:
            proc = subprocess.run(
                ["bash", str(CLUSTER_SH), "up", str(directory), "--owner", str(owner)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                timeout=UP_TIMEOUT,
            )
        if proc.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
            raise ClusterError(f"cluster.sh up {directory} failed ({proc.returncode}):\n{tail}")
        cluster = cls(directory)
        if not cluster.kubeconfig.exists():
            raise ClusterError(f"cluster.sh up wrote no {cluster.kubeconfig}")
        return cluster

    def down(self) -> None:
        subprocess.run(["bash", str(CLUSTER_SH), "down", str(self.dir)],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=120)

    def token_kubeconfig(self, namespace: str, service_account: str, out: Path) -> Path:
        """A kubeconfig that authenticates as the ServiceAccount (TokenRequest token)."""
        subprocess.run(
            ["bash", str(CLUSTER_SH), "token-kubeconfig", str(self.dir), namespace, service_account, str(out)],
            check=True, capture_output=True, text=True, timeout=60,
        )
        return out

    # --- kubectl -----------------------------------------------------------------------

    @property
    def kubectl_path(self) -> str:
        """The kubectl that cluster.sh built with the control plane (same release, no
        version skew), else $SHADOWSYNC_KUBECTL, else the one on PATH."""
        try:
            built = Path((self.dir / "bin").read_text().strip()) / "kubectl"
        except OSError:
            built = None
        if built and os.access(built, os.X_OK):
            return str(built)
        return os.environ.get("SHADOWSYNC_KUBECTL") or "kubectl"

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                kubeconfig: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [self.kubectl_path, "--kubeconfig", str(kubeconfig or self.kubeconfig), *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}"
            )
        return proc

    def get(self, ref: str, namespace: str | None = None, *, kubeconfig: Path | None = None) -> dict | None:
        """The object `ref` (`TYPE/NAME`) as JSON, or None if it does not exist."""
        args = ["get", ref, "-o", "json", "--ignore-not-found"]
        if namespace:
            args += ["-n", namespace]
        out = self.kubectl(*args, kubeconfig=kubeconfig).stdout
        return json.loads(out) if out.strip() else None

    def apply(self, obj: dict | list, *, server_side: bool = True, dry_run: str | None = None,
              check: bool = True) -> subprocess.CompletedProcess:
        docs = obj if isinstance(obj, list) else [obj]
        args = ["apply", "-f", "-"]
        if server_side:
            args += ["--server-side", "--field-manager", "shadowsync-tests"]
        if dry_run:
            args += [f"--dry-run={dry_run}"]
        return self.kubectl(*args, input="\n---\n".join(json.dumps(d) for d in docs), check=check)

    def create(self, obj: dict, *, dry_run: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        args = ["create", "-f", "-"]
        if dry_run:
            args += [f"--dry-run={dry_run}"]
        return self.kubectl(*args, input=json.dumps(obj), check=check)

    def namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        """Creates (or updates) a Namespace with these labels."""
        self.apply({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": name, "labels": labels or {}}})

    # --- audit log ---------------------------------------------------------------------

    def audit_events(self, username: str | None = None) -> list[dict]:
        """The audit log's events (Metadata level), optionally of one user."""
        events = []
        for line in self.audit_log.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip() or (username is not None and f'"{username}"' not in line):
                continue
            event = json.loads(line)
            if username is None or event.get("user", {}).get("username") == username:
                events.append(event)
        return events
