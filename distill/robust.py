"""Robustness: PGD in pixel space, common corruptions, and per-domain robust accuracy.

Everything here works on **pixels** ``[B, 3, H, W]`` in [0, 1]; a model is always reached
through its own normalization (``kornia.enhance.normalize`` with the student's mean/std, or
the teacher's preprocessing), so an ``epsilon`` is a budget in image space — the same number
whatever the network's input statistics are (an attack on normalized tensors would silently
scale the budget by 1/std per channel).

- :func:`pgd`: projected gradient ascent (Madry et al. 2018, "Towards Deep Learning Models
  Resistant to Adversarial Attacks") of any per-sample loss inside the L∞ ball, used by the
  adversarial strategies, the adversarial cache views and the robust evaluation.
- :data:`CORRUPTIONS`: common corruptions of arbitrary RGB tensors at five severities
  (Hendrycks & Dietterich 2019, "Benchmarking Neural Network Robustness to Common Corruptions
  and Perturbations"; CIFAR-10-C parameters, which suit small images). The MNIST-C functions
  of :mod:`distill.data.builtin` are not reused: they take one 32x32 grayscale array each
  and hard-code that size, while evaluation must handle any RGB input size in batches.
- :class:`RobustEvaluator`: clean / PGD / corruption accuracy per domain for ``distill eval``
  and the optional ``robust`` section of ``distill train``.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.errors import DistillError
from distill.student.transforms import Normalizer, pixel_transform


# ---------------------------------------------------------------------------- epsilons
def parse_eps(text: str | float | int) -> float:
    """``"2/255"``, ``"0.01"`` or a number -> float in pixel units ([0, 1] images)."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        s = str(text).strip()
        try:
            value = float(Fraction(s)) if "/" in s else float(s)
        except (ValueError, ZeroDivisionError):
            raise DistillError(f"epsilon '{text}': expected a number or a fraction such as 2/255") from None
    if not 0 <= value <= 1:
        raise DistillError(f"epsilon {text}: must be in [0, 1] (pixel units; 8/255 = {8 / 255:.4f})")
    return value


def format_eps(eps: float) -> str:
    """0.00784 -> ``"2/255"`` when eps is a whole number of 8-bit levels, else ``"0.0100"``."""
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-4 else f"{eps:.4g}"


# ---------------------------------------------------------------------------- PGD
def pgd(pixels: Tensor, loss_fn: Callable[[Tensor], Tensor], epsilon: float, step_size: float, steps: int,
        random_start: bool = True, generator: torch.Generator | None = None, init: Tensor | None = None) -> Tensor:
    """Projected gradient ascent on ``loss_fn`` inside the L∞ ball of radius ``epsilon``.

    Each step moves by ``step_size · sign(∇)`` and projects back onto
    ``[pixels − ε, pixels + ε] ∩ [0, 1]``, so the result is always a valid image within ε of
    the input. Gradients are taken w.r.t. the input only (``torch.autograd.grad``): no
    gradient accumulates in any model parameter.

    Args:
        pixels: clean images [B, 3, H, W] in [0, 1].
        loss_fn: adversarial pixels [B, 3, H, W] -> per-sample loss [B] (or a scalar) to maximise;
            it must normalize the pixels itself (see module docstring).
        epsilon: L∞ radius in pixel units (8/255 ≈ 0.031).
        step_size: per-step move in pixel units.
        steps: number of ascent steps (0 returns the random start, or the input).
        random_start: start from a uniform point of the ball (Madry et al.) instead of the input.
        generator: CPU generator for the random start (default: the global RNG).
        init: explicit starting point [B, 3, H, W] (projected onto the ball; overrides ``random_start``).

    Returns:
        Adversarial pixels [B, 3, H, W], detached.
    """
    x0 = pixels.detach()
    if epsilon <= 0:
        return x0.clone()
    lo, hi = (x0 - epsilon).clamp(min=0), (x0 + epsilon).clamp(max=1)
    if init is not None:
        x = torch.max(torch.min(init.detach().to(x0), hi), lo)
    elif random_start:
        noise = torch.rand(x0.shape, generator=generator, dtype=torch.float32)
        x = (x0 + (noise.to(x0.device, x0.dtype) * 2 - 1) * epsilon).clamp(0, 1)
    else:
        x = x0.clone()
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(x)
            (grad,) = torch.autograd.grad(loss.sum(), x)
        x = torch.max(torch.min(x.detach() + step_size * grad.sign(), hi), lo)
    return x.detach()


