"""Training through a compressed (jpeg) pixel store: it runs and says so; it is lossy, so not byte-identical to raw."""
from __future__ import annotations

import shutil

import torch

from distill.config import load_train_config
from tests.train.test_trainer import _config, _weights, _write


def test_training_from_a_jpeg_pixel_store(tmp_path, tiny_root, tiny_cache, capsys):
    from distill.data import DomainFolder
    from distill.teacher.cache import build_pixel_store
    from distill.train import train

    cache = tmp_path / "cache_jpeg"
    shutil.copytree(tiny_cache, cache)
    build_pixel_store(DomainFolder(tiny_root, test_fraction=0.3), cache, (16, 16), "bilinear", codec="jpeg",
                      quality=90, num_workers=0, progress=False)
    cfg = _config(tiny_root, cache, tmp_path / "run", optim__epochs=1)
    cfg["run"]["workers"] = 1  # decoded in a DataLoader worker, as in real runs
    summary = train(load_train_config(_write(tmp_path, cfg)))
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("input: "))
    assert line.startswith("input: cached pixels 16x16 bilinear, jpeg q90") and "lossy" in line
    assert all(torch.isfinite(t.float()).all() for t in _weights(tmp_path / "run").values())
    assert all(0.0 <= a <= 1.0 for a in summary.test_acc.values())
