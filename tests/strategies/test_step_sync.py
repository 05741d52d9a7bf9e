"""No host sync in a strategy's training step, shown on the CPU by fault injection.

On a GPU, reading a tensor's value on the host (``.item()``, ``int()/float()/bool()`` of a tensor, ``.cpu()``,
``.tolist()``, ``.numpy()``), a data-dependent shape (boolean-mask indexing, ``nonzero``) or a blocking
``.to(device)`` makes the host wait for every kernel queued so far, so the next step cannot be queued behind this
one. A CPU run cannot feel that wait, so these tests look for the calls instead: :class:`HostSyncs`, a
``TorchFunctionMode``, records each such call (and where in distill it was made) while a step runs. The scope is
the strategy's forward and the trainer's per-step logging (``RunLog.step``); the log points' flush reads the
values back once per ``run.log_every`` steps by design and is outside the scope.

A ``.to(device)`` must say ``non_blocking=True``: on the CPU the test cannot tell a host tensor from a device one,
so it asks that of every move in the step. Whether the host side is pinned (from pageable memory CUDA waits for the
queue anyway) only a driver can tell: :class:`FakePinning` stands in for it, at the end.
"""
from __future__ import annotations

import traceback
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

from distill.strategies import adv_cached
from tests.shapes import CLASSES, make_shapes_root
from tests.strategies.test_strategies import STRATEGIES, make_setup

# a value read back to the host (torch.where(cond) with one argument is nonzero)
READS = {"item", "__bool__", "__int__", "__float__", "__index__", "tolist", "cpu", "numpy", "nonzero", "argwhere",
         "masked_select", "unique", "unique_consecutive", "equal", "allclose", "is_nonzero", "__format__",
         "__contains__", "__array__", "__repr__", "bincount"}
# a tensor where a size is meant (its value read back to size the result): torch.full((t,), ...), x.view(t, -1), ...
SIZED = {"full", "arange", "zeros", "ones", "empty", "rand", "randn", "randint", "linspace", "new_zeros", "new_ones",
         "new_empty", "new_full", "view", "reshape", "expand", "repeat", "narrow", "split", "tensor_split"}
INDEXING = {"__getitem__", "__setitem__", "index_put", "index_put_"}
# reads of a tensor that lives on the host (the CPU cannot tell it from a device one): strategy -> call, place
HOST_READS = {"adv_cached": ["__bool__() at distill/strategies/adv_cached.py:* in mix: "
                             "self._all_clean = not bool(mask.any())"]}  # its mask, drawn by the CPU's RNG


def _mask_in(index) -> bool:
    parts = index if isinstance(index, (tuple, list)) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in parts)


def _moves(args: tuple, kwargs: dict) -> bool:
    return "device" in kwargs or any(isinstance(a, (torch.device, str, torch.Tensor)) for a in args[1:])


def _sync(func, args: tuple, kwargs: dict) -> str | None:
    """What makes ``func(*args, **kwargs)`` wait for the device, or None."""
    name = getattr(func, "__name__", "")
    if name in READS:
        return f"{name}()"
    if name in INDEXING and len(args) > 1 and _mask_in(args[1]):
        return f"boolean-mask {name}"
    if name == "where" and len(args) + len(kwargs) == 1:
        return "where(condition)"
    if name == "repeat_interleave" and kwargs.get("output_size") is None and isinstance(
            args[1] if len(args) > 1 else kwargs.get("repeats"), torch.Tensor):
        return "repeat_interleave without output_size"
    if name == "one_hot" and int(kwargs.get("num_classes", args[1] if len(args) > 1 else -1)) < 0:
        return "one_hot without num_classes"
    sizes = args[1:] if name.startswith("new_") or name in {"view", "reshape", "expand", "repeat", "narrow", "split",
                                                             "tensor_split"} else args
    flat = [a for x in sizes for a in (x if isinstance(x, (tuple, list)) else (x,))]
    if name in SIZED and any(isinstance(a, torch.Tensor) for a in flat):
        return f"a tensor as a size in {name}()"
    blocking = kwargs.get("non_blocking", next((a for a in args[2:] if isinstance(a, bool)), False)) is not True
    if (name == "cuda" or name == "to" and _moves(args, kwargs)) and blocking:
        return f"blocking .{name}(device)"
    return None


