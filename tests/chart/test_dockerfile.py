"""The Dockerfile and the chart agree (no Docker engine here, so the image is not
built): a static binary on a shell-less base, the UID the chart runs as, the entry
point the chart's args expect, and a build context holding only the sources."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib

import pytest
import yaml

import chartlib

DOCKERFILE = (chartlib.REPO / "Dockerfile").read_text(encoding="utf-8")
VALUES = yaml.safe_load((chartlib.CHART / "values.yaml").read_text(encoding="utf-8"))


def instructions():
    """(instruction, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        result.append((word.upper(), rest.strip()))
    return result


def stages():
    result = []
    for word, rest in instructions():
        if word == "FROM":
            result.append([(word, rest)])
        elif result:
            result[-1].append((word, rest))
    return result


@pytest.fixture(scope="module")
def final():
    return stages()[-1]


def test_multi_stage(final):
    assert len(stages()) >= 2
    build = stages()[0]
    assert re.search(r"\bAS build\b", build[0][1])
    assert any(w == "COPY" and r.startswith("--from=build ") for w, r in final)


def test_build_is_locked_and_static():
    build = " ".join(r for w, r in stages()[0])
    assert "cargo build --release --locked --bin shadowsync" in build
    assert "alpine" in stages()[0][0][1]  # musl toolchain
    assert "+crt-static" in build


def test_final_image_is_distroless_static_nonroot(final):
    base = final[0][1]
    assert base.startswith("gcr.io/distroless/static") and base.endswith(":nonroot")


def test_final_stage_needs_no_shell(final):
    for word, rest in final:
        if word in ("RUN", "ENTRYPOINT", "CMD"):
            assert rest.startswith("["), f"{word} {rest}: shell form needs /bin/sh, which the image lacks"
            json.loads(rest)


def test_runs_as_the_chart_user(final):
    users = [r for w, r in final if w == "USER"]
    assert users == ["65532:65532"]
    sc = VALUES["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"]) == (65532, 65532)


def test_entrypoint_matches_the_chart_args(final, defaults):
    entrypoint = json.loads(next(r for w, r in final if w == "ENTRYPOINT"))
    cmd = json.loads(next(r for w, r in final if w == "CMD"))
    copied = next(r for w, r in final if w == "COPY" and r.startswith("--from=build"))
    assert entrypoint == [copied.split()[-1]]
    assert cmd == ["run"]
    assert chartlib.args(defaults)[0] == "run"
    assert next(r for w, r in final if w == "EXPOSE") == str(VALUES["metrics"]["port"])


def test_binary_is_checked_to_run_in_the_final_image(final):
    runs = [json.loads(r) for w, r in final if w == "RUN"]
    assert ["/usr/local/bin/shadowsync", "--version"] in runs


def ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for the simple patterns used here (last match wins)."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        p = pattern[1:] if negate else pattern
        p = p.rstrip("/")
        if fnmatch.fnmatch(path, p) or path.startswith(p + "/"):
            result = not negate
    return result


def test_build_context_holds_only_the_sources():
    patterns = [
        line.strip() for line in (chartlib.REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in ("Cargo.toml", "Cargo.lock", "src/main.rs", "src/cli/mod.rs"):
        assert not ignored(path, patterns), path
    for path in ("target/release/shadowsync", ".git/config", "charts/shadowsync/Chart.yaml", ".shadowsync/state.json", "tests/cli.rs"):
        assert ignored(path, patterns), path
    # Every COPY from the context is inside it.
    for word, rest in instructions():
        if word == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert not ignored(source.rstrip("/"), patterns), source


def test_chart_app_version_is_the_crate_version(chart):
    cargo = tomllib.loads((chartlib.REPO / "Cargo.toml").read_text(encoding="utf-8"))
    assert chart.metadata["appVersion"] == cargo["package"]["version"]
