"""The source-free refresh in chunks over spooled rows: the same pseudo-labels as over whole in-memory arrays,
with no [N, F] or [N, C] array in the heap (benchmarks/sfda_memory.py measures it)."""
from __future__ import annotations

import tempfile

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distill.errors import DistillError
from distill.strategies import _pseudo, get_strategy
from distill.strategies._pseudo import centroid_labels, knn_labels, knn_smooth
from distill.strategies.base import Batch, StrategyContext
from distill.utils import spool as spool_mod
from distill.utils.spool import RowSpool


def _clusters(n: int = 90, classes: int = 3, dim: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Well-separated feature clusters and noisy predictions: every argmax has a wide margin, so the chunked
    sums (another summation order) cannot flip one on any CPU."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.arange(n) % classes
    centres = torch.eye(classes, dim) * 10
    feats = centres[truth] + 0.5 * torch.randn(n, dim, generator=g)
    logits = F.one_hot(truth, classes).float() * 2 + torch.randn(n, classes, generator=g)
    return feats, logits.softmax(-1)


def _whole_centroid_labels(features, probs, iterations=2, threshold=0.0):
    """The implementation before the chunks: whole [N, F] and [N, C] arrays."""
    f = F.normalize(features.float(), dim=-1)
    w, labels = probs.float(), None
    for _ in range(max(1, iterations)):
        mass = w.sum(0)
        centroids = F.normalize(w.T @ f / mass.clamp(min=1e-8).unsqueeze(1), dim=-1)
        sim = f @ centroids.T
        sim[:, mass <= threshold] = -2.0
        labels = sim.argmax(-1)
        w = F.one_hot(labels, probs.shape[1]).float()
    return labels


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_centroid_labels_in_chunks_equal_the_whole_computation(chunk):
    feats, probs = _clusters()
    want = _whole_centroid_labels(feats, probs)
    assert torch.equal(centroid_labels(feats, probs, chunk=chunk), want)
    # class masses 28.1, 30.2, 31.7: a threshold of 29 takes class 0's centroid away in the first round only
    hidden = _whole_centroid_labels(feats, probs, threshold=29.0)
    assert torch.equal(centroid_labels(feats, probs, threshold=29.0, chunk=chunk), hidden) and not torch.equal(hidden, want)


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_knn_labels_are_the_smoothed_argmax(chunk):
    feats, probs = _clusters(seed=1)
    assert torch.equal(knn_labels(feats, probs, k=5, chunk=chunk), knn_smooth(feats, probs, k=5).argmax(-1))
    assert torch.equal(knn_labels(feats, probs, k=1, chunk=chunk), probs.argmax(-1))


@pytest.mark.parametrize("spill", [1 << 30, 100, 0])  # all in RAM, past the limit on the second append, on disk
def test_a_spool_returns_its_rows_in_ram_or_from_an_unlinked_file(spill, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(spool_mod, "SPILL_BYTES", spill)
    opened = []
    real = tempfile.TemporaryFile

    def recorded(*args, **kwargs):
        opened.append(real(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(spool_mod.tempfile, "TemporaryFile", recorded)
    spool = RowSpool()
    parts = [torch.randn(3, 4, 5), torch.randn(2, 4, 5).transpose(1, 2).transpose(1, 2)]
    for p in parts:
        spool.append(p)
    parts[0].zero_()  # the spool holds its own copy
    rows = spool.tensor()
    assert torch.equal(rows[3:], parts[1]) and not torch.equal(rows[:3], parts[0])
    assert len(opened) == (spill < 1 << 30) and list(tmp_path.iterdir()) == []  # a file only past the limit
    with pytest.raises(ValueError, match="the spool is spent"):
        spool.append(parts[0])
    with pytest.raises(ValueError, match="appended to a spool of"):
        other = RowSpool()
        other.append(torch.zeros(2, 3))
        other.append(torch.zeros(2, 4))
    empty = RowSpool()
    empty.append(torch.zeros(4, 0))  # shot's zero-width rows
    assert empty.tensor().shape == (4, 0)


def test_no_room_to_spool_is_one_line_naming_the_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    monkeypatch.setattr(spool_mod, "SPILL_BYTES", 0)
    with pytest.raises(DistillError, match=r"missing: cannot spool 2 rows of a pass over the data there: .*; "
                                           r"free space there or point TMPDIR elsewhere$") as e:
        RowSpool().append(torch.zeros(2, 3))
    assert "\n" not in str(e.value)


class _Stub(nn.Module):
    """forward_all as a Student's, from seeded noise: the refresh's arithmetic, not a model's."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.features, self.classes, self.head = features, classes, None

    def forward_all(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(int(images[0, 0]))
        return {"features": torch.randn(len(images), self.features, generator=g),
                "logits": 2 * torch.randn(len(images), self.classes, generator=g)}


def _refreshed(strategy: str, n: int = 101, classes: int = 5, teachers: int = 2) -> nn.Module:
    def batches():
        for s in range(0, n, 16):
            m = min(16, n - s)
            g = torch.Generator().manual_seed(1000 + s)
            x = torch.full((m, 1), float(s))
            logits = [3 * torch.randn(m, classes, generator=g) for _ in range(teachers)]
            yield Batch(pixels=x, images=x, teacher_logits=logits[0], teacher_logits_all=logits,
                        sample_index=torch.arange(s, s + m))

    cls = get_strategy(strategy)
    ctx = StrategyContext(num_classes=classes, class_names=[str(i) for i in range(classes)], iterate_train=batches,
                          num_train=n, num_samples=n, num_teachers=teachers)
    strat = cls(_Stub(8, classes), cls.Config(), ctx)
    strat.refresh(0)
    first = {k: v.clone() for k, v in strat.state_dict().items()}
    strat.refresh(1)  # the second refresh reuses the buffers in place: the same targets, epoch 1
    for name, buf in strat.state_dict().items():
        assert torch.equal(buf, first[name]) or name.endswith("epoch"), name
    return strat


@pytest.mark.parametrize("strategy", ["sfda", "shot"])
def test_the_refresh_in_small_chunks_equals_one_chunk(strategy, monkeypatch):
    """CHUNK 7 over 101 images against one chunk of all: the same per-sample targets (fusion is per row)."""
    whole = _refreshed(strategy)
    monkeypatch.setattr(_pseudo, "CHUNK", 7)
    if strategy == "sfda":
        import distill.strategies.sfda as sfda_mod
        monkeypatch.setattr(sfda_mod, "CHUNK", 7)
    chunked = _refreshed(strategy)
    for name, buf in whole.state_dict().items():
        assert torch.equal(buf, chunked.state_dict()[name]), name
    if strategy == "sfda":
        assert chunked.last_refresh["kept"] == whole.last_refresh["kept"]
        assert chunked.last_refresh["teacher_weights"] == pytest.approx(whole.last_refresh["teacher_weights"])
    else:  # shot reads back only hard labels: no [S, C] one-hot buffer
        assert chunked.targets.probs.shape == (101, 0) and bool(chunked.targets.known.all())


def test_sfdas_refresh_finds_the_neighbours_on_the_runs_device(monkeypatch):
    """The kNN runs where the strategy's buffers are (the trainer moves the strategy to run.device): on a CUDA run,
    on the GPU (distill/strategies/_knn.py), not on the CPU."""
    import distill.strategies.sfda as sfda_mod

    asked, real = [], sfda_mod.knn_labels

    def recording(*args, **kwargs):
        asked.append(kwargs.get("device"))
        return real(*args, **kwargs)

    monkeypatch.setattr(sfda_mod, "knn_labels", recording)
    strat = _refreshed("sfda")
    assert asked == [strat.targets.epoch.device] * 2 == [torch.device("cpu")] * 2