def _caller() -> str:
    """The innermost frame of the call outside the installed packages (torch, timm), as ``path:line in function:
    source line``."""
    frames = traceback.extract_stack()[:-2]  # less this function and HostSyncs.__torch_function__
    f = ([f for f in frames if "/site-packages/" not in f.filename] or frames)[-1]
    path = 'distill/' + f.filename.split('/distill/', 1)[-1] if '/distill/' in f.filename else f.filename
    return f"{path}:{f.lineno} in {f.name}: {(f.line or '').split('  #')[0].strip()}"


def _allowed(call: str, allowed: list[str]) -> bool:
    """Whether ``call`` ("what at path:line in function: source") is one of ``allowed`` (the line number as ``*``):
    the one read by name, not any read in its file."""
    what, _, where = call.partition(" at ")
    path, _, rest = where.partition(":")
    return f"{what} at {path}:* in {rest.partition(' in ')[2]}" in allowed


class HostSyncs(TorchFunctionMode):
    """Records every call that would wait for the device while it is active (``calls``: "what at where"), and
    counts all the torch calls it saw (``seen``: a scope that saw none watched nothing)."""

    def __init__(self, copies_only: bool = False) -> None:
        super().__init__()
        self.copies_only = copies_only  # only blocking .to(device): code that reads host tensors on the host
        self.calls: list[str] = []
        self.seen = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.seen += 1
        why = _sync(func, args, kwargs)
        if why is not None and (not self.copies_only or why.startswith("blocking")):
            self.calls.append(f"{why} at {_caller()}")
        return func(*args, **kwargs)

    def report(self) -> str:
        """One line per kind of call and place, with how many times it was made."""
        return "\n".join(f"{n} x {call}" for call, n in sorted(Counter(self.calls).items()))


def test_the_recorder_sees_each_kind_of_host_sync_on_a_cpu_tensor_and_nothing_else():
    """The check cannot be blind: each form is caught on a CPU tensor, and the sync-free forms the steps use are
    not."""
    t, s = torch.tensor([0.5, 2.0, 3.0]), torch.tensor(1)
    mask = t > 1
    syncs = {"int": lambda: int(s), "bool": lambda: bool(s), "if": lambda: 1 if s else 0, "float": lambda: float(s),
             "item": lambda: s.item(), "index": lambda: [1, 2][s], "tolist": lambda: t.tolist(), "cpu": lambda: t.cpu(),
             "numpy": lambda: t.numpy(), "nonzero": lambda: torch.nonzero(t), "Tensor.nonzero": lambda: t.nonzero(),
             "where(cond)": lambda: torch.where(mask), "mask read": lambda: t[mask],
             "mask write": lambda: t.clone().__setitem__(mask, 0.0), "to": lambda: t.to("cpu"),
             "to(device=)": lambda: t.to(device=torch.device("cpu")), "to(other)": lambda: t.to(s),
             "equal": lambda: torch.equal(t, t), "unique": lambda: t.unique(), "f-string": lambda: f"{s:.2f}",
             "in": lambda: 2.0 in t, "np.asarray": lambda: __import__("numpy").asarray(t),
             "full(t)": lambda: torch.full((s,), 0.0), "view(t)": lambda: t.view(s * 3),
             "new_zeros(t)": lambda: t.new_zeros(s), "bincount": lambda: torch.bincount(s.view(1)),
             "one_hot": lambda: torch.nn.functional.one_hot(s.view(1)),
             "repeat_interleave": lambda: t.repeat_interleave(torch.tensor([1, 2, 1]))}
    for what, call in syncs.items():
        with HostSyncs() as rec:
            call()
        assert len(rec.calls) == 1 and __file__.rsplit("/", 1)[-1] in rec.calls[0], (what, rec.calls)
    free = {"where(c, a, b)": lambda: torch.where(mask, t, torch.zeros_like(t)),
            "gather": lambda: t[torch.tensor([2, 0])], "to non_blocking": lambda: t.to("cpu", non_blocking=True),
            "to(dtype)": lambda: t.to(torch.float64), "slice": lambda: t[1:], "sum": lambda: (t * mask).sum(),
            "len": lambda: len(t), "one_hot(n)": lambda: torch.nn.functional.one_hot(s.view(1), num_classes=3),
            "view(int)": lambda: t.view(3, 1), "full(int)": lambda: torch.full((2,), 0.0),
            "repeat_interleave(output_size)": lambda: t.repeat_interleave(torch.tensor([1, 2, 1]), output_size=4)}
    for what, call in free.items():
        with HostSyncs() as rec:
            call()
        assert rec.calls == [], (what, rec.calls)


