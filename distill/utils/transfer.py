"""Host -> device copies that do not make the host wait: :func:`to_device`.

``t.to(cuda, non_blocking=True)`` is asynchronous only from page-locked (pinned) host memory. From ordinary
(pageable) memory CUDA stages the copy through a driver buffer and, by its documented rule for pageable transfers,
first synchronizes the stream: the host waits for every kernel queued so far (the previous training step) before it
can queue the next one, whatever ``non_blocking`` says. The DataLoader pins what it yields on a CUDA run
(``pin_memory=True``: pixels, labels, domain, index, view), but tensors made on the host after it (the teacher
cache's rows, read from its memory map by sample index; labels looked up by index) are pageable; those are pinned
here first.

``pin_memory()`` takes its block from torch's caching host allocator, which reuses a freed pinned block of the size
once the copies recorded on it have finished: a staging buffer per shape, reused, without bookkeeping here (a
hand-kept buffer would need its own event per copy, or the next step could overwrite rows still in flight). The
price is one host memcpy of the rows (kilobytes to a few MB a step) into that block.
"""
from __future__ import annotations

import torch
from torch import Tensor


def to_device(t: Tensor, device: torch.device) -> Tensor:
    """``t`` on ``device``, queued without waiting for the device: a pageable host tensor bound for CUDA is pinned
    first (one already pinned, e.g. by the DataLoader, is not copied again). Elsewhere ``t.to(device,
    non_blocking=True)`` as it is (on the CPU, no copy)."""
    if device.type == "cuda" and t.device.type == "cpu" and not t.is_pinned():
        t = t.pin_memory()
    return t.to(device, non_blocking=True)
