"""SampleTargets, the per-sample targets of the source-free strategies, on their own: a load that lacks the soft
targets, where each rank's files go, the batch's host index, and the DDP ranks' agreement on a refresh."""
from __future__ import annotations

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
