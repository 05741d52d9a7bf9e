"""Clean / PGD / corruption accuracy per domain and its printed table.

Used by ``distill eval`` and by the optional ``robust`` section of ``distill train``; what is
measured is a :class:`~distill.config.RobustSettings` (one validated model for both). Accuracies
are fractions (:class:`~distill.records.RobustAccuracy`, written in a
:class:`~distill.records.RobustReport`); :func:`robust_table` prints them as percents.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.config import RobustSettings, format_eps
from distill.data.classes import ClassColumns
from distill.data.folder import DomainFolder
from distill.evaluate import decode_split, seen_classes
from distill.records import RobustAccuracy, RobustReport, pct
from distill.robust.attacks import default_step_size, pgd
from distill.robust.corruptions import corrupt, seeded_generator
from distill.student.model import StudentSpec, load_student
from distill.student.transforms import Normalizer, pixel_transform


class RobustEvaluator:
    """Clean, PGD and corruption accuracy of a student on each domain's split.

    The images are decoded once, as pixels in [0, 1]; the model sees them through the
    student's :class:`~distill.student.transforms.Normalizer`, so PGD's epsilon is in pixel units.

    Args:
        dataset: the data set.
        domains: domains to evaluate (only their images are opened).
        spec: the student's spec (size, mean/std, interpolation).
        settings: what to measure.
        split: ``"test"`` (default), ``"val"`` or ``"train"``.
        workers: DataLoader workers for decoding.
        batch_size: images per attacked batch (the random starts and the corruption noise are
            seeded per batch, so it is part of what the numbers are).
        class_columns: the dataset class ids the student predicts (``data.withhold_classes``):
            only their images, labels remapped (:class:`distill.evaluate.DomainEvaluator` alike).
    """

    def __init__(self, dataset: DomainFolder, domains: Sequence[str], spec: StudentSpec, settings: RobustSettings,
                 split: str = "test", workers: int = 0, batch_size: int = 256,
                 class_columns: Sequence[int] | None = None):
        self.settings, self.spec, self.batch_size = settings, spec, batch_size
        self.normalize = Normalizer(spec.mean, spec.std)
        self._data = decode_split(dataset, domains, pixel_transform(spec), split, workers=workers,
                                  max_images=settings.max_images)
        if class_columns is not None:  # data.withhold_classes: the student's classes only, labels remapped
            self._data = seen_classes(self._data, ClassColumns(class_columns, len(dataset.classes)))

    @property
    def domains(self) -> list[str]:
        return list(self._data)

    def __call__(self, model: nn.Module, device: str | torch.device = "cpu") -> dict[str, RobustAccuracy]:
        """Accuracies as fractions, per domain (``pgd`` keyed by the epsilon as written, ``"8/255"``).
        ``model`` maps normalized images [B, 3, H, W] to logits [B, C].

        PGD accuracy counts an image as correct when the model is right on it *and* on its
        attacked version (so it never exceeds clean accuracy, as in RobustBench).
        """
        settings, batch = self.settings, self.batch_size
        was_training = model.training
        model.eval()
        device = torch.device(device)

        def logits_of(px: Tensor) -> Tensor:
            return model(self.normalize(px))

        out: dict[str, RobustAccuracy] = {}
        try:
            for d, (x_all, y_all) in self._data.items():
                n = len(y_all)
                clean = 0
                adv = {e: 0 for e in settings.pgd_eps}
                cor = {c: 0 for c in settings.corruptions}
                for start in range(0, n, batch):
                    x = x_all[start:start + batch].to(device)
                    y = y_all[start:start + batch].to(device)
                    with torch.no_grad():
                        ok = logits_of(x).argmax(-1) == y
                    clean += int(ok.sum())
                    for i, eps in enumerate(settings.pgd_eps):
                        g = seeded_generator(settings.seed * 1000 + i * 100 + start)
                        xa = pgd(x, lambda px: F.cross_entropy(logits_of(px), y, reduction="none"), eps,
                                 _step_size(settings, eps), settings.pgd_steps, settings.random_start, generator=g)
                        with torch.no_grad():  # robust = right on the clean image and on its attacked version
                            adv[eps] += int((ok & (logits_of(xa).argmax(-1) == y)).sum())
                    for j, c in enumerate(settings.corruptions):
                        xc = corrupt(x, c, settings.severity, seed=settings.seed * 1000 + j * 100_003 + start)
                        with torch.no_grad():
                            cor[c] += int((logits_of(xc).argmax(-1) == y).sum())
                corruptions = {c: v / n for c, v in cor.items()}
                out[d] = RobustAccuracy(n=n, clean=clean / n, pgd={format_eps(e): v / n for e, v in adv.items()},
                                        corruptions=corruptions,
                                        corruption_mean=sum(corruptions.values()) / len(cor) if cor else None)
        finally:
            model.train(was_training)
        return out


def _step_size(settings: RobustSettings, eps: float) -> float:
    """PGD's step at radius ``eps``: the fixed ``pgd_step_size``, or 2.5 · eps / steps."""
    return settings.pgd_step_size if settings.pgd_step_size is not None else default_step_size(eps, settings.pgd_steps)


def robust_table(results: dict[str, RobustAccuracy]) -> str:
    """A plain-text table of :meth:`RobustEvaluator.__call__` results (fractions), one row per domain, in %."""
    if not results:
        return "(no images)"
    first = next(iter(results.values()))
    eps_cols = list(first.pgd)
    cor_cols = list(first.corruptions)
    head = ["domain", "n", "clean"] + [f"pgd {e}" for e in eps_cols] + cor_cols + (["corr. mean"] if cor_cols else [])
    rows = [[d, str(r.n), pct(r.clean)] + [pct(r.pgd[e]) for e in eps_cols] +
            [pct(r.corruptions[c]) for c in cor_cols] + ([pct(r.corruption_mean)] if cor_cols else [])
            for d, r in results.items()]
    widths = [max(10, len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]  # a long domain name fits

    def line(cells: list[str]) -> str:  # the domain left-aligned, the numbers right-aligned
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    lines = [line(head)] + [line(row) for row in rows]
    return "\n".join(lines) + "\n(accuracy in %; PGD: untargeted CE on the label, L-inf in pixel space)"


def evaluate_checkpoint(checkpoint: Path, dataset: DomainFolder, domains: Sequence[str], settings: RobustSettings,
                        device: torch.device, class_columns: Sequence[int] | None = None) -> RobustReport:
    """PGD / corruption accuracy of the student saved at ``checkpoint`` on ``domains``, printed as
    :func:`robust_table` and returned as the :class:`RobustReport` a training run writes (``RUN/robust.json``)."""
    student = load_student(checkpoint).to(device)
    results = RobustEvaluator(dataset, domains, student.spec, settings, class_columns=class_columns)(student, device)
    print(f"robustness of {checkpoint}:\n{robust_table(results)}")
    return RobustReport(checkpoint=str(checkpoint), settings=settings.to_dict(), domains=results)


__all__ = ["RobustEvaluator", "evaluate_checkpoint", "robust_table"]
