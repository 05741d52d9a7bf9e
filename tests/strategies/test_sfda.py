"""Source-free adaptation: no source file is opened, pseudo-labels refresh each epoch, teachers are fused
by reliability, and `distill adapt` runs end to end (sfda, shot, teacher_pl; one or two caches)."""
from __future__ import annotations

import builtins
import json
import math
from pathlib import Path

import pytest
import torch

from distill.cli import main as cli
from distill.errors import DistillError
from distill.strategies._pseudo import centroid_labels, fuse_teachers, knn_smooth
from distill.strategies.losses import information_maximization
from tests.shapes import CLASSES, make_shapes_root

DOMAINS = ["blue", "green", "red"]
SOURCE, TARGET = "red", "green"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_shapes_root(tmp_path_factory.mktemp("sfda_data"), DOMAINS, per_class=10)


def _cache(root: Path, out: Path, seed: int) -> Path:
    from distill.data import DomainFolder
    from distill.teacher import Teacher
    from distill.teacher.cache import CacheOptions, build_cache

    torch.manual_seed(seed)  # random-weights demo teachers: seed 0 and seed 1 are two different teachers
    ds = DomainFolder(root, test_fraction=0.3)
    teacher = Teacher("distill-demo-vit", None, ds.classes, ["a photo of a {}."])
    return build_cache(ds, teacher, out, CacheOptions(views=2, seed=3, shard_size=32), num_workers=0, progress=False)


@pytest.fixture(scope="module")
def caches(root, tmp_path_factory) -> list[Path]:
    base = tmp_path_factory.mktemp("sfda_caches")
    return [_cache(root, base / "a", 0), _cache(root, base / "b", 1)]


@pytest.fixture(scope="module")
def source_ckpt(tmp_path_factory) -> Path:
    """Stands for RUN/checkpoints/best of a `distill train` run on the source domain."""
    from distill.student.model import Student, default_spec, save_student

    torch.manual_seed(0)
    student = Student(default_spec("test_resnet", CLASSES, 16))
    return save_student(student, tmp_path_factory.mktemp("src") / "best", {"source_domains": [SOURCE]})


def _adapt_args(root, caches, ckpt, out, strategy="sfda", epochs=2) -> list[str]:
    args = ["adapt", "--source-checkpoint", str(ckpt), "--target", TARGET, "--data", str(root),
            "--strategy", strategy, "--out", str(out), "--set", f"optim.epochs={epochs}", "--set", "optim.batch_size=8",
            "--set", "run.workers=0", "--set", "run.progress=false"]
    for c in caches:
        args += ["--cache", str(c)]
    return args


# ---------------------------------------------------------------------------- units
def test_fusion_weights_follow_reliability():
    """A teacher that agrees with the others and is sure gets the weight; a contrarian or flat one does not."""
    C = 4
    sure0 = torch.tensor([[0.94, 0.02, 0.02, 0.02]])  # says class 0
    sure1 = torch.tensor([[0.02, 0.94, 0.02, 0.02]])  # says class 1
    flat = torch.full((1, C), 1 / C)
    student = torch.tensor([[0.7, 0.1, 0.1, 0.1]])  # the adapting model leans to class 0

    fused, w = fuse_teachers([sure0, sure1], anchor=student)
    assert w.shape == (1, 2) and torch.allclose(w.sum(1), torch.ones(1))
    assert w[0, 0] > 0.8, f"the teacher that agrees with the student should dominate, got {w}"
    assert fused.argmax() == 0
    # symmetric: flip the student and the weights flip
    _, w_flip = fuse_teachers([sure0, sure1], anchor=student[:, [1, 0, 2, 3]])
    assert torch.allclose(w_flip, w.flip(1), atol=1e-6)
    # agreement among teachers, no anchor: the two that agree outvote the third
    _, w3 = fuse_teachers([sure0, sure0.clone(), sure1])
    assert w3[0, 2] < 0.05 and torch.allclose(w3[0, 0], w3[0, 1])
    # equal agreement: the sure teacher beats the flat (random-weights-like) one
    _, w_flat = fuse_teachers([sure0, flat], anchor=student)
    assert w_flat[0, 0] > 0.9
    # sharpness 0 is the plain mean; larger sharpness concentrates on the reliable teacher
    f0, w0 = fuse_teachers([sure0, sure1], anchor=student, sharpness=0.0)
    assert torch.allclose(w0, torch.full((1, 2), 0.5)) and torch.allclose(f0, (sure0 + sure1) / 2)
    _, w_sharp = fuse_teachers([sure0, sure1], anchor=student, sharpness=4.0)
    assert w_sharp[0, 0] > w[0, 0]
    # one teacher, no anchor: itself, weight 1
    f1, w1 = fuse_teachers([sure1])
    assert torch.equal(f1, sure1) and torch.equal(w1, torch.ones(1, 1))
    # per sample: each row is weighted on its own
    f2, w2 = fuse_teachers([torch.cat([sure0, sure0]), torch.cat([sure1, sure1])],
                           anchor=torch.cat([student, student[:, [1, 0, 2, 3]]]))
    assert w2[0, 0] > 0.8 and w2[1, 1] > 0.8


