"""Shared fixtures of the chart tests."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import chartlib  # noqa: E402
import cluster as kube  # noqa: E402


@pytest.fixture(scope="session")
def chart():
    loaded = chartlib.load_chart()
    yield loaded
    loaded.close()


@pytest.fixture(scope="session")
def defaults(chart):
    """Objects rendered with the chart's default values."""
    return chartlib.render(chart=chart)


@pytest.fixture(scope="session")
def cluster(request, tmp_path_factory):
    """One real control plane for the session (tests/kube/cluster.sh), started on first
    use and stopped at the end; it also stops by itself if this process dies. Not
    skipped when something is missing: Go is part of the test setup (cluster.sh builds
    the control plane and a kubectl of the same release with it)."""
    for tool in ("go", "openssl", "curl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is needed to start the control plane (tests/kube/cluster.sh)")
    base = tmp_path_factory.mktemp("kube")
    directory = base / "cluster"
    log = base / "cluster.sh.log"
    # The first start builds the control plane for minutes: show cluster.sh's progress.
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\nstarting a control plane in {directory} (log: {log})", flush=True)
    running = kube.Cluster.up(directory, owner=os.getpid(), log=log)
    try:
        yield running
    finally:
        running.down()
