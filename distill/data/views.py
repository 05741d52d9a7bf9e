"""Teacher views: the crop (and flip) an image went through before the teacher saw it.

Also the settings of a view policy's other ops (:class:`Photometric`, :class:`Mix`), drawn and
replayed by :mod:`distill.data.view_policy`.

A cache row stores its view as ``view_params = (x0, y0, w, h, flip)``: the crop box relative
to the original image size (so ``x0 * W`` is a pixel column) and ``flip`` in {0, 1}. Replaying
the params with :func:`apply_view` at the student's resolution gives the student exactly the
crop the teacher saw, so cached teacher outputs stay valid under augmentation.

- View 0 is the clean view. The teacher receives it through open_clip's own eval transform;
  its params record the box that transform's resize + center crop corresponds to
  (:func:`clean_box`; for ``resize_mode="longest"`` the box extends past the image, i.e. the
  padding). Replaying it reproduces the geometry, up to open_clip's integer rounding.
- Views 1.. are random-resized crops (torchvision's sampling rule) with an optional flip, drawn
  from a generator seeded by ``(seed, sample_index, view)`` only: never global RNG state, so
  any process, worker or resumed run draws the same box for the same row.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence, TypeAlias

import numpy as np
from PIL import Image
from torch import Tensor
from torchvision.transforms.functional import normalize, pil_to_tensor, to_tensor

from distill.errors import DistillError

#: a view's parameters as a cache row holds them: [5] crop params, or a policy's full vector
ViewParams: TypeAlias = np.ndarray | Tensor | Sequence[float]

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


@dataclass(frozen=True)
class ViewConfig:
    """Augmentation of views 1.. (view 0 is always the clean view).

    Attributes:
        scale: range of the crop area as a fraction of the image area. Milder than
            torchvision's (0.08, 1) default: the teacher must still see the object for its
            outputs to be worth distilling.
        ratio: range of the crop aspect ratio (width / height), sampled log-uniformly.
        hflip: probability of a horizontal flip; set 0 for data where a mirror image is another
            class (digits, text).
    """

    scale: tuple[float, float] = (0.25, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5

    def __post_init__(self) -> None:
        s0, s1 = self.scale
        r0, r1 = self.ratio
        if not 0.0 < s0 <= s1 <= 1.0:
            raise DistillError(f"view scale must satisfy 0 < low <= high <= 1, got {tuple(self.scale)}")
        if not 0.0 < r0 <= r1:
            raise DistillError(f"view ratio must satisfy 0 < low <= high, got {tuple(self.ratio)}")
        if not 0.0 <= self.hflip <= 1.0:
            raise DistillError(f"view hflip probability must be in [0, 1], got {self.hflip}")
        object.__setattr__(self, "scale", (float(s0), float(s1)))
        object.__setattr__(self, "ratio", (float(r0), float(r1)))
        object.__setattr__(self, "hflip", float(self.hflip))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["scale"], d["ratio"] = list(self.scale), list(self.ratio)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ViewConfig:
        unknown = set(d) - {"scale", "ratio", "hflip"}
        if unknown:
            raise DistillError(f"view config: unknown key(s) {sorted(unknown)} (known: scale, ratio, hflip)")
        keys: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}  # checked in __post_init__
        return cls(**keys)


def _range(value: Sequence[float], what: str, low: float, high: float) -> tuple[float, float]:
    a, b = (float(v) for v in value)
    if not low <= a <= b <= high:
        raise DistillError(f"view policy {what}: expected {low} <= low <= high <= {high}, got {(a, b)}")
    return a, b


def _prob(value: float, what: str) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise DistillError(f"view policy {what}: a probability must be in [0, 1], got {value}")
    return float(value)


@dataclass(frozen=True)
class Photometric:
    """Photometric ops of views 1..: each fires with its probability, its strength drawn from its range.

    Attributes:
        jitter: probability of colour jitter (brightness, contrast, saturation, hue together).
        brightness: additive shift drawn from [-b, b] (kornia ``adjust_brightness``).
        contrast: factor from [1 - c, 1 + c]. saturation: factor from [1 - s, 1 + s].
        hue: shift from [-h, h] in turns (0.5 = half a turn; kornia takes radians).
        grayscale, invert: probabilities.
        solarize: probability; ``solarize_threshold``: its threshold range in [0, 1].
        blur: probability; ``blur_sigma``: Gaussian sigma range as a fraction of the view's side.
        noise: probability; ``noise_std``: std range of additive Gaussian noise ([0, 1] pixels).
        jpeg: probability; ``jpeg_quality``: quality range (kornia's differentiable JPEG codec).
    """

    jitter: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    grayscale: float = 0.0
    invert: float = 0.0
    solarize: float = 0.0
    solarize_threshold: tuple[float, float] = (0.5, 1.0)
    blur: float = 0.0
    blur_sigma: tuple[float, float] = (0.01, 0.05)
    noise: float = 0.0
    noise_std: tuple[float, float] = (0.01, 0.05)
    jpeg: float = 0.0
    jpeg_quality: tuple[float, float] = (30.0, 90.0)

    def __post_init__(self) -> None:
        for name in ("jitter", "grayscale", "invert", "solarize", "blur", "noise", "jpeg"):
            object.__setattr__(self, name, _prob(getattr(self, name), f"photometric.{name}"))
        for name, high in (("brightness", 1.0), ("contrast", 1.0), ("saturation", 1.0), ("hue", 0.5)):
            if not 0.0 <= float(getattr(self, name)) <= high:
                raise DistillError(f"view policy photometric.{name}: expected a value in [0, {high}], "
                                   f"got {getattr(self, name)}")
            object.__setattr__(self, name, float(getattr(self, name)))
        for name, (low, high) in (("solarize_threshold", (0.0, 1.0)), ("blur_sigma", (0.0, 0.5)),
                                  ("noise_std", (0.0, 1.0)), ("jpeg_quality", (1.0, 100.0))):
            object.__setattr__(self, name, _range(getattr(self, name), f"photometric.{name}", low, high))

    @property
    def active(self) -> bool:
        return any(getattr(self, n) > 0 for n in ("jitter", "grayscale", "invert", "solarize", "blur", "noise",
                                                   "jpeg"))


@dataclass(frozen=True)
class Mix:
    """Mixup / cutmix pairs, timm's rule (``timm.data.mixup.Mixup``) drawn from our own generator.

    Attributes:
        mixup_alpha, cutmix_alpha: Beta(alpha, alpha) of lambda; 0 turns that mode off.
        prob: probability that an augmented view is mixed.
        switch_prob: with both modes on, probability of cutmix over mixup.
    """

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    prob: float = 1.0
    switch_prob: float = 0.5

    def __post_init__(self) -> None:
        for name in ("mixup_alpha", "cutmix_alpha"):
            if float(getattr(self, name)) < 0:
                raise DistillError(f"view policy mix.{name}: must be >= 0, got {getattr(self, name)}")
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "prob", _prob(self.prob, "mix.prob"))
        object.__setattr__(self, "switch_prob", _prob(self.switch_prob, "mix.switch_prob"))

    @property
    def active(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)


def clean_box(image_wh: tuple[int, int], size: tuple[int, int], resize_mode: str = "shortest") -> np.ndarray:
    """The box open_clip's eval resize + center crop corresponds to, as view params.

    Args:
        image_wh: original (width, height).
        size: model input (height, width).
        resize_mode: open_clip's ``shortest`` (resize, center crop), ``longest`` (resize, pad)
            or ``squash`` (resize to size, aspect ratio not kept).

    Returns:
        float32 [5]: (x0, y0, w, h, flip=0) relative to the image size.
    """
    if resize_mode == "squash":
        return np.array([0.0, 0.0, 1.0, 1.0, 0.0], dtype=np.float32)
    if resize_mode not in ("shortest", "longest"):
        raise DistillError(f"unknown open_clip resize_mode '{resize_mode}' (expected shortest, longest or squash)")
    W, H = image_wh
    th, tw = size
    pick = min if resize_mode == "shortest" else max
    ratio = pick(H / th, W / tw)  # original pixels per model pixel
    bw, bh = tw * ratio / W, th * ratio / H
    return np.array([(1 - bw) / 2, (1 - bh) / 2, bw, bh, 0.0], dtype=np.float32)


def view_params(
    seed: int,
    sample_index: int,
    view: int,
    image_wh: tuple[int, int],
    cfg: ViewConfig,
    *,
    clean_size: tuple[int, int] | None = None,
    resize_mode: str = "shortest",
) -> np.ndarray:
    """Crop box and flip of one view of one image, a pure function of its arguments.

    Args:
        seed: the cache's view seed.
        sample_index: the image's index in its dataset.
        view: 0 for the clean view, 1.. for augmented views.
        image_wh: original (width, height) in pixels.
        cfg: augmentation settings of views 1...
        clean_size: model input (height, width); needed for view 0 only (default: square).
        resize_mode: open_clip resize mode of the clean view.

    Returns:
        float32 [5]: (x0, y0, w, h, flip) with the box relative to the image size.
    """
    W, H = (int(v) for v in image_wh)
    if view == 0:
        return clean_box((W, H), clean_size or (1, 1), resize_mode)
    if min(seed, sample_index, view) < 0:
        raise ValueError(f"seed, sample_index and view must be >= 0, got {(seed, sample_index, view)}")
    rng = np.random.default_rng([int(seed), int(sample_index), int(view)])
    # torchvision.transforms.RandomResizedCrop.get_params, drawn from our generator.
    area = W * H
    log_r = (math.log(cfg.ratio[0]), math.log(cfg.ratio[1]))
    box = None
    for _ in range(10):
        target = area * rng.uniform(cfg.scale[0], cfg.scale[1])
        aspect = math.exp(rng.uniform(*log_r))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= W and 0 < h <= H:
            box = (int(rng.integers(0, W - w + 1)), int(rng.integers(0, H - h + 1)), w, h)
            break
    if box is None:  # fallback: central crop clamped to the ratio range
        in_ratio = W / H
        if in_ratio < cfg.ratio[0]:
            w, h = W, int(round(W / cfg.ratio[0]))
        elif in_ratio > cfg.ratio[1]:
            w, h = int(round(H * cfg.ratio[1])), H
        else:
            w, h = W, H
        box = ((W - w) // 2, (H - h) // 2, w, h)
    flip = float(rng.random() < cfg.hflip)
    x0, y0, w, h = box
    return np.array([x0 / W, y0 / H, w / W, h / H, flip], dtype=np.float32)


def apply_view(img: Image.Image, params: ViewParams, size: tuple[int, int],
               interpolation: str = "bicubic") -> Image.Image:
    """Crop ``params``' box out of ``img``, resize it to ``size`` and flip it if asked.

    The box is rounded to whole pixels of ``img``; parts outside the image are black (as
    open_clip's ``longest`` padding). Any resolution works, so a trainer replays the teacher's
    view at the student's input size.

    Args:
        img: the original RGB image (any size; the box is relative).
        params: [5] (x0, y0, w, h, flip) as stored in a cache row's ``view_params``.
        size: output (height, width).
        interpolation: PIL resampling filter name (``bicubic`` like open_clip, ``bilinear``...).

    Returns:
        The view as a ``size``-sized PIL image.
    """
    if interpolation not in _RESAMPLE:
        raise DistillError(f"unknown interpolation '{interpolation}' (known: {', '.join(_RESAMPLE)})")
    x0, y0, w, h, flip = (float(v) for v in (params.tolist() if hasattr(params, "tolist") else params))
    W, H = img.size
    left, top = round(x0 * W), round(y0 * H)
    box = (left, top, left + max(1, round(w * W)), top + max(1, round(h * H)))
    out = img.crop(box).resize((int(size[1]), int(size[0])), _RESAMPLE[interpolation])
    return out.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip >= 0.5 else out


def view_pixels(img: Image.Image, params: ViewParams, size: tuple[int, int],
                interpolation: str = "bicubic") -> Tensor:
    """:func:`apply_view` as 8-bit pixels: what a trainer shows the student, before ``/ 255``.

    The one code path for a student's view: the trainer calls it when it decodes an image, and
    the cache's pixel store (:mod:`distill.teacher.cache.pixels`) calls it to store the same
    bytes ahead of time. ``view_pixels(...).float() / 255`` equals torchvision's ``to_tensor`` of
    the view bit for bit.

    Returns:
        uint8 [3, H, W], contiguous.
    """
    return pil_to_tensor(apply_view(img, params, size, interpolation)).contiguous()


def view_tensor(img: Image.Image, params: np.ndarray, size: tuple[int, int], interpolation: str,
                mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """:func:`apply_view` then to-tensor and normalize: the teacher's input for an augmented view.

    Returns:
        float32 [3, H, W].
    """
    x = to_tensor(apply_view(img, params, size, interpolation))
    return normalize(x, list(mean), list(std))


__all__ = ["Mix", "Photometric", "ViewConfig", "ViewParams", "apply_view", "clean_box", "view_params",
           "view_pixels", "view_tensor"]