def test_sfda_teacher_student_weight_follows_certainty():
    """adaptive_weight: a flat teacher yields to a sure student; a sure teacher overrides an unsure student."""
    from distill.strategies import create_strategy
    from distill.strategies.base import StrategyContext
    from distill.student.model import Student, default_spec

    student = Student(default_spec("test_resnet", CLASSES, 16))
    ctx = StrategyContext(3, CLASSES)
    sure_a, sure_b = torch.tensor([[0.96, 0.02, 0.02]]), torch.tensor([[0.02, 0.96, 0.02]])
    flat, unsure_b = torch.tensor([[0.4, 0.3, 0.3]]), torch.tensor([[0.3, 0.4, 0.3]])
    adaptive = create_strategy("sfda", student, {"teacher_weight": 0.7}, ctx)
    fixed = create_strategy("sfda", student, {"teacher_weight": 0.7, "adaptive_weight": False}, ctx)
    assert adaptive.fuse([flat], sure_b)[0].argmax() == 1, "a flat teacher should yield to a sure student"
    assert fixed.fuse([flat], sure_b)[0].argmax() == 1  # (also here: 0.7 * 0.4 < 0.3 * 0.96 + 0.7 * 0.3)
    assert adaptive.fuse([sure_a], unsure_b)[0].argmax() == 0
    f_adapt, f_fixed = adaptive.fuse([flat], sure_b)[0], fixed.fuse([flat], sure_b)[0]
    assert f_adapt[0, 1] > f_fixed[0, 1] + 0.2, "adaptive weighting should lean much further to the sure student"
    assert torch.allclose(fixed.fuse([sure_a], sure_b)[0], 0.7 * sure_a + 0.3 * sure_b)


def test_information_maximization_and_pseudo_label_helpers():
    C = 3
    confident_diverse = torch.eye(C) * 20
    loss, ent, div = information_maximization(confident_diverse)
    assert loss < 1e-3 and ent < 1e-3 and abs(div) < 1e-3
    collapsed = torch.zeros(C, C)
    collapsed[:, 0] = 20
    _, _, div_c = information_maximization(collapsed)
    assert div_c > math.log(C) - 1e-3, "all predictions on one class: diversity term at its maximum log C"

    # two tight clusters; predictions mislabel one member of cluster 0 -> centroids fix it
    feats = torch.tensor([[1.0, 0.0], [0.98, 0.1], [0.97, -0.1], [0.0, 1.0], [0.1, 0.98], [-0.1, 0.97]])
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.2, 0.8], [0.1, 0.9], [0.1, 0.9], [0.2, 0.8]])
    assert centroid_labels(feats, probs).tolist() == [0, 0, 0, 1, 1, 1]
    smoothed = knn_smooth(feats, probs, k=3)
    assert smoothed[2].argmax() == 0 and torch.allclose(smoothed.sum(1), torch.ones(6))
    assert torch.equal(knn_smooth(feats, probs, k=1), probs)


# ---------------------------------------------------------------------------- through the trainer
def test_sfda_never_opens_a_source_domain_file(root, caches, source_ckpt, tmp_path, monkeypatch):
    """Record every file opened (builtins.open: PIL decodes through it) and every load_rgb during adaptation."""
    import distill.data.images as images
    import distill.evaluate as evaluate
    import distill.train.data as train_data

    opened: list[str] = []
    real_open, real_load = builtins.open, images.load_rgb

    def spy_open(file, *a, **k):
        opened.append(str(file))
        return real_open(file, *a, **k)

    def spy_load(path):
        opened.append(str(path))
        return real_load(path)

    monkeypatch.setattr(builtins, "open", spy_open)
    for module in (images, train_data, evaluate):
        monkeypatch.setattr(module, "load_rgb", spy_load)
    assert cli(_adapt_args(root, caches[:1], source_ckpt, tmp_path / "run", epochs=1)) == 0
    monkeypatch.undo()
    source_dir = str(root / SOURCE)
    assert not [p for p in opened if p.startswith(source_dir)], "a source-domain image was opened"
    target_reads = [p for p in opened if p.startswith(str(root / TARGET))]
    assert target_reads, "the spy saw no target image either: it is not watching the reads"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["trained_on"] == [TARGET] and set(summary["test_acc"]) == {TARGET}


