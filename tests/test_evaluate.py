"""distill.evaluate: per-domain accuracy, as a fraction, on a hand-made data set against a hand count."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor

from distill.data.folder import DomainFolder
from distill.evaluate import DomainEvaluator


def _solid(path: Path, rgb: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), rgb, dtype=np.uint8)).save(path)


RED, BLUE = (255, 0, 0), (0, 0, 255)


@pytest.fixture
def root(tmp_path) -> Path:
    """Domain ``a``: 3 red 'red' images, 1 blue 'red' image (the model gets it wrong), 2 blue 'blue' images
    -> 5 of 6 right. Domain ``b``: 1 red 'red', 3 red 'blue' (all wrong) -> 1 of 4. Domain ``c``: empty split."""
    for k in range(3):
        _solid(tmp_path / "a" / "red" / f"{k}.png", RED)
    _solid(tmp_path / "a" / "red" / "3.png", BLUE)
    for k in range(2):
        _solid(tmp_path / "a" / "blue" / f"{k}.png", BLUE)
    _solid(tmp_path / "b" / "red" / "0.png", RED)
    for k in range(3):
        _solid(tmp_path / "b" / "blue" / f"{k}.png", RED)
    _solid(tmp_path / "c" / "red" / "0.png", RED)
    return tmp_path


def _redness(x: Tensor) -> Tensor:
    """images [B, 3, H, W] -> logits [B, 2] over the classes in folder order (blue, red): red wins when red > blue."""
    red, blue = x[:, 0].mean((1, 2)), x[:, 2].mean((1, 2))
    return torch.stack([blue, red], dim=1)


def test_accuracy_per_domain_is_the_hand_counted_fraction(root):
    ds = DomainFolder(root, test_fraction=0.0, val_fraction=0.0)  # every image in train
    assert ds.classes == ["blue", "red"]
    ev = DomainEvaluator(ds, ["a", "b"], lambda img: torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255,
                         split="train", batch_size=4)  # batches of 4: a sum over batches, not a mean of means
    acc = ev(_redness)
    assert acc == {"a": pytest.approx(5 / 6), "b": pytest.approx(1 / 4)}
    assert all(0.0 <= v <= 1.0 for v in acc.values()), "a fraction, not a percent"


def test_domains_without_images_in_the_split_are_omitted(root):
    ds = DomainFolder(root, test_fraction=0.0, val_fraction=0.0)
    ev = DomainEvaluator(ds, ["a", "c"], lambda img: torch.zeros(3, 4, 4), split="test")  # no test images at all
    assert ev(_redness) == {}


# ---------------------------------------------------------------------------- streaming, rank split
from distill.evaluate import decode_split, rank_share, seen_classes  # noqa: E402
from distill.utils.runtime import Dist  # noqa: E402
from tests.gloo import free_port  # noqa: E402
from tests.shapes import make_shapes_root  # noqa: E402


def _to_tensor(img) -> Tensor:
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255


def _linear(seed: int = 0, classes: int = 3):
    """A fixed random linear classifier over 16x16 images: 3 classes (or ``classes`` columns), near-ties
    impossible to hand-pick."""
    w = torch.randn(3 * 16 * 16, classes, generator=torch.Generator().manual_seed(seed))
    return lambda x: x.flatten(1) @ w


def _old_counts(ds, domains, split, predict, batch_size, class_columns=None) -> dict[str, tuple[int, int]]:
    """What the evaluator computed before it streamed: the split decoded whole, then predicted in batches."""
    data = decode_split(ds, domains, _to_tensor, split)
    if class_columns is not None:
        from distill.data.classes import ClassColumns
        data = seen_classes(data, ClassColumns(class_columns, len(ds.classes)))
    out = {}
    for d, (x, y) in data.items():
        correct = sum(int((predict(x[i:i + batch_size]).argmax(-1) == y[i:i + batch_size]).sum())
                      for i in range(0, len(x), batch_size))
        out[d] = (correct, len(x))
    return out


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> DomainFolder:
    return DomainFolder(make_shapes_root(tmp_path_factory.mktemp("shapes"), ["red", "green", "blue"], per_class=9),
                        test_fraction=0.4)


@pytest.mark.parametrize("n,world", [(0, 1), (5, 1), (5, 2), (7, 3), (2, 4), (1000, 8)])
def test_rank_shares_are_disjoint_and_cover_the_split(n, world):
    shares = [rank_share(n, r, world) for r in range(world)]
    seen = [i for s in shares for i in s]
    assert sorted(seen) == list(range(n)) and len(seen) == len(set(seen))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


@pytest.mark.parametrize("split,class_columns,workers", [("test", None, 0), ("val", None, 2), ("test", [0, 2], 2),
                                                         ("train", [1], 0)])
def test_streamed_counts_are_those_of_the_whole_decoded_split(shapes, split, class_columns, workers):
    """Same images, same batches, same order as the old decode-everything path: identical counts."""
    predict, domains = _linear(), ["red", "green", "blue"]
    ev = DomainEvaluator(shapes, domains, _to_tensor, split=split, batch_size=4, workers=workers,
                         class_columns=class_columns)
    old = _old_counts(shapes, domains, split, predict, 4, class_columns)
    assert ev.counts(predict) == old and old
    assert ev(predict) == {d: c / t for d, (c, t) in old.items()}


def test_each_rank_counts_only_its_share_and_the_shares_sum_to_the_whole(shapes, monkeypatch):
    """Without a process group: rank r of 3 counts its share; the three sum to the single-process counts."""
    import distill.evaluate as evaluate
    monkeypatch.setattr(evaluate, "all_reduce_sum", lambda t, d: t)  # the per-rank counts, unsummed
    predict, domains = _linear(1), ["red", "green", "blue"]
    whole = DomainEvaluator(shapes, domains, _to_tensor, batch_size=3).counts(predict)
    parts = [DomainEvaluator(shapes, domains, _to_tensor, batch_size=3, dist=Dist(r, 3)).counts(predict)
             for r in range(3)]
    for d, (correct, total) in whole.items():
        assert sum(p[d][0] for p in parts) == correct
        assert all(p[d][1] == total for p in parts)  # totals are the split's, known to every rank


def _two_rank_worker(rank: int, root: str, port: int, out: str) -> None:
    import torch.distributed as tdist
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        ds = DomainFolder(root, test_fraction=0.4)
        ev = DomainEvaluator(ds, ["red", "green", "blue"], _to_tensor, batch_size=4, dist=Dist(rank, 2))
        # counts; top-1/top-5 of a 6-column model; a 3-class model (top-5 undefined on every rank)
        torch.save((ev.counts(_linear(2)), ev.accuracy(_linear(2, classes=6)), ev.accuracy(_linear(2))), f"{out}.{rank}")
    finally:
        tdist.destroy_process_group()


def test_two_gloo_ranks_sum_to_the_single_process_counts(shapes, tmp_path):
    import torch.multiprocessing as mp
    port = free_port()
    mp.spawn(_two_rank_worker, args=(str(shapes.root), port, str(tmp_path / "counts")), nprocs=2)
    ev = DomainEvaluator(shapes, ["red", "green", "blue"], _to_tensor, batch_size=4)
    single, six = ev.counts(_linear(2)), ev.accuracy(_linear(2, classes=6))
    for rank in (0, 1):
        counts, acc6, acc3 = torch.load(tmp_path / f"counts.{rank}", weights_only=False)
        assert counts == single and acc6 == six  # top-5 summed over the ranks as top-1 is
        assert all(math.isnan(a.top5) and not math.isnan(a.top1) for a in acc3.values())
    assert all(0 < a.top5 <= 1 and a.top5 >= a.top1 for a in six.values())


def test_evaluation_workers_are_replaced_along_a_long_split(shapes, monkeypatch):
    """A worker's heap creeps with the images it decodes, so a pass over a long split gets a fresh set of
    workers every WORKER_IMAGES images: here every 4 images (one batch); the counts do not change."""
    import distill.utils.loaders as loaders

    made = []

    class Counting(loaders.WorkerLoader):
        def __init__(self, *args, **kwargs):
            made.append(kwargs.get("num_workers"))
            super().__init__(*args, **kwargs)

    predict, domains = _linear(), ["red", "green", "blue"]
    whole = DomainEvaluator(shapes, domains, _to_tensor, batch_size=4, workers=0).counts(predict)
    monkeypatch.setattr(loaders, "WORKER_IMAGES", 4)
    monkeypatch.setattr(loaders, "WorkerLoader", Counting)
    ev = DomainEvaluator(shapes, domains, _to_tensor, batch_size=4, workers=1)
    assert ev.counts(predict) == whole
    batches = sum(-(-len(ev.share(d)) // 4) for d in ev.present)
    assert batches > 1 and made == [1] * batches
