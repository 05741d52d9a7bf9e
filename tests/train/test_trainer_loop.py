"""The step loop keeps a GPU fed: no host sync between steps, one persistent DataLoader, NaN still caught.

Counting Python-level tensor-to-host conversions (``float(t)``, ``int(t)``, ``bool(t)``,
``t.item()``, ``t.tolist()``) between two optimizer steps stands in for counting GPU stalls:
each of them waits for the device on CUDA.
"""
from __future__ import annotations

import os
import sys

import pytest
import torch

from distill.config import load_train_config
from distill.errors import DistillError
from tests.shapes import make_shapes_root


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_shapes_root(tmp_path_factory.mktemp("loop"), ["red", "green"], per_class=8)


def _cfg(root, out, **run):
    return load_train_config(None, base={
        "data": {"root": str(root), "source": ["red"], "test_fraction": 0.25}, "strategy": {"name": "erm"},
        "student": {"arch": "test_resnet", "input_size": 16},
        "optim": {"epochs": 2, "batch_size": 4, "lr": 0.01, "warmup_epochs": 0},
        "run": {"out": str(out), "workers": 0, "progress": False, "device": "cpu", **run}})


def test_no_host_sync_between_steps(root, tmp_path, monkeypatch):
    from distill.train import Trainer, build

    trainer = Trainer(build(_cfg(root, tmp_path / "run", log_every=1000)))
    syncs: list[str] = []
    for name in ("__float__", "__int__", "__bool__", "item", "tolist"):
        real = getattr(torch.Tensor, name)

        def spy(self, *a, _real=real, _name=name, **k):
            caller = sys._getframe(1).f_code.co_filename
            # distill's own code (torch's CPU Adam calls .item() itself); the gradient guard reads one flag per
            # step on a CPU only, where kernels are synchronous anyway (it is off on CUDA: tests/train/test_guard.py)
            if f"{os.sep}distill{os.sep}" in caller and not caller.endswith(f"train{os.sep}guard.py"):
                syncs.append(f"{_name} {caller}:{sys._getframe(1).f_lineno}")
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, spy)
    per_step: list[int] = []
    step = trainer.optimizer.step

    def counting_step(*a, **k):
        per_step.append(len(syncs))
        return step(*a, **k)

    monkeypatch.setattr(trainer.optimizer, "step", counting_step)
    trainer.fit()
    steps = 2 * trainer.steps_per_epoch
    assert len(per_step) == steps >= 6
    within = [b - a for a, b in zip(per_step, per_step[1:])]
    # between two steps of one epoch (no log point, no epoch end in between): not a single host sync
    inner = [n for i, n in enumerate(within) if (i + 1) % trainer.steps_per_epoch]
    assert inner and all(n == 0 for n in inner), (within, syncs)


def test_nan_is_caught_at_the_next_log_point_with_the_same_message(root, tmp_path, monkeypatch):
    import distill.strategies.erm as erm

    calls = {"n": 0}
    real = erm.ERM.forward

    def forward(self, batch):
        out = real(self, batch)
        calls["n"] += 1
        if calls["n"] == 2:  # epoch 1, step index 1
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(erm.ERM, "forward", forward)
    from distill.train import train
    from distill.train.guard import GradGuard

    # the log-point check as it runs on CUDA, where the gradient guard is off (on a CPU the guard would skip the step)
    monkeypatch.setattr(GradGuard, "after_backward", lambda self, epoch, step, recompute, out: (out, True))
    cfg = _cfg(root, tmp_path / "run", log_every=3, save_every=2)
    with pytest.raises(DistillError, match=r"^loss is nan at epoch 1 step 1: lower optim.lr or enable optim.grad_clip$"):
        train(cfg)
    assert calls["n"] == 2, "flushed before the checkpoint at step 2: the NaN step is the last one run"
    assert not (tmp_path / "run" / "checkpoints" / "last.json").exists(), "a NaN-poisoned checkpoint was written"