def test_pseudo_labels_refresh_every_epoch_and_survive_resume(root, caches, source_ckpt, tmp_path, monkeypatch):
    from distill.strategies.sfda import SFDA

    calls: list[tuple[int, int]] = []
    real = SFDA.refresh

    def spy(self, epoch):
        seen = sum(len(b.sample_index) for b in self.ctx.iterate_train())
        calls.append((epoch, seen))
        real(self, epoch)
        assert int(self.targets.epoch) == epoch and bool(self.targets.known.any())

    monkeypatch.setattr(SFDA, "refresh", spy)
    assert cli(_adapt_args(root, caches[:1], source_ckpt, tmp_path / "run", epochs=3)) == 0
    from distill.data import DomainFolder

    n_train = len(DomainFolder(root, test_fraction=0.3).select([TARGET], "train"))
    assert calls == [(0, n_train), (1, n_train), (2, n_train)], calls

    # a run resumed mid-epoch keeps the pseudo-labels it saved instead of recomputing them
    strategy = SFDA.__new__(SFDA)
    torch.nn.Module.__init__(strategy)
    from distill.strategies._pseudo import SampleTargets

    strategy.targets = SampleTargets()
    strategy.targets.load_state_dict({"probs": torch.ones(5, 3) / 3, "labels": torch.zeros(5, dtype=torch.long),
                                      "weight": torch.ones(5), "known": torch.ones(5, dtype=torch.bool),
                                      "epoch": torch.tensor(4)})
    calls.clear()
    strategy.on_epoch_start(4)
    assert calls == [] and strategy.targets.probs.shape == (5, 3)


@pytest.mark.parametrize("strategy", ["sfda", "shot", "teacher_pl"])
def test_distill_adapt_end_to_end(root, caches, source_ckpt, tmp_path, strategy, capsys):
    used = caches if strategy == "sfda" else caches[:1]  # sfda: two teachers, fused by reliability
    assert cli(_adapt_args(root, used if strategy != "shot" else [], source_ckpt, tmp_path / "run", strategy)) == 0
    out = capsys.readouterr().out
    # no labels to select on: every epoch says the last is kept, none claims to be "best"
    epochs = [ln for ln in out.splitlines() if ln.startswith("epoch ")]
    assert len(epochs) == 2 and all(ln.endswith("  (kept: last epoch; no labels to select on)") for ln in epochs)
    assert "(best)" not in out
    assert f"adapted checkpoint: {tmp_path / 'run' / 'checkpoints' / 'best'}  (kept: last epoch, 2; no labels" in out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["strategy"] == strategy and summary["source_domains"] == [SOURCE]
    assert summary["target_domains"] == [TARGET] and summary["source_acc"] is None
    assert (tmp_path / "run" / "checkpoints" / "best" / "model.safetensors").is_file()
    # the folder named `best` says what it holds: no epoch was selected, it is the last one
    held = f"last epoch ({strategy} selects no epoch: no labels)"
    assert summary["selected_on"] == "last_epoch" and summary.get("selected_value") is None  # none: left out
    assert json.loads((tmp_path / "run" / "checkpoints" / "best" / "student.json").read_text())[
        "provenance"]["selected_on"] == held
    import yaml

    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["source_checkpoint"] == str(source_ckpt) and cfg["data"]["target"] == [TARGET]
    # each strategy brings its own defaults: SHOT drifts at the teacher-guided strategies' lr 3e-3
    assert cfg["optim"]["lr"] == (5e-4 if strategy == "shot" else 3e-3)
    if strategy == "sfda":
        assert cfg["cache"] == [str(c) for c in caches]
    if strategy == "shot":  # SHOT keeps the source hypothesis: the head is unchanged
        from safetensors.torch import load_file

        before, after = load_file(str(source_ckpt / "model.safetensors")), \
            load_file(str(tmp_path / "run" / "checkpoints" / "best" / "model.safetensors"))
        assert torch.equal(before["head.weight"], after["head.weight"])
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("backbone."))


