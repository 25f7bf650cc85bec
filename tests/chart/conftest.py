"""Shared fixtures of the chart tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import chartlib  # noqa: E402


@pytest.fixture(scope="session")
def chart():
    loaded = chartlib.load_chart()
    yield loaded
    loaded.close()


@pytest.fixture(scope="session")
def defaults(chart):
    """Objects rendered with the chart's default values."""
    return chartlib.render(chart=chart)