# ---------------------------------------------------------------------------- every step, hand-made batches
def _steps(strategy, batch, steps: int = 3) -> HostSyncs:
    """``steps`` forward/backward/SGD steps of ``strategy`` on ``batch``, the forwards recorded."""
    opt = torch.optim.SGD([p for p in strategy.parameters() if p.requires_grad], lr=1e-3)
    rec = HostSyncs()
    for _ in range(steps):
        with rec:
            out = strategy(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert rec.seen > 0 and torch.isfinite(out["loss"])
    return rec


@pytest.mark.parametrize("name", STRATEGIES)
def test_a_training_step_makes_no_host_sync(name):
    strategy, batch = make_setup(name)
    batch.host_index = batch.sample_index.clone()  # the loader's CPU index, as the trainer's batches carry it
    strategy.train().on_epoch_start(0)  # the epoch's refresh reads back by design: once an epoch, not a step
    rec = _steps(strategy, batch)
    rec.calls = [c for c in rec.calls if not _allowed(c, HOST_READS.get(name, []))]
    assert rec.calls == [], f"'{name}': host syncs in the step:\n{rec.report()}"


@pytest.mark.parametrize("name", ["shot", "sfda"])
@pytest.mark.parametrize("state", ["before_refresh", "partly_known"])
def test_a_step_on_samples_no_refresh_covered_makes_no_host_sync(name, state):
    """Before the first refresh the targets come from the batch itself; a batch that mixes refreshed samples with
    others (an index past the table, a sample the refresh left unknown) blends the two per sample."""
    strategy, batch = make_setup(name)
    batch.host_index = batch.sample_index.clone()
    strategy.train()
    if state == "partly_known":
        strategy.on_epoch_start(0)
        strategy.targets.known[0] = False
        batch.sample_index[1] = batch.host_index[1] = 10 ** 6
    rec = _steps(strategy, batch)
    assert rec.calls == [], f"'{name}' ({state}): host syncs in the step:\n{rec.report()}"


def test_sfda_takes_the_refreshed_targets_of_known_samples_bit_for_bit():
    """The per-sample blend that replaced the all-known branch returns the refreshed hard labels and weights of
    known samples unchanged, and the batch's own fused targets elsewhere."""
    strategy, batch = make_setup("sfda")
    batch.host_index = batch.sample_index.clone()
    strategy.train().on_epoch_start(0)
    strategy.targets.known[0] = False
    with torch.no_grad():
        logits = strategy.student(batch.images)
        soft, hard, weight = strategy._batch_targets(batch, logits)
        _, labels, w, _ = strategy.targets.get(batch.sample_index, batch.host_index)
        t_probs = [(batch.teacher_logits.float() / strategy.config.teacher_temperature).softmax(-1)]
        own = strategy.fuse(t_probs, logits.float().softmax(-1))[0]
        mem = strategy.memory.get(batch.sample_index, batch.host_index)[0]
        refreshed = strategy.fuse(t_probs, mem)[0]
    assert torch.equal(hard[1:], labels[1:]) and torch.equal(weight[1:], w[1:])
    assert torch.equal(soft[1:], refreshed[1:]) and torch.equal(soft[0], own[0])
    assert torch.equal(hard[0], own[0].argmax())


# ---------------------------------------------------------------------------- through the trainer
@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, Path, Path, Path]:
    """(data root, a teacher cache of it, the same with `--policy fm` views (mixup partners), a source checkpoint)."""
    from distill.data import DomainFolder
    from distill.data.view_policy import preset
    from distill.student.model import Student, default_spec, save_student
    from distill.teacher import Teacher
    from distill.teacher.cache import CacheOptions, build_cache

    root = make_shapes_root(tmp_path_factory.mktemp("sync_data"), ["red", "green"], per_class=8)
    ds = DomainFolder(root, test_fraction=0.3)
    torch.manual_seed(0)
    teacher = Teacher("distill-demo-vit", None, CLASSES, ["a photo of a {}."])
    caches = [build_cache(ds, teacher, tmp_path_factory.mktemp("sync_cache") / "c",
                          CacheOptions(views=2, seed=3, shard_size=32, policy=policy), num_workers=0, progress=False)
              for policy in (None, preset("fm", mixup=1.0))]
    torch.manual_seed(0)
    ckpt = save_student(Student(default_spec("test_resnet", CLASSES, 16)), tmp_path_factory.mktemp("src") / "best",
                        {"source_domains": ["red"]})
    return root, caches[0], caches[1], ckpt