def default_step_size(epsilon: float, steps: int) -> float:
    """Madry et al.'s rule of thumb: 2.5 · ε / steps (lets PGD reach the boundary and move along it)."""
    return 2.5 * epsilon / max(steps, 1)


def kl_per_sample(p_logits: Tensor, q_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """KL(softmax(p/T) || softmax(q/T)) per sample: [B, C], [B, C] -> [B]."""
    log_p = F.log_softmax(p_logits.float() / temperature, dim=-1)  # fp32 even under autocast
    log_q = F.log_softmax(q_logits.float() / temperature, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def teacher_logits_with_grad(teacher: Any, teacher_input: Callable[[Tensor], Tensor], pixels: Tensor) -> Tensor:
    """The teacher's zero-shot logits [B, C] on pixels [B, 3, H, W], differentiable w.r.t. the pixels.

    ``Teacher.forward`` runs under ``no_grad``; an attack through the teacher needs the input
    gradient, so this calls the (frozen) image tower directly and applies the same rule:
    ``logit_scale · normalize(encode_image(x)) · Tᵀ``.
    """
    from distill.utils.runtime import full_precision

    with getattr(teacher, "autocast", nullcontext)():  # the teacher's own inference precision
        feats = teacher.model.encode_image(teacher_input(pixels))
    with full_precision(feats):
        emb = F.normalize(feats.float(), dim=-1)
        return teacher.logit_scale * emb @ teacher.text_embeddings.float().T


# ---------------------------------------------------------------------------- corruptions
def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _gaussian_noise(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    sigma = (0.04, 0.06, 0.08, 0.09, 0.10)[severity - 1]
    return x + sigma * torch.randn(x.shape, generator=g).to(x)


def _shot_noise(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    lam = (500.0, 250.0, 100.0, 75.0, 50.0)[severity - 1]
    return torch.poisson((x * lam).cpu().float(), generator=g).to(x) / lam


def _gaussian_blur(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    from kornia.filters import gaussian_blur2d

    sigma = (0.4, 0.6, 0.7, 0.8, 1.0)[severity - 1]
    k = 2 * math.ceil(3 * sigma) + 1
    return gaussian_blur2d(x, (k, k), (sigma, sigma), border_type="reflect")


def _contrast(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    c = (0.75, 0.5, 0.4, 0.3, 0.15)[severity - 1]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * c + mean


def _jpeg(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    from kornia.enhance import jpeg_codec_differentiable

    quality = (80.0, 65.0, 58.0, 50.0, 40.0)[severity - 1]
    h, w = x.shape[-2:]
    ph, pw = (-h) % 16, (-w) % 16  # the codec works on whole 16x16 macroblocks
    xp = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
    out = jpeg_codec_differentiable(xp.clamp(0, 1), torch.tensor([quality], device=x.device, dtype=x.dtype))
    return out[..., :h, :w]


#: name -> fn(pixels [B, 3, H, W] in [0, 1], severity 1..5, generator) -> corrupted pixels (clamped by the caller)
CORRUPTIONS: dict[str, Callable[[Tensor, int, torch.Generator], Tensor]] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "gaussian_blur": _gaussian_blur,
    "contrast": _contrast,
    "jpeg": _jpeg,
}


def corrupt(pixels: Tensor, name: str, severity: int = 3, seed: int = 0) -> Tensor:
    """Apply corruption ``name`` at ``severity`` (1..5) to pixels [B, 3, H, W]; deterministic given ``seed``."""
    if name not in CORRUPTIONS:
        raise DistillError(f"unknown corruption '{name}' (known: {', '.join(CORRUPTIONS)})")
    if not 1 <= severity <= 5:
        raise DistillError(f"corruption severity must be 1..5, got {severity}")
    with torch.no_grad():
        return CORRUPTIONS[name](pixels, severity, _gen(seed)).clamp(0, 1)


def check_corruptions(names: Sequence[str]) -> list[str]:
    """Validate corruption names (``all`` expands to every one)."""
    names = list(names)
    if names == ["all"]:
        return list(CORRUPTIONS)
    for n in names:
        if n not in CORRUPTIONS:
            raise DistillError(f"unknown corruption '{n}' (known: {', '.join(CORRUPTIONS)}, or 'all')")
    return names


# ---------------------------------------------------------------------------- evaluation
@dataclass(frozen=True)
class RobustSettings:
    """What a robust evaluation measures (``distill eval`` flags / the train config's ``robust`` section)."""

    pgd_eps: tuple[float, ...] = (2 / 255,)  # L∞ radii in pixel units; () = no attack
    pgd_steps: int = 10
    pgd_step_size: float | None = None  # None: 2.5 · eps / steps
    random_start: bool = True
    corruptions: tuple[str, ...] = tuple(CORRUPTIONS)  # () = none
    severity: int = 3
    max_images: int | None = None  # per domain (first N of the split in dataset order)
    seed: int = 0
    batch_size: int = 256

    def step_for(self, eps: float) -> float:
        return self.pgd_step_size if self.pgd_step_size is not None else default_step_size(eps, self.pgd_steps)

    def to_dict(self) -> dict[str, Any]:
        return {"pgd_eps": [format_eps(e) for e in self.pgd_eps], "pgd_steps": self.pgd_steps,
                "pgd_step_size": None if self.pgd_step_size is None else float(self.pgd_step_size),
                "pgd_step_rule": "2.5*eps/steps" if self.pgd_step_size is None else "fixed",
                "random_start": self.random_start, "attack": "untargeted CE on the label (L-inf, pixel space)",
                "corruptions": list(self.corruptions), "severity": self.severity, "max_images": self.max_images,
                "seed": self.seed}


class RobustEvaluator:
    """Clean, PGD and corruption accuracy of a student on each domain's split.

    Args:
        dataset: a :class:`~distill.data.DomainFolder`.
        domains: domains to evaluate (only their images are opened).
        spec: the student's :class:`~distill.student.model.StudentSpec` (size, mean/std, interpolation).
        settings: what to measure.
        split: ``"test"`` (default) or ``"train"``.
    """

    def __init__(self, dataset: Any, domains: Sequence[str], spec: Any, settings: RobustSettings,
                 split: str = "test", workers: int = 0):
        from torch.utils.data import DataLoader

        from distill.evaluate import ImageList

        self.settings, self.spec = settings, spec
        self.normalize = Normalizer(spec.mean, spec.std)
        self._data: dict[str, tuple[Tensor, Tensor]] = {}
        for d in domains:
            samples = dataset.select([d], split)
            if settings.max_images:
                samples = samples[: settings.max_images]
            if not samples:
                continue
            xs, ys = [], []
            for x, y, _ in DataLoader(ImageList(dataset, samples, pixel_transform(spec)), batch_size=256,
                                      num_workers=workers):
                xs.append(x)
                ys.append(y)
            self._data[d] = (torch.cat(xs), torch.cat(ys))

    @property
    def domains(self) -> list[str]:
        return list(self._data)

    def __call__(self, model: nn.Module, device: str | torch.device = "cpu") -> dict[str, dict[str, Any]]:
        """Accuracies in percent: ``{domain: {"n", "clean", "pgd": {eps: acc}, "corruptions": {name: acc},
        "corruption_mean"}}``. ``model`` maps normalized images [B, 3, H, W] to logits [B, C].

        PGD accuracy counts an image as correct when the model is right on it *and* on its
        attacked version (so it never exceeds clean accuracy, as in RobustBench).
        """
        s = self.settings
        was_training = model.training
        model.eval()
        device = torch.device(device)

        def logits_of(px: Tensor) -> Tensor:
            return model(self.normalize(px))

        out: dict[str, dict[str, Any]] = {}
        try:
            for d, (x_all, y_all) in self._data.items():
                n = len(y_all)
                clean = 0
                adv = {e: 0 for e in s.pgd_eps}
                cor = {c: 0 for c in s.corruptions}
                for start in range(0, n, s.batch_size):
                    x = x_all[start:start + s.batch_size].to(device)
                    y = y_all[start:start + s.batch_size].to(device)
                    with torch.no_grad():
                        ok = logits_of(x).argmax(-1) == y
                    clean += int(ok.sum())
                    for i, eps in enumerate(s.pgd_eps):
                        g = _gen(s.seed * 1000 + i * 100 + start)
                        xa = pgd(x, lambda px: F.cross_entropy(logits_of(px), y, reduction="none"), eps,
                                 s.step_for(eps), s.pgd_steps, s.random_start, generator=g)
                        with torch.no_grad():  # robust = right on the clean image and on its attacked version
                            adv[eps] += int((ok & (logits_of(xa).argmax(-1) == y)).sum())
                    for j, c in enumerate(s.corruptions):
                        xc = corrupt(x, c, s.severity, seed=s.seed * 1000 + j * 100_003 + start)
                        with torch.no_grad():
                            cor[c] += int((logits_of(xc).argmax(-1) == y).sum())
                row: dict[str, Any] = {"n": n, "clean": 100.0 * clean / n,
                                       "pgd": {format_eps(e): 100.0 * v / n for e, v in adv.items()},
                                       "corruptions": {c: 100.0 * v / n for c, v in cor.items()}}
                row["corruption_mean"] = (sum(row["corruptions"].values()) / len(cor)) if cor else None
                out[d] = row
        finally:
            model.train(was_training)
        return out


def robust_table(results: dict[str, dict[str, Any]]) -> str:
    """A plain-text table of :meth:`RobustEvaluator.__call__` results, one row per domain."""
    if not results:
        return "(no images)"
    first = next(iter(results.values()))
    eps_cols = list(first["pgd"])
    cor_cols = list(first["corruptions"])
    head = ["domain", "n", "clean"] + [f"pgd {e}" for e in eps_cols] + cor_cols + (["corr. mean"] if cor_cols else [])
    widths = [max(10, len(h)) for h in head]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    for d, r in results.items():
        cells = [d, str(r["n"]), f"{r['clean']:.1f}"] + [f"{r['pgd'][e]:.1f}" for e in eps_cols] + \
                [f"{r['corruptions'][c]:.1f}" for c in cor_cols] + \
                ([f"{r['corruption_mean']:.1f}"] if cor_cols else [])
        lines.append("  ".join(c.rjust(w) for c, w in zip(cells, widths)))
    return "\n".join(lines) + "\n(accuracy in %; PGD: untargeted CE on the label, L-inf in pixel space)"


@dataclass
class RobustReport:
    """Settings + results, as written to JSON by ``distill eval --json`` and ``summary.json``."""

    settings: RobustSettings
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"settings": self.settings.to_dict(), "domains": self.results}


__all__ = ["CORRUPTIONS", "RobustEvaluator", "RobustReport", "RobustSettings", "check_corruptions", "corrupt",
           "default_step_size", "format_eps", "kl_per_sample", "parse_eps", "pgd",
           "robust_table", "teacher_logits_with_grad"]