def test_one_persistent_loader_serves_every_epoch_exactly(root, tmp_path):
    """workers > 0: the same DataLoader (and worker processes) each epoch, with the batches of epoch_items."""
    from torch.utils.data import DataLoader

    from distill.train import Trainer, TrainImages, build, epoch_items

    trainer = Trainer(build(_cfg(root, tmp_path / "run", workers=1)))
    s = trainer.setup
    spec = trainer.strategy.student.spec
    B = s.cfg.optim.batch_size
    first = trainer.loader(0, 0)
    assert first.persistent_workers and first.num_workers == 1
    seen_workers = None
    for epoch, skip in ((0, 0), (1, 1), (2, 0)):
        loader = trainer.loader(epoch, skip)
        assert loader is first
        got = list(loader)
        if seen_workers is None:
            seen_workers = loader._iterator._workers  # the worker processes, alive across epochs
        assert loader._iterator._workers is seen_workers
        items = epoch_items(trainer.train_samples, trainer.domain_index, s.views.count, s.cfg.run.seed, epoch)
        items = items[skip * B: trainer.steps_per_epoch * B]
        want = list(DataLoader(TrainImages(s.dataset, items, spec.input_size, spec.interpolation, s.views.augment,
                                           s.views.seed, uint8=True), batch_size=B))
        assert len(got) == len(want) == trainer.steps_per_epoch - skip
        for g, w in zip(got, want):
            for a, b in zip(g, w):
                assert torch.equal(a, b)


def test_channels_last_only_on_cuda(root, tmp_path):
    from distill.train import Trainer, build

    trainer = Trainer(build(_cfg(root, tmp_path / "run")))
    assert trainer.memory_format == torch.contiguous_format  # CPU: NCHW, the layout the exact resume was proven on
    conv = next(p for p in trainer.strategy.parameters() if p.dim() == 4)
    assert conv.is_contiguous()


def test_batches_travel_as_uint8_and_become_the_same_floats_on_the_device(root, tmp_path):
    """Workers hand over uint8 (a quarter of the bytes to pin and copy); ``_batch`` makes the floats
    that ``to_tensor`` would have made in the worker, bit for bit."""
    from torch.utils.data import DataLoader

    from distill.train import Trainer, TrainImages, build

    trainer = Trainer(build(_cfg(root, tmp_path / "run")))
    s = trainer.setup
    spec = trainer.strategy.student.spec
    pixels, labels, domain, index, view = next(iter(trainer.loader(0, 0)))
    assert pixels.dtype == torch.uint8
    batch = trainer.make_batch(pixels, labels, domain, index, view)
    items = trainer.loader(0, 0).dataset.items
    floats = TrainImages(s.dataset, items, spec.input_size, spec.interpolation, s.views.augment, s.views.seed)
    ref = next(iter(DataLoader(floats, batch_sampler=[trainer.epoch_batches.batches[0]])))[0]
    assert ref.dtype == torch.float32 and torch.equal(batch.pixels, ref)


def test_sgd_without_momentum_trains(root, tmp_path):
    """optim.momentum 0 is plain SGD (torch refuses Nesterov without momentum: it was a raw ValueError)."""
    from distill.train import Trainer, build

    cfg = _cfg(root, tmp_path / "run")
    cfg = cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"optimizer": "sgd", "momentum": 0.0,
                                                                        "epochs": 1})})
    trainer = Trainer(build(cfg))
    before = [p.detach().clone() for p in trainer.strategy.parameters()]
    trainer.fit()
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.strategy.parameters()))
    with pytest.raises(Exception, match="momentum"):
        load_train_config(None, base={**cfg.model_dump(mode="json"), "optim": {"optimizer": "sgd", "momentum": 1.5}})


def test_the_persistent_workers_are_gone_when_fit_returns(root, tmp_path):
    """Left to interpreter exit, torch 2.11 joined each persistent, pinned worker for 5 s: an H200 run with
    15 workers sat 75 s after its last line. fit() stops them itself, while the interpreter is healthy."""
    import multiprocessing

    from distill.train import Trainer, build

    trainer = Trainer(build(_cfg(root, tmp_path / "run", workers=2)))
    before = {p.pid for p in multiprocessing.active_children()}  # other tests' loaders may still live
    started: list[int] = []
    make = trainer._make_train_loader

    def spying_make():
        loader = make()
        started.extend(w.pid for w in iter(loader)._workers)  # the persistent iterator the epochs reuse
        return loader

    trainer._make_train_loader = spying_make
    trainer.fit()
    assert len(started) == 2 and not set(started) & before
    assert not set(started) & {p.pid for p in multiprocessing.active_children()}
