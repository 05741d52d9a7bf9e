"""SampleTargets, the per-sample targets of the source-free strategies, on their own: a load that lacks the soft
targets, where each rank's files go, the batch's host index, and the DDP ranks' agreement on a refresh."""
from __future__ import annotations

import os
import tempfile

import pytest
import torch

from distill.errors import DistillError
from distill.strategies._pseudo import SampleTargets
from tests.gloo import free_port


def _state(n: int = 5, classes: int = 3) -> dict[str, torch.Tensor]:
    return {"probs": torch.full((n, classes), 1 / classes), "labels": torch.arange(n) % classes,
            "weight": torch.ones(n), "known": torch.ones(n, dtype=torch.bool), "epoch": torch.tensor(2)}


@pytest.mark.parametrize("refreshed", [False, True])
def test_a_non_strict_load_without_the_soft_targets_is_one_line_naming_the_key(tmp_path, refreshed):
    """load_state_dict(strict=False) of a state without 'probs': the labels are loaded, the soft targets are not;
    get() says so in one line naming the key. Before, it raised a bare IndexError, or (after an earlier refresh
    of the same size) silently paired that refresh's rows with the loaded labels."""
    targets = SampleTargets(lambda: str(tmp_path))
    if refreshed:
        targets.set(0, 5, torch.arange(5), torch.rand(5, 3), torch.zeros(5, dtype=torch.long), torch.ones(5))
    state = {f"targets.{k}": v for k, v in _state().items() if k != "probs"}
    module = torch.nn.Module()
    module.targets = targets
    missing = module.load_state_dict(state, strict=False).missing_keys
    assert missing == ["targets.probs"] and int(targets.epoch) == 2
    with pytest.raises(DistillError, match=r"^targets\.probs: missing from the loaded state .*5 samples") as e:
        targets.get(torch.tensor([0, 4]))
    assert "\n" not in str(e.value)
    targets.load_state_dict(_state())  # a whole state: usable again
    assert torch.equal(targets.get(torch.tensor([0, 4]))[0], torch.full((2, 3), 1 / 3))


def _where(t: torch.Tensor) -> str:
    """The path of the file under a RowFile's tensor, as /proc/self/fd shows it ("... (deleted)" without a name)."""
    from distill.utils.rowfile import RowFile

    rows = RowFile.backing(t)
    assert rows is not None
    return os.readlink(f"/proc/self/fd/{rows._fd}")


def _refresh(targets: SampleTargets) -> None:
    targets.set(0, 6, torch.arange(6), torch.rand(6, 3), torch.zeros(6, dtype=torch.long), torch.ones(6))


def test_a_rank_that_saves_no_checkpoint_keeps_its_targets_unnamed_in_the_folder_or_in_tmpdir(tmp_path, monkeypatch):
    """A DDP rank other than 0 (scratch): its files are O_TMPFILEs in the run's checkpoint folder (disk, where a
    tmpfs TMPDIR would be RAM; no name to clash or leave behind). Where that file system has no O_TMPFILE (NFS),
    not a named-then-unlinked file there (a .nfsXXXX entry) but one in TMPDIR."""
    ckpt, tmp = tmp_path / "run" / "checkpoints", tmp_path / "tmpdir"
    tmp.mkdir()
    ckpt.mkdir(parents=True)  # rank 0's (a rank that saves none does not make it)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    targets = SampleTargets(lambda: str(ckpt), lambda: True)
    _refresh(targets)
    assert _where(targets.probs).startswith(f"{ckpt}/") and _where(targets.probs).endswith(" (deleted)")
    assert list(ckpt.iterdir()) == []
    monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    made = []
    real = tempfile.mkstemp
    monkeypatch.setattr(tempfile, "mkstemp", lambda **kw: made.append(kw["dir"]) or real(**kw))
    _refresh(targets)
    assert _where(targets.probs).startswith(f"{tmp}/") and made == [tmp]
    linked = SampleTargets(lambda: str(ckpt))  # rank 0: its file is linked by a checkpoint, so in the folder
    _refresh(linked)
    assert _where(linked.probs).startswith(f"{ckpt}/") and made == [tmp, ckpt]


