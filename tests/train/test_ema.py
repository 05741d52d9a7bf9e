"""optim.ema_decay: an EMA of the student's weights (timm's ModelEmaV3) is evaluated, selected and saved as best."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from distill.config import load_train_config
from distill.utils.state import load_state


def _cfg(root, cache, out, **optim) -> dict:
    return {"data": {"root": str(root), "source": ["red", "green"], "test_fraction": 0.3},
            "cache": str(cache), "student": {"arch": "test_resnet", "input_size": 16},
            "strategy": {"name": "kd"},
            "optim": {"epochs": 1, "batch_size": 8, "lr": 0.01, "warmup_epochs": 0.5, **optim},
            "run": {"out": str(out), "workers": 0, "progress": False, "seed": 1, "device": "cpu"}}


def test_the_best_checkpoint_holds_the_ema_weights_not_the_raw_ones(tiny_root, tiny_cache, tmp_path):
    from distill.train import train

    run = tmp_path / "ema"
    summary = train(load_train_config(None, base=_cfg(tiny_root, tiny_cache, run, ema_decay=0.5)))
    assert summary.ema_decay == 0.5 and json.loads((run / "summary.json").read_text())["ema_decay"] == 0.5
    last = json.loads((run / "checkpoints" / "last.json").read_text())["dir"]
    raw = load_file(str(run / "checkpoints" / last / "model.safetensors"))  # the trained (raw) student
    best = load_file(str(run / "checkpoints" / "best" / "model.safetensors"))  # one epoch: selected = last
    ema = {k[len("module."):]: v for k, v in load_state(run / "checkpoints" / last / "train_state")["ema"].items()}
    assert best.keys() == raw.keys() == ema.keys()
    assert all(torch.equal(best[k], ema[k]) for k in best), "best/ is the EMA student"
    floats = [k for k in best if best[k].is_floating_point()]
    assert any(not torch.equal(best[k], raw[k]) for k in floats), "the EMA weights differ from the raw ones"


def test_ema_off_by_default_leaves_the_summary_as_it_was(tiny_root, tiny_cache, tmp_path):
    from distill.train import Trainer, build
    from distill.train.ema import NoEma

    cfg = load_train_config(None, base=_cfg(tiny_root, tiny_cache, tmp_path / "raw"))
    assert cfg.optim.ema_decay is None
    trainer = Trainer(build(cfg))
    assert type(trainer.ema) is NoEma and "ema" not in trainer._state()


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1])
def test_ema_decay_must_be_between_0_and_1(tiny_root, tiny_cache, tmp_path, bad):
    from distill.errors import DistillError

    with pytest.raises(DistillError, match="optim.ema_decay"):
        load_train_config(None, base=_cfg(tiny_root, tiny_cache, tmp_path / "x", ema_decay=bad))


@pytest.mark.parametrize("ema_decay", [None, 0.5])
def test_evaluation_takes_rank_0s_buffers_of_the_student_it_scores(tiny_root, tiny_cache, tmp_path, monkeypatch,
                                                                    ema_decay):
    """Under DDP without SyncBatchNorm (gloo) each rank's BN statistics are its own after its last local batch, and
    every rank scores its share of the splits: each evaluation first takes rank 0's buffers (what the checkpoint
    holds) into the student it scores, the EMA student when there is one. (runtime.take_main_buffers itself:
    tests/strategies/test_sample_targets.py, two gloo ranks.)"""
    import distill.train.trainer as trainer_module
    from distill.train import train
    from distill.train.ema import StudentEma

    scored: list[torch.nn.Module] = []
    emas: list[torch.nn.Module] = []
    real, real_init = trainer_module.take_main_buffers, StudentEma.__init__
    monkeypatch.setattr(trainer_module, "take_main_buffers", lambda m: scored.append(m) or real(m))
    monkeypatch.setattr(StudentEma, "__init__", lambda self, *a: real_init(self, *a) or emas.append(self.student))
    optim = {} if ema_decay is None else {"ema_decay": ema_decay}
    train(load_train_config(None, base=_cfg(tiny_root, tiny_cache, tmp_path / "run", **optim)))
    assert len(scored) == 1, "one evaluation (one epoch), one take"
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in scored[0].modules()), "test_resnet has BatchNorm"
    assert [scored[0] is m for m in emas] == ([] if ema_decay is None else [True])
