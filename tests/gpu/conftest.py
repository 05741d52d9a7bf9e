"""What every tests/gpu module starts from."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A 3-domain shapes dataset (red, green, blue; 3 classes x 8 images) and a one-template file, per module."""
    from tests.shapes import make_shapes_root

    w = tmp_path_factory.mktemp("gpu")
    make_shapes_root(w / "data", ["red", "green", "blue"], per_class=8)
    (w / "t.txt").write_text("a photo of a {}.\n")
    return w