def test_a_rank_that_saves_no_checkpoint_makes_no_folder_and_falls_back_to_tmpdir_where_it_cannot_write(
        tmp_path, monkeypatch):
    """The run's checkpoint folder is rank 0's: on another node (a node-local run.out) it may be missing, or not
    writable. A rank that saves no checkpoint does not make it (no stray run folders on the other nodes), and any
    error there sends its file to TMPDIR instead of stopping the run; rank 0's own file still goes there or fails."""
    import errno

    from distill.utils import rowfile as rowfile_mod

    ckpt, tmp = tmp_path / "run" / "checkpoints", tmp_path / "tmpdir"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    targets = SampleTargets(lambda: str(ckpt), lambda: True)
    _refresh(targets)  # the folder is missing on this node
    assert _where(targets.probs).startswith(f"{tmp}/") and not (tmp_path / "run").exists()
    ckpt.mkdir(parents=True)
    real = os.open
    for code in (errno.EACCES, errno.EROFS, errno.ENOSPC):
        def refused(path, flags, *args, code=code, **kwargs):
            if str(path) == str(ckpt) and flags & os.O_TMPFILE == os.O_TMPFILE:
                raise OSError(code, os.strerror(code))
            return real(path, flags, *args, **kwargs)

        monkeypatch.setattr(rowfile_mod.os, "open", refused)
        _refresh(targets)
        assert _where(targets.probs).startswith(f"{tmp}/"), code
    with pytest.raises(DistillError, match=f"^{ckpt}: cannot hold"):  # rank 0: a checkpoint must link its file
        _refresh(SampleTargets(lambda: str(ckpt)))


def test_the_rows_are_gathered_with_the_host_index_without_copying_the_device_one_back(tmp_path, monkeypatch):
    """get(index, host_index): the rows come from the CPU copy of the batch's indices (on a GPU run, index.cpu()
    was a device-to-host copy and a wait every step); the same result as without it, indices past the targets
    included."""
    targets = SampleTargets(lambda: str(tmp_path))
    _refresh(targets)
    index = torch.tensor([5, 0, 7, 3])  # 7: a sample no refresh covered
    want = targets.get(index)

    def no_copy_back(self, *args, **kwargs):
        raise AssertionError("a copy of the batch's sample index back to the host")

    monkeypatch.setattr(torch.Tensor, "cpu", no_copy_back)
    got = targets.get(index, index.clone())
    assert all(torch.equal(a, b) for a, b in zip(got, want)) and got[3].tolist() == [True, True, False, True]


def _fake_group(monkeypatch, other) -> list[int]:
    """A process group of two ranks, faked: all_reduce(MAX) folds in the digest ``other(mine)`` of a second rank;
    returns the digests this rank sent."""
    import torch.distributed as tdist

    sent: list[int] = []

    def all_reduce(t, op=None):
        assert op == tdist.ReduceOp.MAX and t.dtype == torch.long
        mine = int(t[0])
        sent.append(mine)
        theirs = other(mine)
        t.copy_(torch.maximum(t, torch.tensor([theirs, -theirs])))

    monkeypatch.setattr(tdist, "is_initialized", lambda: True)
    monkeypatch.setattr(tdist, "get_world_size", lambda: 2)
    monkeypatch.setattr(tdist, "get_backend", lambda: "gloo")
    monkeypatch.setattr(tdist, "get_rank", lambda: 0)
    monkeypatch.setattr(tdist, "all_reduce", all_reduce)
    return sent


def test_without_a_process_group_a_refresh_is_neither_hashed_nor_compared(tmp_path, monkeypatch):
    import hashlib

    import torch.distributed as tdist

    def never(*args, **kwargs):
        raise AssertionError("hashed or compared in a single process")

    monkeypatch.setattr(hashlib, "sha1", never)
    monkeypatch.setattr(tdist, "all_reduce", never)
    _refresh(SampleTargets(lambda: str(tmp_path)))


def test_ranks_whose_refreshes_differ_by_one_bit_are_refused_in_one_line(tmp_path, monkeypatch):
    """Under DDP each rank keeps the probs it computed, so every rank's refresh must be bit-identical: set() compares
    a hash of them across the ranks (a group faked here; the gloo test below runs two real ranks)."""
    index, probs = torch.arange(6), torch.rand(6, 3, generator=torch.Generator().manual_seed(0))
    labels, weight = torch.zeros(6, dtype=torch.long), torch.ones(6)
    sent = _fake_group(monkeypatch, lambda mine: mine)  # a second rank that computed the same
    SampleTargets(lambda: str(tmp_path)).set(0, 6, index, probs, labels, weight)
    SampleTargets(lambda: str(tmp_path)).set(0, 6, index, probs.clone(), labels, weight)
    off = probs.clone()
    off.view(torch.int32)[4, 1] += 1  # one ulp in one row
    SampleTargets(lambda: str(tmp_path)).set(0, 6, index, off, labels, weight)
    assert len(sent) == 3, "the refreshes were not compared across the ranks"
    assert sent[0] == sent[1] != sent[2] and all(0 <= d < 2**62 for d in sent)

    _fake_group(monkeypatch, lambda mine: sent[2])  # the other rank is one ulp off
    with pytest.raises(DistillError, match=r"^the per-sample targets refreshed for epoch 3: the DDP ranks computed "
                                           r"different values \(digests [0-9a-f]+\.\.[0-9a-f]+, rank 0's") as e:
        SampleTargets(lambda: str(tmp_path)).set(3, 6, index, probs, labels, weight)
    assert "\n" not in str(e.value)


