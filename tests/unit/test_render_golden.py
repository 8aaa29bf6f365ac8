"""/metrics bytes for a fixed snapshot: any change to the exposition shows up here."""

from __future__ import annotations

import platform
from pathlib import Path

import celery
import pytest

from exporter import __version__
from exporter.prometheus.render import render
from tests.unit.samples import sample_snapshot

DATA = Path(__file__).parent / "data"


def expected(name: str) -> bytes:
    """A golden file with this machine's versions filled in."""
    text = (DATA / name).read_text(encoding="utf-8")
    versions = {
        "{celery}": celery.__version__,
        "{python}": platform.python_version(),
        "{version}": __version__,
    }
    for placeholder, value in versions.items():
        text = text.replace(placeholder, value)
    return text.encode()


@pytest.mark.parametrize(
    ("variant", "golden"),
    [("text", "metrics.txt"), ("openmetrics", "metrics.openmetrics.txt")],
)
def test_exposition_bytes_are_unchanged(variant: str, golden: str) -> None:
    rendered = render(sample_snapshot())
    assert getattr(rendered, variant) == expected(golden)