def _trainer(world, strategy: str, out: Path):
    from distill.config import load_train_config
    from distill.train import Trainer, build
    from distill.train.adapt import adapt_recipe

    root, cache, fm_cache, ckpt = world
    optim, run = {"batch_size": 4}, {"workers": 0, "progress": False, "out": str(out)}
    if strategy == "sfda":
        recipe = adapt_recipe(ckpt, ["green"], root, caches=[cache], strategy="sfda", out=str(out), optim=optim, run=run)
    else:  # labels, and mixed views: the partner labels go through the trainer's label gate
        recipe = {"data": {"root": str(root), "source": ["red"], "target": ["green"], "test_fraction": 0.3},
                  "cache": str(fm_cache), "student": {"arch": "test_resnet", "input_size": 16},
                  "strategy": {"name": strategy}, "optim": optim, "run": run}
    return Trainer(build(load_train_config(None, base=recipe)))


@pytest.mark.parametrize("strategy", ["sfda", "fm"])
def test_training_steps_through_the_trainer_make_no_host_sync(world, tmp_path, strategy):
    """The trainer's own batches (device tensors beside the loader's CPU index, every cache's rows) through
    ``Trainer.train_step``: the strategy's forward and the per-step logging wait for nothing, and
    ``Trainer.make_batch`` (which reads the loader's and the cache's host tensors on the host, by design) makes no
    blocking copy to the device. The non-finite gradient check is off, as on CUDA (distill.train.guard: on a CPU it
    reads once a step by design)."""
    from distill.train.logger import RunLog

    trainer = _trainer(world, strategy, tmp_path / "run")
    trainer.guard.enabled = False
    strategy_module, log = trainer.strategy, RunLog(tmp_path / "run", trainer.setup.device, True, False, 0)
    strategy_module.on_epoch_start(0)  # sfda's refresh reads back by design: once an epoch, not a step
    step, batches = HostSyncs(), HostSyncs(copies_only=True)
    for rec, owner, name in ((step, strategy_module, "forward"), (step, log, "step"), (batches, trainer, "make_batch")):
        def recorded(*args, _real=getattr(owner, name), _rec=rec, **kwargs):
            with _rec:
                return _real(*args, **kwargs)
        setattr(owner, name, recorded)
    strategy_module.train()
    for steps, (pixels, labels, domain, index, view) in enumerate(trainer.loader(0, 0), 1):
        batch = trainer.make_batch(pixels, labels, domain, index, view)
        assert strategy != "fm" or batch.partner_labels is not None
        trainer.train_step(batch, log)
        if steps == 3:
            break
    log.flush()
    log.close()
    assert trainer.global_step == 3 and step.seen > 0 and batches.seen > 0
    assert step.calls == [], f"host syncs in {strategy}'s training step:\n{step.report()}"
    assert batches.calls == [], f"blocking copies in the trainer's {strategy} batches:\n{batches.report()}"