def test_adapt_errors_are_one_line(root, caches, source_ckpt, tmp_path, capsys):
    bad = _adapt_args(root, caches[:1], source_ckpt, tmp_path / "r1")
    bad[bad.index("--target") + 1] = SOURCE
    assert cli(bad) == 1
    assert "both source and target" in capsys.readouterr().err
    assert cli(_adapt_args(root, [], source_ckpt, tmp_path / "r2", "sfda")) == 1
    assert "needs a teacher cache" in capsys.readouterr().err
    assert cli(_adapt_args(root, caches[:1], source_ckpt, tmp_path / "r3", "kd")) == 1
    assert "not a source-free adaptation strategy" in capsys.readouterr().err


def test_sfda_fuses_two_caches_per_sample(root, caches, source_ckpt):
    """Through the trainer's batches: teacher_logits_all carries both caches and the refresh weighs them."""
    from distill.config import load_train_config
    from distill.train import Trainer, build
    from distill.train.adapt import adapt_recipe

    recipe = adapt_recipe(source_ckpt, [TARGET], root, caches=caches, strategy="sfda", out="/tmp/unused",
                          optim={"batch_size": 8}, run={"workers": 0, "progress": False})
    cfg = load_train_config(None, base=recipe)
    trainer = Trainer(build(cfg))
    batch = next(trainer.clean_batches())
    assert batch.labels is None and len(batch.teacher_logits_all) == 2
    assert not torch.equal(batch.teacher_logits_all[0], batch.teacher_logits_all[1])
    strategy = trainer.strategy
    strategy.refresh(0)
    w = strategy.last_refresh["teacher_weights"]
    assert len(w) == 2 and abs(sum(w) - 1) < 1e-5
    with pytest.raises(DistillError, match="iterate_train"):
        from distill.strategies import create_strategy
        from distill.strategies.base import StrategyContext

        create_strategy("sfda", strategy.student, None, StrategyContext(3, CLASSES)).refresh(0)