def _rank_worker(rank: int, port: int, folder: str, out: str) -> None:
    import torch.distributed as tdist

    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        probs = torch.rand(6, 3, generator=torch.Generator().manual_seed(0))
        index, labels, weight = torch.arange(6), torch.zeros(6, dtype=torch.long), torch.ones(6)
        SampleTargets(lambda: folder).set(0, 6, index, probs, labels, weight)  # the same: passes
        probs[rank, 0] += 1e-7 * rank  # rank 1's refresh differs
        try:
            SampleTargets(lambda: folder).set(1, 6, index, probs, labels, weight)
            error = None
        except DistillError as e:
            error = str(e)
        torch.save({"error": error}, f"{out}.{rank}")
    finally:
        _leave(tdist)


@pytest.mark.slow
def test_two_gloo_ranks_agree_on_a_refresh_or_both_refuse_it(tmp_path):
    import torch.multiprocessing as mp
    port = free_port()
    mp.spawn(_rank_worker, args=(port, str(tmp_path), str(tmp_path / "r")), nprocs=2)
    errors = [torch.load(tmp_path / f"r.{r}")["error"] for r in (0, 1)]
    assert all(e is not None and e.startswith("the per-sample targets refreshed for epoch 1: the DDP ranks computed "
                                              "different values") for e in errors), errors
    assert "rank 0's" in errors[0] and "rank 1's" in errors[1]
    # gloo: what can differ is the student, the software or the kind of CPU, not a GPU model
    assert all("GPU" not in e and e.endswith("the same software on the same kind of CPU") and "buffers" in e
               for e in errors), errors


class _BNStudent(torch.nn.Module):
    """forward_all as a Student's, through a BatchNorm: in eval mode its output depends on the running statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.bn, self.fc, self.head = torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 3), None

    def forward_all(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.bn(images)
        return {"features": f, "logits": self.fc(f)}


def _leave(tdist) -> None:
    """Both ranks done before either tears down: rank 0 hosts the TCP store, and a rank still using it when rank 0's
    process group goes away aborts in gloo ("terminate called without an active exception", SIGABRT: seen once in
    CI, a flaky failure)."""
    try:
        tdist.barrier()
    finally:
        tdist.destroy_process_group()


def _bn_worker(rank: int, port: int, strategy: str, out: str) -> None:
    """One rank of a refresh whose student's BN running statistics differ between the ranks, as after an epoch of
    gloo DDP (no SyncBatchNorm; DDP sends rank 0's buffers only at the next forward)."""
    import torch.distributed as tdist

    from distill.strategies import get_strategy
    from distill.strategies.base import Batch, StrategyContext

    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)  # the same weights on both ranks (DDP keeps them so)
        student = _BNStudent()
        student.bn.running_mean.fill_(0.1 * (rank + 1))  # each rank's own statistics
        student.bn.running_var.fill_(1.0 + rank)
        g = torch.Generator().manual_seed(1)
        x, logits = torch.randn(12, 4, generator=g), torch.randn(12, 3, generator=g)

        def batches():
            for s in range(0, 12, 4):
                yield Batch(pixels=x[s:s + 4], images=x[s:s + 4], teacher_logits=logits[s:s + 4],
                            teacher_logits_all=[logits[s:s + 4]], sample_index=torch.arange(s, s + 4))

        cls = get_strategy(strategy)
        ctx = StrategyContext(num_classes=3, class_names=["a", "b", "c"], iterate_train=batches, num_train=12,
                              num_samples=12, state_linked=rank == 0)
        strat = cls(student, cls.Config(), ctx)
        try:
            strat.refresh(0)
            error = None
        except DistillError as e:
            error = str(e)
        torch.save({"error": error, "labels": strat.targets.labels.clone(), "probs": strat.targets.probs.clone(),
                    "mean": student.bn.running_mean.clone(), "training": student.training}, f"{out}.{rank}")
    finally:
        _leave(tdist)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["sfda", "shot"])
def test_a_refresh_under_gloo_ddp_takes_rank_0s_batchnorm_statistics_on_every_rank(tmp_path, strategy):
    """The refresh runs the student in eval mode on every rank: with each rank's own BN running statistics the ranks'
    targets differed (sfda's refresh was refused by the digest check; shot's labels could differ unchecked). Rank 0's
    buffers are sent to every rank first, so both ranks compute rank 0's targets."""
    import torch.multiprocessing as mp
    port = free_port()
    mp.spawn(_bn_worker, args=(port, strategy, str(tmp_path / "r")), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"r.{r}") for r in (0, 1))
    assert r0["error"] is None and r1["error"] is None, (r0["error"], r1["error"])
    assert torch.equal(r0["mean"], torch.full((4,), 0.1)) and torch.equal(r1["mean"], r0["mean"])
    assert torch.equal(r0["labels"], r1["labels"]) and torch.equal(r0["probs"], r1["probs"])
    assert r0["training"] and r1["training"]  # collect() leaves the mode as it found it
