"""Zero-shot accuracy of any open_clip teacher on a ``ROOT/DOMAIN/CLASS`` dataset (``distill teacher eval``)."""
from __future__ import annotations

from typing import Sequence

import torch
from tqdm.auto import tqdm

from distill.data.folder import DomainFolder
from distill.data.images import load_rgb
from distill.errors import DistillError
from distill.teacher.clip import Teacher


# ---------------------------------------------------------------------------- evaluation
@torch.no_grad()
def zero_shot_accuracy(teacher: Teacher, dataset: DomainFolder, split: str | None = "test",
                       domains: Sequence[str] | None = None, batch_size: int = 256,
                       progress: bool = False) -> dict[str, float]:
    """Zero-shot top-1 accuracy per domain: argmax of ``teacher(images)`` logits vs. labels.

    The teacher's ``class_names`` must be ``dataset.classes`` (same order). Returns
    ``{domain: accuracy in [0, 1]}`` for the domains with images in ``split``.
    """
    if list(teacher.class_names) != list(dataset.classes):
        raise DistillError("zero_shot_accuracy: teacher class_names differ from the dataset's classes")
    device = teacher.text_embeddings.device
    correct: dict[str, int] = {}
    count: dict[str, int] = {}
    samples = dataset.select(domains, split)
    for i in tqdm(range(0, len(samples), batch_size), desc="zero-shot eval", disable=not progress, leave=False):
        chunk = samples[i:i + batch_size]
        x = torch.stack([teacher.preprocess(load_rgb(dataset.path(s))) for s in chunk]).to(device)
        _, logits = teacher(x)
        pred = logits.argmax(dim=1).cpu()
        for s, p in zip(chunk, pred.tolist()):
            count[s.domain] = count.get(s.domain, 0) + 1
            correct[s.domain] = correct.get(s.domain, 0) + int(p == s.label)
    return {d: correct[d] / count[d] for d in dataset.domains if d in count}
