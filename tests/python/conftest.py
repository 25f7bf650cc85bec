"""Fixtures that run the real `shadowsync dataplane serve` binary.

The binary is `$SHADOWSYNC_BIN`, else `target/debug/shadowsync` under the repository
root (build it first with `cargo build`).
"""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

REPO_ROOT = Path(__file__).resolve().parents[2]
# Generous: the machine running the tests may be busy.
DEADLINE_S = 30.0
LISTENING = re.compile(r"^listening on (http://\S+)$")


def shadowsync_bin() -> Path:
    path = Path(os.environ.get("SHADOWSYNC_BIN", REPO_ROOT / "target" / "debug" / "shadowsync"))
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not path.exists():
        pytest.fail(f"shadowsync binary not found at {path}: run `cargo build` or set SHADOWSYNC_BIN")
    return path


class DataPlaneServer:
    """One `shadowsync dataplane serve` process on an ephemeral loopback port."""

    def __init__(self, db: Path | None, log_dir: Path, extra_args: tuple[str, ...] = ()):
        self.db = db
        self.log_dir = log_dir
        self.extra_args = extra_args
        self.proc: subprocess.Popen | None = None
        self.endpoint_url = ""
        self.starts = 0

    def start(self) -> "DataPlaneServer":
        assert self.proc is None, "already running"
        args = [str(shadowsync_bin()), "dataplane", "serve", "--listen", "127.0.0.1:0"]
        if self.db is not None:
            args += ["--db", str(self.db)]
        args += list(self.extra_args)
        self.starts += 1
        self.log_path = self.log_dir / f"server-{self.starts}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._log)
        line = self._first_line()
        match = LISTENING.match(line)
        if not match:
            self.kill()
            pytest.fail(f"unexpected first line {line!r}; log:\n{self.log()}")
        self.endpoint_url = match.group(1)
        return self

    def _first_line(self) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        buf = b""
        deadline = time.monotonic() + DEADLINE_S
        try:
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.kill()
                    pytest.fail(f"no address announced within {DEADLINE_S}s; log:\n{self.log()}")
                if not sel.select(timeout=left):
                    continue
                chunk = os.read(fd, 4096)
                if not chunk:
                    code = self.proc.wait(timeout=DEADLINE_S)
                    pytest.fail(f"server exited ({code}) before announcing its address; log:\n{self.log()}")
                buf += chunk
        finally:
            sel.close()
        return buf.split(b"\n", 1)[0].decode()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> int:
        """SIGTERM, then wait for the graceful exit; returns the exit code."""
        return self._end(signal.SIGTERM)

    def kill(self) -> int:
        """SIGKILL: no chance to flush anything that was not already durable."""
        return self._end(signal.SIGKILL)

    def _end(self, sig: int) -> int:
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        proc.send_signal(sig)
        try:
            code = proc.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"server did not exit within {DEADLINE_S}s after {sig!r}; log:\n{self.log()}")
        if proc.stdout is not None:
            proc.stdout.close()
        self._log.close()
        return code

    def client(self, **config):
        """A boto3 `iot-data` client for this server: dummy credentials, no retries."""
        options = {"retries": {"total_max_attempts": 1, "mode": "standard"}}
        options.update(config)
        return boto3.client(
            "iot-data",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="AKIDTEST",
            aws_secret_access_key="secret",
            config=Config(**options),
        )

    def admin(self, method: str, path: str, body: object | None = None) -> tuple[int, object]:
        """Calls the `/_shadowsync/` admin API; returns (status, JSON body)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.endpoint_url + path, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=DEADLINE_S) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")


@pytest.fixture
def server(tmp_path):
    srv = DataPlaneServer(tmp_path / "dataplane.db", tmp_path).start()
    yield srv
    if srv.proc is not None:
        code = srv.stop()
        assert code == 0, f"server exited {code} on SIGTERM; log:\n{srv.log()}"


@pytest.fixture
def iot(server):
    return server.client()


@pytest.fixture
def raw_iot(server):
    """Skips botocore's own parameter checks, so invalid values reach the server."""
    return server.client(parameter_validation=False)
