"""SampleTargets, the per-sample targets of the source-free strategies, on their own: a load that lacks the soft
targets, where each rank's files go, the batch's host index, and the DDP ranks' agreement on a refresh."""
from __future__ import annotations

import os
import tempfile

import pytest
import torch

from distill.errors import DistillError
from distill.strategies._pseudo import SampleTargets


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
