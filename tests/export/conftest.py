"""Session fixtures: a tiny 3-domain dataset, a 30-step test_resnet run, and one full export of it."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import synthetic  # noqa: E402


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic.make_tree(tmp_path_factory.mktemp("data") / "tiny")


@pytest.fixture(scope="session")
def run_ckpt(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RUN_DIR/checkpoints/best of a test_resnet trained 30 steps on 'clean' + 'dark'."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return synthetic.make_run_dir(tiny_root, tmp_path_factory.mktemp("run") / "run")
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def export_dir(run_ckpt: Path, tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fp32 + fp16 + int8 (both flavours) with the default (dynamo) exporter and the default
    max_drop (1 point): this student's int8 models meet it without a fallback."""
    from distill.export import ExportConfig, export_checkpoint

    out = tmp_path_factory.mktemp("export") / "exp"
    export_checkpoint(run_ckpt, out, ExportConfig(
        precisions=("fp32", "fp16", "int8"), data_root=str(tiny_root), int8_flavour="both",
        target_domains=("noisy",), calib_count=64, latency_iters=3, threads=1), log=lambda s: None)
    return out


@pytest.fixture(scope="session")
def tiny_cache(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-view teacher cache of the tiny tree, split as the run_ckpt run splits it."""
    import torch

    from distill.data.folder import DomainFolder
    from distill.teacher import Teacher
    from distill.teacher.cache import CacheOptions, build_cache

    torch.manual_seed(0)
    folder = DomainFolder(tiny_root, test_fraction=0.3, split_seed=0)
    teacher = Teacher("distill-demo-vit", None, folder.classes, ["a photo of a {}."])
    return build_cache(folder, teacher, tmp_path_factory.mktemp("cache") / "c", CacheOptions(views=1, seed=0),
                       num_workers=0, progress=False)
