"""Shared pieces of the source-free strategies (``sfda``, ``shot``, ``teacher_pl``).

- :func:`fuse_teachers`: several teachers' predictions fused per sample by reliability.
- :func:`centroid_labels`: SHOT's self-supervised pseudo-labels from class centroids.
- :func:`knn_smooth`: memory-bank smoothing of soft labels over feature-space neighbours; :func:`knn_labels` its
  argmax, the neighbours found on the run's device (:mod:`distill.strategies._knn`).
- :func:`collect`: one clean pass over the training images (for the epoch-start refresh).
- :class:`SampleTargets`: per-sample pseudo-labels, resumable (the [S, C] part in a file a checkpoint links).

Memory: the pass's per-image arrays (features, probabilities) are spooled to a temporary file and
memory-mapped (:class:`distill.utils.spool.RowSpool`), and everything computed over them runs in chunks of
:data:`CHUNK` rows, so the refresh's heap holds the per-sample buffers and chunk-sized temporaries, not
[N, F] or [N, C] arrays (benchmarks/sfda_memory.py).

Not a strategy (the leading underscore keeps the registry from importing it as one).
"""
from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.errors import DistillError
from distill.strategies._knn import gather_share, neighbours, plan, share, share_unit
from distill.strategies.base import Batch, batch_field
from distill.utils.rowfile import RowFile
from distill.utils.runtime import group_size, same_on_every_rank, take_main_buffers
from distill.utils.spool import RowSpool

if TYPE_CHECKING:  # for the annotation only
    from distill.student.model import Student

CHUNK = 4096  # rows per step of the refresh's computations over all images


# ---------------------------------------------------------------------------- fusion
def normalized_certainty(p: Tensor) -> Tensor:
    """1 − H(p)/log C per row: 1 for one-hot, 0 for uniform. [N, C] -> [N]."""
    ent = -(p * torch.log(p.clamp(min=1e-12))).sum(-1)
    return 1 - ent / math.log(p.shape[-1])