@pytest.mark.slow
def test_sfda_kill9_then_resume_is_bit_identical(root, caches, source_ckpt, tmp_path):
    """`distill adapt` killed with kill -9 mid-epoch and resumed with `distill adapt --resume` ends with the
    same weights, metrics and pseudo-labels as an uninterrupted run (the refresh hook's state is checkpointed)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from safetensors.torch import load_file

    repo = Path(__file__).resolve().parents[2]

    def adapt(out: Path, delay: str = "0") -> subprocess.Popen:
        args = _adapt_args(root, caches[:1], source_ckpt, out, "sfda", epochs=3) + ["--set", "run.save_every=1"]
        return subprocess.Popen([sys.executable, "-m", "distill", *args], cwd=repo, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1", "DISTILL_TRAIN_STEP_DELAY": delay})

    full = adapt(tmp_path / "full")
    out_full = full.communicate(timeout=300)[0]
    assert full.returncode == 0, out_full

    proc = adapt(tmp_path / "killed", delay="0.5")
    last = tmp_path / "killed" / "checkpoints" / "last.json"
    deadline = time.time() + 240
    while time.time() < deadline and not (last.is_file() and '"step": 3' in last.read_text()):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert '"step": 3' in last.read_text(), "the run finished or never reached step 3 before the kill"
    assert not (tmp_path / "killed" / "summary.json").exists()

    resumed = subprocess.run([sys.executable, "-m", "distill", "adapt", "--resume", str(tmp_path / "killed")],
                             cwd=repo, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout + resumed.stderr and "adapted checkpoint:" in resumed.stdout
    a = load_file(str(tmp_path / "full" / "checkpoints" / "best" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "checkpoints" / "best" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    assert (tmp_path / "full" / "metrics.csv").read_text() == (tmp_path / "killed" / "metrics.csv").read_text()


def test_set_overrides_a_strategys_own_optim_defaults():
    from distill.train.adapt import adapt_optim

    assert adapt_optim("shot")["lr"] == 5e-4 and adapt_optim("sfda")["lr"] == 3e-3
    assert adapt_optim("shot", {"lr": 1e-3})["lr"] == 1e-3 and adapt_optim("shot")["epochs"] == 10


def test_the_neighbour_step_in_tiles_equals_the_whole_similarity_matrix(monkeypatch):
    """knn_smooth with chunks smaller than N: the exact result of the N x N computation, and no similarity
    block larger than chunk x chunk (memory linear in N)."""
    from distill.strategies._knn import knn_indices
    g = torch.Generator().manual_seed(0)
    feats, probs = torch.randn(53, 8, generator=g), torch.softmax(torch.randn(53, 4, generator=g), -1)
    f = torch.nn.functional.normalize(feats, dim=-1)
    whole = (f @ f.T).topk(5, dim=-1).indices
    want = probs[whole].mean(1)
    largest = []
    matmul = torch.Tensor.__matmul__

    def recording(a, b):
        out = matmul(a, b)
        largest.append(out.numel())
        return out

    monkeypatch.setattr(torch.Tensor, "__matmul__", recording)
    for chunk in (1, 7, 16, 53, 100):
        assert torch.equal(knn_indices(f, f, 5, chunk), whole)
        largest.clear()
        got = knn_smooth(feats, probs, k=5, chunk=chunk)
        assert torch.equal(got, want), chunk
        assert max(largest) <= chunk * min(chunk, 53)


def test_the_per_sample_targets_live_in_files_that_the_checkpoint_links(root, caches, source_ckpt, tmp_path):
    """sfda's two [S, C] targets are not module buffers (not in the heap or on the GPU, not broadcast by DDP):
    each refresh writes new files in the run's checkpoint folder, a step checkpoint hard-links them beside its
    tensors (its safetensors file holds no [S, C]), and a resumed trainer reads the same targets back."""
    import os

    from safetensors import safe_open

    from distill.config import load_train_config
    from distill.records import TRAIN_STATE
    from distill.train import Trainer, build
    from distill.train.adapt import adapt_recipe
    from distill.utils.rowfile import RowFile

    recipe = adapt_recipe(source_ckpt, [TARGET], root, caches=caches[:1], strategy="sfda", out=str(tmp_path / "run"),
                          optim={"batch_size": 8}, run={"workers": 0, "progress": False})
    cfg = load_train_config(None, base=recipe)
    trainer = Trainer(build(cfg))
    s = trainer.strategy
    for epoch in (0, 1):  # the second refresh and checkpoint replace the first ones
        s.refresh(epoch)
        trainer.global_step = epoch + 1
        trainer.save()
    targets = (s.targets, s.memory)
    assert all("probs" not in dict(t.named_buffers()) and RowFile.backing(t.probs) is not None for t in targets)
    step = trainer.checkpoints.last()
    assert [p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*")] == [step.name]
    bins = sorted(step.glob("*.bin"))
    assert {b.stat().st_ino for b in bins} == {os.fstat(RowFile.backing(t.probs)._fd).st_ino for t in targets}
    S, C = s.targets.probs.shape
    with safe_open(str((step / TRAIN_STATE).with_suffix(".safetensors")), "pt") as f:
        assert not [k for k in f.keys() if tuple(f.get_slice(k).get_shape()) == (S, C)]
    resumed = Trainer(build(cfg))
    assert resumed.resume()
    for a, b in zip(targets, (resumed.strategy.targets, resumed.strategy.memory)):
        assert torch.equal(a.probs, b.probs) and torch.equal(a.labels, b.labels) and torch.equal(a.weight, b.weight)
        assert int(b.epoch) == 1 and b.probs.shape == (S, C) and float(b.probs.abs().sum()) > 0


def test_targets_saved_as_a_tensor_load_onto_a_file_in_the_runs_folder(tmp_path):
    """An older checkpoint (probs inside the safetensors file) or a state dict made in memory: the rows go to a
    file in the strategy's folder (the run's checkpoint folder, where a checkpoint can link it), not to TMPDIR."""
    import os

    from distill.strategies._pseudo import SampleTargets
    from distill.utils.rowfile import RowFile

    targets = SampleTargets(lambda: str(tmp_path))
    probs = torch.rand(7, 3)
    targets.load_state_dict({"probs": probs, "labels": torch.zeros(7, dtype=torch.long), "weight": torch.ones(7),
                             "known": torch.ones(7, dtype=torch.bool), "epoch": torch.tensor(2)})
    rows = RowFile.backing(targets.probs)
    assert rows is not None and torch.equal(targets.probs, probs) and int(targets.epoch) == 2
    assert os.readlink(f"/proc/self/fd/{rows._fd}").startswith(f"{tmp_path}/")


def test_a_rank_that_saves_no_checkpoint_writes_its_targets_unnamed_into_the_runs_folder(root, caches, source_ckpt,
                                                                                        tmp_path, monkeypatch):
    """DDP rank 1 (simulated: rank 1 of a world of 1, so no process group) refreshes its own targets: they are
    unnamed files in the run's checkpoint folder (disk), not in TMPDIR (RAM where /tmp is a tmpfs)."""
    import dataclasses
    import os
    import tempfile

    from distill.config import load_train_config
    from distill.train import Trainer, build
    from distill.train.adapt import adapt_recipe
    from distill.utils.rowfile import RowFile
    from distill.utils.runtime import Dist

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmpdir"))
    (tmp_path / "tmpdir").mkdir()
    recipe = adapt_recipe(source_ckpt, [TARGET], root, caches=caches[:1], strategy="sfda", out=str(tmp_path / "run"),
                          optim={"batch_size": 8}, run={"workers": 0, "progress": False})
    setup = build(load_train_config(None, base=recipe))
    trainer = Trainer(dataclasses.replace(setup, dist=Dist(rank=1, world=1)))
    folder = trainer.checkpoints.dir
    folder.mkdir(parents=True)  # rank 0 makes it before the ranks start (distill.train.run); rank 1 does not
    trainer.strategy.refresh(0)
    for t in (trainer.strategy.targets, trainer.strategy.memory):
        where = os.readlink(f"/proc/self/fd/{RowFile.backing(t.probs)._fd}")
        assert where.startswith(f"{folder}/") and where.endswith(" (deleted)"), where
    assert list(folder.iterdir()) == []  # nothing named: nothing to clash with rank 0's or to leave behind


