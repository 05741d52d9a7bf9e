"""Review 3 L4: QAD takes the TensorRT settings of --export's export.json (config.trt_batches, config.trt_workspace_mib);
a bad one there is one line naming that file and key, and a 0 is refused as distill export refuses it (not taken for
absent, so that the default replaced it silently)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from distill.errors import DistillError
from distill.export.qad_calibration import _trt
from distill.export.qad_config import QADConfig

from ..report.test_engine_join import write_export


def _cfg(tmp_path: Path, key: str, value: Any) -> QADConfig:
    folder = write_export(tmp_path / "exp", "1")
    raw = json.loads((folder / "export.json").read_text())
    raw.setdefault("config", {})[key] = value
    (folder / "export.json").write_text(json.dumps(raw))
    return QADConfig(checkpoint="/ck/best", out_dir=str(tmp_path / "qad"), export_dir=str(folder))


def test_the_exports_settings_are_taken(tmp_path: Path) -> None:
    assert _trt(_cfg(tmp_path, "trt_batches", [2, 4, 16]), "trt_batches") == (2, 4, 16)


@pytest.mark.parametrize("key, value, problem", [
    ("trt_batches", [8, 1, 32], "min <= opt <= max"),
    ("trt_batches", [0, 8, 32], "min <= opt <= max"),
    ("trt_batches", [], "MIN,OPT,MAX"),
    ("trt_workspace_mib", "x", "integer"),
    ("trt_workspace_mib", 0, "greater than or equal to 1"),
])
def test_a_bad_setting_in_export_json_is_one_line_naming_the_file_and_key(
        tmp_path: Path, key: str, value: Any, problem: str) -> None:
    with pytest.raises(DistillError) as e:
        _trt(_cfg(tmp_path, key, value), key)
    line = str(e.value)
    assert "\n" not in line
    assert line.startswith(f"{tmp_path / 'exp' / 'export.json'}: 'config.{key}': ")
    assert problem in line and repr(value) in line
