"""Top-1 agreement of the student with the cached teacher on a run's unlabeled pool: a label-free selection signal.

``run.select_on: teacher_agreement`` (:mod:`distill.train.selection`) selects the epoch whose student agrees
most often with the teacher on the pool's images (``data.unlabeled``). Each pool image is scored on the cache's
view 0, the teacher's clean view (open_clip's eval resize and centre crop; never augmented or mixed), against
that row's cached logits: the student sees the pixels the teacher saw, at the student's size (from the cache's
pixel store when it has one, else decoded exactly as training decodes them).

No label is read, by construction: the evaluator keeps the pool's sample indices (and, without a pixel store,
view 0's crop box) and nothing else of a sample; its items carry the label -1, and the teacher's side is the
cache's ``logits`` column alone. Streamed like :class:`distill.evaluate.DomainEvaluator`: DataLoader workers
decode batch by batch, each rank scores one contiguous share of the pool (:func:`distill.evaluate.rank_share`)
and the (agreeing, total) counts are summed over ranks.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from distill.data.classes import ClassColumns
from distill.data.folder import DomainFolder, Sample
from distill.data.view_policy import CROP_PARAMS
from distill.data.views import ViewConfig
from distill.evaluate import rank_share
from distill.student.transforms import normalize
from distill.train.data import ItemTable, TrainImages, to_unit
from distill.utils.loaders import bounded_worker_batches

if TYPE_CHECKING:
    from distill.teacher.cache import PixelStore, TeacherCache
from distill.utils.runtime import Dist, all_reduce_sum

_CHUNK = 4096  # pool images per cache lookup while view 0's crop boxes are read at start-up


class _Batches:
    """Batch sampler: ``batch_size`` consecutive positions of ``share`` at a time, generated on the fly."""

    def __init__(self, share: range, batch_size: int):
        self.share, self.batch_size = share, batch_size

    def __iter__(self) -> Iterator[list[int]]:
        for i in range(self.share.start, self.share.stop, self.batch_size):
            yield list(range(i, min(i + self.batch_size, self.share.stop)))

    def __len__(self) -> int:
        return -(-len(self.share) // self.batch_size)


def pool_view0(dataset: DomainFolder, pool: Sequence[Sample], cache: TeacherCache, size: tuple[int, int],
               interpolation: str, pixels: PixelStore | None = None) -> TrainImages:
    """View 0 of every pool image at the student's ``size``, as unlabeled items (label -1 on every row).

    Only ``Sample.index`` is read from ``pool``. With ``pixels`` (the cache's pixel store at this size) an item
    is read from the store; otherwise view 0's crop box (the cache's float32 row, first 5 columns) is held
    per image and the image decoded and cropped as :class:`~distill.train.data.TrainImages` does.
    """
    idx = np.fromiter((s.index for s in pool), dtype=np.int64, count=len(pool))
    n, zeros = len(idx), np.broadcast_to(np.int64(0), (len(idx),))
    params = np.zeros((n, CROP_PARAMS), dtype=np.float32)
    for at in range(0, n, _CHUNK):  # view 0 is never mixed: its crop box is all a row needs
        part = torch.from_numpy(idx[at:at + _CHUNK])
        params[at:at + _CHUNK] = cache.lookup(part, torch.zeros_like(part), outputs=False)["view_params"][
            :, :CROP_PARAMS].numpy()
    items = ItemTable(sample=idx, label=np.broadcast_to(np.int64(-1), (n,)), domain=zeros, view=zeros,
                      params=params)
    return TrainImages(dataset, items, size, interpolation, ViewConfig(), 0, pixels=pixels, uint8=True)


class PoolAgreement:
    """How often the student's top-1 class is the cached teacher's on view 0 of the pool's images.

    Args:
        images: the pool's view-0 items (:func:`pool_view0`): yields (uint8 pixels, -1, 0, sample index, 0).
        cache: the run's first teacher cache (its ``logits`` column, view 0).
        columns: dataset classes -> the student's (withheld classes: the teacher's logits are sliced alike).
        mean, std: the student's normalization.
        batch_size: images per forward.
        workers: DataLoader workers decoding the batches (0: in this process), a fresh set every
            :data:`~distill.utils.loaders.WORKER_IMAGES` images (a worker's heap creeps with what it decodes).
        dist: this process's place in the process group (None: a single process).
    """

    def __init__(self, images: TrainImages, cache: TeacherCache, columns: ClassColumns, mean: Sequence[float],
                 std: Sequence[float], batch_size: int = 256, workers: int = 0, dist: Dist | None = None):
        self.images, self.cache, self.columns = images, cache, columns
        self.mean, self.std = tuple(mean), tuple(std)
        self.batch_size, self.workers, self.dist = batch_size, workers, dist or Dist()

    def __len__(self) -> int:
        """Pool images scored (all ranks together)."""
        return len(self.images)

    def teacher_top1(self, sample_index: Tensor) -> Tensor:
        """The cached teacher's top-1 student column on view 0 of ``sample_index`` [B] -> [B]."""
        rows = self.cache.lookup(sample_index, torch.zeros_like(sample_index))
        return self.columns.logits(rows["logits"]).argmax(-1)

    def counts(self, predict: Callable[[Tensor], Tensor], device: str | torch.device = "cpu") -> tuple[int, int]:
        """(images where student and teacher agree, images scored), summed over ranks (every rank calls it)."""
        device = torch.device(device)
        share = rank_share(len(self.images), self.dist.rank, self.dist.world)
        tally = torch.zeros(1, dtype=torch.long, device=device)
        if len(share):
            mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1)
            std = torch.tensor(self.std, device=device).view(1, 3, 1, 1)
            loader = bounded_worker_batches(self.images, _Batches(share, self.batch_size), self.batch_size,
                                            self.workers, pin_memory=device.type == "cuda")
            with torch.no_grad():
                for pixels, _unlabeled, _domain, index, _view in loader:
                    x = normalize(to_unit(pixels.to(device, non_blocking=True)), mean, std)
                    student = predict(x).argmax(-1)
                    tally += (student == self.teacher_top1(index).to(device)).sum()
        return int(all_reduce_sum(tally, self.dist).item()), len(self.images)

    def __call__(self, predict: Callable[[Tensor], Tensor], device: str | torch.device = "cpu") -> float:
        """The agreement as a fraction in [0, 1] (NaN for an empty pool)."""
        agree, total = self.counts(predict, device)
        return agree / total if total else float("nan")