def test_a_training_step_reads_the_targets_with_the_loaders_index_not_a_copy_back(root, caches, source_ckpt,
                                                                                  tmp_path, monkeypatch):
    """The trainer's batch carries the loader's CPU sample index beside the device one, and sfda's step gathers
    its targets' rows with it: no `.cpu()` of a device tensor in the step (on a GPU, one copy back and a wait each)."""
    from distill.config import load_train_config
    from distill.train import Trainer, build
    from distill.train.adapt import adapt_recipe

    recipe = adapt_recipe(source_ckpt, [TARGET], root, caches=caches[:1], strategy="sfda", out=str(tmp_path / "run"),
                          optim={"batch_size": 8}, run={"workers": 0, "progress": False})
    trainer = Trainer(build(load_train_config(None, base=recipe)))
    trainer.strategy.refresh(0)
    pixels, labels, domain, index, view = next(iter(trainer.loader(0, 0)))
    batch = trainer.make_batch(pixels, labels, domain, index, view)
    assert batch.host_index is index and torch.equal(batch.sample_index, index)
    want = trainer.strategy.targets.get(batch.sample_index)

    def no_copy_back(self, *args, **kwargs):
        raise AssertionError("a copy back to the host in the training step")

    monkeypatch.setattr(torch.Tensor, "cpu", no_copy_back)
    got = trainer.strategy.targets.get(batch.sample_index, batch.host_index)
    assert all(torch.equal(a, b) for a, b in zip(got, want)) and bool(got[3].all())
    assert torch.isfinite(trainer.strategy(batch)["loss"])


def test_without_the_memory_the_refreshed_targets_still_count(root, caches, source_ckpt, tmp_path, monkeypatch):
    """Review 2 L2 (session 26): with `per_view` off the step reads only the refreshed targets, yet a missing
    `memory` (an API user's non-strict load) made it fall back to the batch's own fusion for every sample."""
    from distill.config import load_train_config
    from distill.train import Trainer, build
    from distill.train.adapt import adapt_recipe

    recipe = adapt_recipe(source_ckpt, [TARGET], root, caches=caches[:1], strategy="sfda", out=str(tmp_path / "run"),
                          optim={"batch_size": 8}, run={"workers": 0, "progress": False})
    recipe["strategy"] = {**recipe["strategy"], "per_view": False}
    trainer = Trainer(build(load_train_config(None, base=recipe)))
    s = trainer.strategy
    assert not s.config.per_view
    s.refresh(0)
    pixels, labels, domain, index, view = next(iter(trainer.loader(0, 0)))
    batch = trainer.make_batch(pixels, labels, domain, index, view)
    monkeypatch.setattr(s.memory, "get", lambda *a, **k: None)
    got = s.targets.get(batch.sample_index, batch.host_index)
    assert got is not None and bool(got[3].all())
    with torch.no_grad():
        soft, hard, weight = s._batch_targets(batch, s.student(batch.pixels))
    assert torch.equal(soft, got[0]) and torch.equal(hard, got[1]) and torch.equal(weight, got[2])
