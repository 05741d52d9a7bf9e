"""The typed configs a user builds directly (README "Python API") fail with one-line DistillErrors, as the loaders do:
pydantic models (distill/validation.py) and the cache build's dataclasses."""
from __future__ import annotations

import copy
import pickle

import pytest

from distill.config import OptimConfig, RunConfig, TrainConfig, load_train_config
from distill.errors import DistillError
from distill.export.config import ExportConfig
from distill.export.qad_config import QADConfig
from distill.recipes import CONFIGS_DIR, load_recipe


@pytest.mark.parametrize("make, line", [
    (lambda: ExportConfig(precisions="fp8"), r"^precisions: unknown precision\(s\) fp8; .*\(got 'fp8'\)$"),
    (lambda: QADConfig(checkpoint="c", out_dir="o", epochs=0), r"^epochs: Input should be greater .* \(got 0\)$"),
    (lambda: QADConfig(checkpoint="c", out_dir="o", nope=1), r"^qad config: unknown key 'nope'$"),
    (lambda: OptimConfig(batch_size=0), r"^OptimConfig: 'batch_size': Input should be greater .* \(got 0\)$"),
    (lambda: TrainConfig(), r"^TrainConfig: missing required key 'data'$"),
])
def test_constructing_a_config_badly_is_one_line(make, line):
    with pytest.raises(DistillError, match=line):
        make()


def test_a_config_still_pickles_copies_and_loads_sections_with_their_path():
    """The one-line constructor leaves pickling, model_copy and the loaders' --set naming alone."""
    qad = QADConfig(checkpoint="c", out_dir="o", epochs=2)
    assert pickle.loads(pickle.dumps(qad)) == qad and copy.deepcopy(qad) == qad
    assert qad.model_copy(update={"epochs": 3}).epochs == 3
    kd = load_recipe("kd")
    assert pickle.loads(pickle.dumps(kd)) == kd
    with pytest.raises(DistillError, match=r"^--set optim\.epochs=0: 'optim\.epochs': Input should be greater"):
        load_recipe("kd", {"optim.epochs": 0})


@pytest.mark.parametrize("key", ["optim.epochs", "run.seed", "data.split_seed", "optim.lr", "strategy.temperature"])
def test_a_bool_is_no_number(key):
    """YAML's true (and Python's True) is not 1: pydantic's lax mode took it for an int (and a float)."""
    with pytest.raises(DistillError, match=rf"--set {key}=true: .*Input should be a valid (integer|number), not a bool"):
        load_recipe("kd", {key: True})
    with pytest.raises(DistillError, match=r"Input should be a valid integer, not a bool"):
        RunConfig(out="r", seed=False)
    with pytest.raises(DistillError, match=r"^eval_count: Input should be a valid integer, not a bool"):
        ExportConfig.from_options({"eval_count": True})
    with pytest.raises(DistillError, match=r"^epochs: Input should be a valid integer, not a bool"):
        QADConfig(checkpoint="c", out_dir="o", epochs=True)


def test_numbers_still_arrive_as_yaml_ints_set_strings_and_ints_for_floats():
    cfg = load_train_config(CONFIGS_DIR / "kd.yaml", ["optim.epochs=3", "run.seed=7", "optim.lr=1", "optim.grad_clip=2"])
    assert (cfg.optim.epochs, cfg.run.seed, cfg.optim.lr, cfg.optim.grad_clip) == (3, 7, 1.0, 2.0)
    assert load_recipe("kd", {"optim.warmup_epochs": 2, "run.deterministic": False}).optim.warmup_epochs == 2.0
    assert ExportConfig.from_options({"eval_count": 0, "calib_count": 8}).calib_count == 8