# ---------------------------------------------------------------------------- pinned host memory
class FakePinning:
    """CUDA's pinned memory on a CPU-only run, for :func:`distill.utils.transfer.to_device`'s callers: pinning needs
    a driver (``pin_memory()`` raises "Found no NVIDIA driver" here), so ``Tensor.pin_memory`` returns a copy marked
    pinned, ``Tensor.is_pinned`` reads the mark, and a ``.to(cuda)`` records (pinned, non_blocking, shape) and
    leaves the tensor where it is (the CPU), so the code after it runs on."""

    def __init__(self, monkeypatch) -> None:
        self.copies: list[tuple[bool, bool, tuple[int, ...]]] = []
        self.pinned_from: list[int] = []  # id() of each tensor pinned
        real_to = torch.Tensor.to

        def pin_memory(t, *args):
            self.pinned_from.append(id(t))
            return self.mark(t.clone())

        def to(t, *args, **kwargs):
            device = kwargs.get("device", args[0] if args else None)
            if isinstance(device, (torch.device, str)) and torch.device(device).type == "cuda":
                self.copies.append((t.is_pinned(), kwargs.get("non_blocking") is True, tuple(t.shape)))
                return t
            return real_to(t, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
        monkeypatch.setattr(torch.Tensor, "is_pinned", lambda t: getattr(t, "_fake_pinned", False))
        monkeypatch.setattr(torch.Tensor, "to", to)

    @staticmethod
    def mark(t: torch.Tensor) -> torch.Tensor:
        t._fake_pinned = True  # type: ignore[attr-defined]
        return t

    def unpinned(self) -> list[tuple[bool, bool, tuple[int, ...]]]:
        return [c for c in self.copies if not (c[0] and c[1])]


@pytest.mark.parametrize("strategy", ["sfda", "fm"])
def test_every_host_tensor_the_trainer_copies_to_cuda_goes_from_pinned_memory(world, tmp_path, monkeypatch, strategy):
    """On CUDA a copy from pageable host memory first waits for the GPU's queue, ``non_blocking`` or not. The
    DataLoader pins what it yields (``pin_memory=True`` on a CUDA run: marked pinned here), but the teacher cache's
    rows (read from its memory map), the gated labels and the mixed views' partner labels and lambdas are made on
    the host after it: before, they went to the device from pageable memory (the copies below unpinned). Now each is
    pinned first, and the loader's tensors, already pinned, are not copied again."""
    trainer = _trainer(world, strategy, tmp_path / "run")
    pixels, labels, domain, index, view = (FakePinning.mark(t) for t in next(iter(trainer.loader(0, 0))))
    pinning = FakePinning(monkeypatch)
    trainer.setup.device = torch.device("cuda", 0)  # what make_batch copies to (the tensors stay on the CPU)
    batch = trainer.make_batch(pixels, labels, domain, index, view)
    assert batch.teacher_logits is not None and (strategy != "fm" or batch.partner_labels is not None)
    n = len(index)
    shapes = sorted(s for _, _, s in pinning.copies)
    cached = {(n, trainer.columns.logits(torch.zeros(1, len(CLASSES))).shape[1])}  # the cache's logits rows
    assert len(pinning.copies) >= 5 and cached <= set(shapes), shapes  # pixels, domain, index, view, logits, ...
    assert pinning.unpinned() == [], f"copies to CUDA from pageable memory (pinned, non_blocking, shape): " \
                                     f"{pinning.unpinned()}"
    assert not {id(t) for t in (pixels, labels, domain, index, view)} & set(pinning.pinned_from)  # no second pin


def test_adv_cached_copies_its_views_and_its_mask_from_pinned_memory(monkeypatch):
    """adv_cached's own batch extras (its cached adversarial views: [B, 3, H, W] bytes a step, from a memory map)
    and the per-step mask it draws on the host went to the device from pageable memory."""
    from distill.strategies import BatchSource

    strategy, batch = make_setup("adv_cached")
    n, size, classes = len(batch.images), tuple(strategy.student.spec.input_size), batch.teacher_logits.shape[1]

    class Views:  # the cache's duck types: rows read by index, as from its memory map (pageable)
        def choose(self, index, epoch, seed):
            return torch.zeros_like(index)

        def lookup(self, index, view):
            return {"pixels": torch.zeros((len(index), 3, *size), dtype=torch.uint8),
                    "logits": torch.zeros(len(index), classes)}

    pinning = FakePinning(monkeypatch)
    extras = strategy.batch_extras(BatchSource(sample_index=torch.arange(n), view=torch.zeros(n, dtype=torch.long),
                                               epoch=0, seed=0, device=torch.device("cuda", 0),
                                               memory_format=torch.contiguous_format, caches=[Views()],
                                               adversarial=Views()))
    assert {"adv_pixels", "adv_teacher_logits", "adv_clean_teacher_logits"} <= extras.keys()
    assert sorted(s for _, _, s in pinning.copies) == sorted([(n, 3, *size), (n, classes), (n, classes)])
    assert pinning.unpinned() == [], pinning.copies
    # the mask mix() draws on the host each step goes the same way, to where the images are
    moved: list[tuple[torch.dtype, torch.device]] = []
    real = adv_cached.to_device
    monkeypatch.setattr(adv_cached, "to_device", lambda t, device: moved.append((t.dtype, device)) or real(t, device))
    batch.extras = extras
    strategy.mix(batch)
    assert moved == [(torch.bool, batch.images.device)]


def test_to_device_pins_a_pageable_host_tensor_bound_for_cuda_once_and_nothing_else(monkeypatch):
    from distill.utils.transfer import to_device

    pinning, cuda = FakePinning(monkeypatch), torch.device("cuda", 0)
    pageable, pinned = torch.zeros(3), FakePinning.mark(torch.zeros(2))
    to_device(pageable, cuda)
    to_device(pinned, cuda)
    assert pinning.copies == [(True, True, (3,)), (True, True, (2,))] and pinning.pinned_from == [id(pageable)]
    assert to_device(pageable, torch.device("cpu")) is pageable and len(pinning.pinned_from) == 1  # the CPU: as it is


def test_the_epoch_hooks_clean_batches_come_pinned_from_the_loader_on_cuda(world, tmp_path, monkeypatch):
    """``Trainer.clean_batches`` (sfda's refresh reads every training image through it once an epoch) asked its
    DataLoader for no pinned memory, so on CUDA every batch's pixels went from pageable memory; now torch's pinning
    thread pins them, as the training loader's."""
    from distill.train import trainer as trainer_module

    trainer, asked = _trainer(world, "sfda", tmp_path / "run"), []
    real = trainer_module.WorkerLoader

    def loader(*args, pin_memory=False, **kwargs):
        asked.append(pin_memory)
        return real(*args, **kwargs)  # the CPU cannot pin: the batches as they are

    monkeypatch.setattr(trainer_module, "WorkerLoader", loader)
    FakePinning(monkeypatch)
    trainer.setup.device = torch.device("cuda", 0)
    next(trainer.clean_batches(batch_size=4))
    assert asked == [True]