def fuse_teachers(probs: Sequence[Tensor], anchor: Tensor | None = None, sharpness: float = 1.0,
                  eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Fuse K teachers' class distributions per sample, weighting each by its reliability.

    Reliability of teacher k on sample x (the RCL / Co-learn++ idea that a teacher is to be
    trusted where it is sure of itself *and* the others — including the adapting student —
    agree with it):

        agree_k(x) = Σ_c p_k(c|x) · q_k(c|x),   q_k = mean of {p_j : j ≠ k} ∪ {anchor}
        r_k(x)     = agree_k(x) · (eps + certainty_k(x)),   certainty = 1 − H(p_k)/log C
        w_k(x)     = r_k(x)^sharpness / Σ_j r_j(x)^sharpness

    ``agree_k`` is the probability that teacher k and a predictor drawn from the others name
    the same class; a confident teacher that contradicts everyone else gets little weight, and
    so does a flat one (a random-weights teacher is both). With one teacher the weight is 1.

    Args:
        probs: K tensors [N, C], rows summing to 1.
        anchor: optional [N, C] distribution that votes but is not fused (the current student).
        sharpness: γ ≥ 0; 0 gives the plain average, large values pick the most reliable teacher.

    Returns:
        (fused [N, C], weights [N, K]).
    """
    if not probs:
        raise DistillError("fuse_teachers needs at least one teacher")
    P = torch.stack(list(probs), dim=1)  # [N, K, C]
    N, K, _ = P.shape
    if K == 1 and anchor is None:
        return P[:, 0], torch.ones(N, 1, dtype=P.dtype, device=P.device)
    others_sum = P.sum(1, keepdim=True) - P  # [N, K, C]: sum over j != k
    count = K - 1
    if anchor is not None:
        others_sum = others_sum + anchor.unsqueeze(1)
        count += 1
    if count == 0:
        agree = torch.ones(N, K, dtype=P.dtype, device=P.device)
    else:
        agree = (P * others_sum / count).sum(-1)  # [N, K]
    cert = normalized_certainty(P.reshape(N * K, -1)).reshape(N, K)
    r = (agree * (eps + cert)).clamp(min=1e-12)
    w = r.pow(sharpness)
    w = w / w.sum(1, keepdim=True)
    return (w.unsqueeze(-1) * P).sum(1), w


# ---------------------------------------------------------------------------- pseudo-labels
def centroid_labels(features: Tensor, probs: Tensor, iterations: int = 2, threshold: float = 0.0,
                    chunk: int | None = None) -> Tensor:
    """SHOT's self-supervised pseudo-labels (Liang et al. 2020, eq. 4-6).

    Class centroids are the prediction-weighted means of L2-normalized features; each sample
    takes the class of its nearest centroid (cosine); centroids are then recomputed from those
    hard labels and samples relabelled (``iterations`` − 1 more times). Classes with total
    weight ≤ ``threshold`` get no centroid (SHOT's ``threshold`` on the predicted class counts).

    Args:
        features: [N, F] student features.
        probs: [N, C] student predictions.

    Returns:
        [N] int64 labels, computed ``chunk`` rows at a time (default :data:`CHUNK`): the centroids are sums over
        rows, added chunk by chunk, so a near-tie may fall otherwise than in one sum.
    """
    n, classes = probs.shape
    chunk = chunk or CHUNK
    dev = features.device
    labels: Tensor | None = None
    for _ in range(max(1, iterations)):
        mass, total = torch.zeros(classes, device=dev), torch.zeros(classes, features.shape[1], device=dev)
        for s in range(0, n, chunk):  # weights: the predictions, then the previous round's hard labels
            f = F.normalize(features[s:s + chunk].float(), dim=-1)
            w = probs[s:s + chunk].float() if labels is None else F.one_hot(labels[s:s + chunk], classes).float()
            mass += w.sum(0)
            total += w.T @ f
        centroids = F.normalize(total / mass.clamp(min=1e-8).unsqueeze(1), dim=-1)  # [C, F]
        new = torch.empty(n, dtype=torch.long, device=dev)
        for s in range(0, n, chunk):
            sim = F.normalize(features[s:s + chunk].float(), dim=-1) @ centroids.T
            sim[:, mass <= threshold] = -2.0  # classes without samples cannot be chosen
            new[s:s + chunk] = sim.argmax(-1)
        labels = new
    assert labels is not None
    return labels


def knn_smooth(features: Tensor, probs: Tensor, k: int = 5, chunk: int = 1024) -> Tensor:
    """Average each sample's distribution with its k nearest neighbours' (cosine, itself included).

    A memory-bank smoothing in the spirit of NRC / AaD (Yang et al. 2021, 2022): neighbours in
    the adapting model's feature space tend to share a class, so a wrong label on one sample is
    outvoted by its neighbours. [N, F], [N, C] -> [N, C].

    Exact, in tiles: ``chunk`` queries against ``chunk`` candidates at a time, keeping a running top-k
    (:func:`~distill.strategies._knn.knn_indices`), so the working memory is ``chunk x chunk`` similarities plus
    ``chunk x k`` indices (a ``chunk x N`` block is 40 GB at N = 10^7). On the CPU, in one process.
    """
    if k <= 1 or len(features) <= 1:
        return probs
    out = torch.empty_like(probs)
    for s, smoothed in _smoothed_chunks(features, probs, k, chunk):
        out[s:s + len(smoothed)] = smoothed
    return out


def knn_labels(features: Tensor, probs: Tensor, k: int = 5, chunk: int = 1024,
               device: torch.device | None = None) -> Tensor:
    """``knn_smooth(features, probs, k, chunk).argmax(-1)`` [N], without the [N, C] smoothed array.

    The neighbours are found on ``device`` (the run's; default the CPU, in tiles of ``chunk``), on a GPU by the plan
    of :mod:`distill.strategies._knn` (keys resident or streamed, in IEEE float32). Under DDP each rank finds those of
    a 1/world share of the rows and the labels are gathered: every rank ends with the same labels, each computed
    once, as in a single process (the shares start on the single process's block boundaries)."""
    if k <= 1 or len(features) <= 1:
        return torch.cat([probs[s:s + chunk].argmax(-1) for s in range(0, len(probs), chunk)])
    f, k = _normalized(features, chunk), min(k, len(features))
    device = device or torch.device("cpu")
    p, unit = plan(len(f), f.shape[1], k, device, chunk), share_unit(device, chunk)
    start, stop = share(len(f), unit)
    part = torch.empty(stop - start, dtype=torch.long)
    for s, found in neighbours(f, k, p, start, stop):
        part[s - start:s - start + len(found)] = probs[found].mean(1).argmax(-1)
    return gather_share(part, len(f), unit)


def _smoothed_chunks(features: Tensor, probs: Tensor, k: int, chunk: int) -> Iterator[tuple[int, Tensor]]:
    """(first row, [b, C] neighbour-mean of ``probs``) per ``chunk`` rows, on the CPU."""
    f, k = _normalized(features, chunk), min(k, len(features))
    for s, found in neighbours(f, k, plan(len(f), f.shape[1], k, torch.device("cpu"), chunk)):
        yield s, probs[found].mean(1)


def _normalized(features: Tensor, chunk: int) -> Tensor:
    """The L2-normalized float32 rows, spooled (:class:`RowSpool`), not held."""
    spool = RowSpool()
    for s in range(0, len(features), chunk):
        spool.append(F.normalize(features[s:s + chunk].float(), dim=-1))
    return spool.tensor()


# ---------------------------------------------------------------------------- epoch refresh
@torch.no_grad()
def collect(student: Student, batches: Iterator[Batch], teacher_temperature: float = 1.0,
            teachers: bool = True) -> dict[str, Tensor]:
    """One clean pass over the training images with the student in eval mode.

    Under DDP every rank makes this pass itself, so the student takes rank 0's buffers first
    (:func:`take_main_buffers`): without SyncBatchNorm (gloo) each rank's BN running statistics are its own since
    the last forward, and in eval mode they would give each rank other targets.

    Returns:
        ``index`` [N] sample indices, ``features`` [N, F], ``probs`` [N, C] (student), and with
        ``teachers`` ``teacher_probs`` [N, K, C] (softmax(logits / T) of each cache); all but the index
        memory-mapped from spooled files (:class:`RowSpool`), so read them in chunks.
    """
    take_main_buffers(student)
    was_training = student.training
    student.eval()
    idx: list[Tensor] = []
    feats, probs, tprobs = RowSpool(), RowSpool(), RowSpool()
    spools = (feats, probs, tprobs)
    try:
        for b in batches:
            out = student.forward_all(b.images)
            idx.append(b.host_index if b.host_index is not None
                       else batch_field(b.sample_index, "sample_index", "pseudo-label refresh").cpu())
            feats.append(out["features"].float())
            probs.append(out["logits"].float().softmax(-1))
            if teachers:
                all_logits = b.teacher_logits_all or ([b.teacher_logits] if b.teacher_logits is not None else None)
                if all_logits is None:
                    raise DistillError("pseudo-label refresh needs the teachers' cached logits on the training "
                                       "images, but the batches carry none")
                tprobs.append(torch.stack([(t.float() / teacher_temperature).softmax(-1) for t in all_logits], 1))
    except BaseException:
        for spool in spools:  # an abandoned pass leaves no open file behind
            spool.close()
        raise
    finally:
        student.train(was_training)
    if not idx:
        raise DistillError("pseudo-label refresh: the training set is empty")
    out = {"index": torch.cat(idx), "features": feats.tensor(), "probs": probs.tensor()}
    if teachers:
        out["teacher_probs"] = tprobs.tensor()
    return out


class SampleTargets(nn.Module):
    """Per-sample targets indexed by dataset ``sample_index``, refreshed once per epoch.

    Saved with the strategy, so a resumed run continues with the same targets: ``probs`` [S, C] soft targets
    ([S, 0] for a strategy that reads back only hard labels, shot), and the buffers ``labels`` [S] int64 hard labels,
    ``weight`` [S] float per-sample weight (0 = not trusted / not refreshed), ``known`` [S] bool, ``epoch`` the epoch
    they were built for (−1: never). ``S`` is the dataset size, set on the first refresh.

    ``probs`` (4 kB a sample at 1,000 classes) is not a buffer: each refresh writes it to a new
    :class:`~distill.utils.rowfile.RowFile` in ``folder()`` (the run's checkpoint folder, so that a checkpoint takes
    it by a hard link), read back through the page cache on the CPU, never in the heap or on the GPU and never
    broadcast by DDP. :meth:`get` gathers a batch's rows and moves them to the buffers' device.

    No host sync in a step (:meth:`get`, tests/strategies/test_step_sync.py): the ``epoch`` buffer (which
    checkpoints and DDP carry) is mirrored by a Python int, set where the buffer is (a refresh, a load), so no step
    reads a GPU tensor's value; the rows are gathered into pinned memory on CUDA and copied with ``non_blocking``.
    """

    # buffers (register_buffer leaves them typed Tensor | Module)
    labels: Tensor
    weight: Tensor
    known: Tensor
    epoch: Tensor

    def __init__(self, folder: Callable[[], str | None] = lambda: None,
                 scratch: Callable[[], bool] = lambda: False) -> None:
        super().__init__()
        self._folder = folder  # where a refresh's file goes (asked each time: the trainer sets it after construction)
        self._scratch = scratch  # True: no checkpoint links it (a DDP rank ≠ 0; RowFile.create's scratch)
        self._probs: Tensor = torch.zeros(0, 0)  # a RowFile's tensor, or an empty [S, 0] / [0, 0] one
        self._lost: str | None = None  # the key of soft targets a non-strict load lacked (get() refuses)
        self.register_buffer("labels", torch.zeros(0, dtype=torch.long))
        self.register_buffer("weight", torch.zeros(0))
        self.register_buffer("known", torch.zeros(0, dtype=torch.bool))
        self.register_buffer("epoch", torch.tensor(-1, dtype=torch.long))
        self._epoch = -1  # the buffer's value on the host, read by the step (int(buffer) would wait for a GPU)

    @property
    def probs(self) -> Tensor:
        """[S, C] on the CPU (memory-mapped)."""
        return self._probs

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str,
                            keep_vars: bool) -> None:  # noqa: D401 - torch hook
        super()._save_to_state_dict(destination, prefix, keep_vars)
        # a RowFile's tensor: distill.utils.state.save_state links its file beside the checkpoint's tensors
        destination[prefix + "probs"] = self._probs

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any],
                              strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:  # noqa: D401 - torch hook
        # the buffers are sized on the first refresh; take the saved sizes before torch copies
        for name in ("labels", "weight", "known"):
            key = prefix + name
            if key in state_dict:
                setattr(self, name, torch.empty_like(state_dict[key], device=self.epoch.device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self._epoch = int(self.epoch)  # one read a load, none a step
        key = prefix + "probs"
        if key in unexpected_keys:
            unexpected_keys.remove(key)
        if key not in state_dict:
            missing_keys.append(key)
            if prefix + "labels" in state_dict:  # an earlier refresh's rows do not belong to the loaded labels
                self._probs, self._lost = torch.zeros(0, 0), key
            return
        self._lost = None
        saved = state_dict[key]
        if RowFile.backing(saved) is not None or saved.numel() == 0:  # a checkpoint's file (copy-on-write): kept
            self._probs = saved if saved.numel() else saved.cpu().float().clone()
        else:  # a tensor in memory (an older checkpoint's, or a state dict made in memory): onto a file
            self._probs = RowFile.create(tuple(saved.shape), np.float32, self._folder(), self._scratch())
            self._probs.copy_(saved.cpu().float())

    def fresh(self, epoch: int) -> bool:
        """True when the targets were already built for ``epoch`` (e.g. restored on resume)."""
        return self._epoch == epoch

    def set(self, epoch: int, size: int, index: Tensor, probs: Tensor, labels: Tensor, weight: Tensor) -> None:
        """Store targets of samples ``index`` [N] (others unknown); ``size`` bounds sample indices. ``probs`` go to a
        new file (the last refresh's may be linked by a checkpoint, so it is never written again).

        Under DDP each rank keeps the ``probs`` it computed (DDP broadcasts only the buffers), so an uninterrupted
        run and a resumed one (every rank reads rank 0's file) agree only if every rank's refresh is bit-identical:
        a hash of ``index`` and ``probs`` is compared across the ranks here (:func:`same_on_every_rank`; SHA-1, 0.2 s
        for 300 MiB, only when a process group is initialized). That comparison is a collective at the end: a rank
        that fails before it (no room for its file) leaves the others waiting in it until its exit or the group's
        timeout ends the wait; done first, the others would wait in the next collective instead."""
        dev = self.epoch.device
        C = probs.shape[1]
        size = max(size, int(index.max()) + 1)
        rows = RowFile.create((size, C), np.float32, self._folder(), self._scratch()) if C else torch.zeros(size, 0)
        if tuple(self.labels.shape) == (size,) and self.labels.device == dev:  # the last refresh's: reuse
            for buf in (self.labels, self.weight, self.known):
                buf.zero_()
        else:
            self.labels = torch.zeros(size, dtype=torch.long, device=dev)
            self.weight = torch.zeros(size, device=dev)
            self.known = torch.zeros(size, dtype=torch.bool, device=dev)
        digest = hashlib.sha1(usedforsecurity=False) if group_size() > 1 else None
        for s in range(0, len(index), CHUNK):  # rows in chunks: ``probs`` may be memory-mapped, the buffers on a GPU
            i = index[s:s + CHUNK]
            p = probs[s:s + CHUNK].float().cpu()
            if C:
                rows[i.cpu()] = p
            if digest is not None:
                # numpy's stubs give ndarray no __buffer__ (it has the buffer protocol)
                digest.update(np.ascontiguousarray(i.cpu().numpy()))  # type: ignore[arg-type]
                digest.update(np.ascontiguousarray(p.numpy()))  # type: ignore[arg-type]
            i = i.to(dev)
            self.labels[i] = labels[s:s + CHUNK].to(dev)
            self.weight[i] = weight[s:s + CHUNK].to(dev).float()
            self.known[i] = True
        self._probs, self._lost = rows, None  # the previous file goes with its last tensor (a link keeps its bytes)
        self.epoch.fill_(epoch)
        self._epoch = epoch
        if digest is not None:
            same_on_every_rank(int.from_bytes(digest.digest()[:8], "little") >> 2,
                               f"the per-sample targets refreshed for epoch {epoch}",
                               "the student (its weights and buffers) and the images")

    def get(self, index: Tensor, host_index: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
        """(probs [B, C], labels [B], weight [B], known [B]) for ``index`` [B]; None before any refresh.
        ``host_index``: the same indices on the CPU (:attr:`Batch.host_index`): the rows are gathered with it, which
        spares a device-to-host copy of ``index`` (a wait for the GPU) every step. Nothing here waits for the device:
        the epoch is read from its host mirror, and on CUDA the rows go from pinned memory with ``non_blocking`` (from
        pageable memory the copy may first wait for the work queued on the GPU)."""
        if self._epoch < 0 or len(self.known) == 0:
            return None
        if len(self._probs) != len(self.known):
            raise DistillError(f"{self._lost or 'probs'}: missing from the loaded state (a non-strict load), so the "
                               f"{len(self.known)} samples' labels have no soft targets; load a state that has it")
        dev = self.known.device
        i = index.to(dev, non_blocking=True)  # the batch's device index: already there
        inside = i < len(self.known)
        j = torch.where(inside, i, torch.zeros_like(i))
        known = self.known[j] & inside
        h = index.cpu() if host_index is None else host_index
        h = torch.where(h < len(self.known), h, torch.zeros_like(h))
        if dev.type == "cuda" and self._probs.shape[1]:  # pinned: the copy below neither waits nor is waited for
            pinned = torch.empty((len(h), self._probs.shape[1]), dtype=self._probs.dtype, pin_memory=True)
            rows = torch.index_select(self._probs, 0, h, out=pinned)
        else:
            rows = self._probs[h]
        return rows.to(dev, non_blocking=True), self.labels[j], self.weight[j], known


def require_iterate(iterate: Callable[[], Iterator[Batch]] | None, name: str) -> Callable[[], Iterator[Batch]]:
    if iterate is None:
        raise DistillError(f"strategy '{name}' refreshes pseudo-labels each epoch from the training images, but the "
                           "context has no iterate_train (run it through distill.train)")
    return iterate
