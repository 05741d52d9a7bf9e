"""Augmented-view policies: crops plus photometric ops and mixup/cutmix pairs, replayable bit for bit.

Function matching (Beyer et al. 2022, "Knowledge distillation: A good teacher is patient and
consistent") matches the teacher on the very input the student sees, aggressively augmented.
A cache stores the teacher's outputs on such views, so each view must be reproducible exactly
from what a cache row holds: its parameter vector (:data:`PARAMS_LAYOUT`, float32) and, for a
mixed view, its partner (sample index and view, integer columns).

- :func:`draw_params` is a pure function of ``(seed, sample_index, view)`` and the policy: it
  draws from ``np.random.default_rng([seed, index, view, stream])``, never from global state
  (kornia's augmentation modules and timm's ``Mixup`` both draw globally). The crop stream is
  :func:`distill.data.views.view_params`' own, so the first 5 params equal a crop-only
  cache's. View 0 is the clean view: never augmented, never mixed.
- :func:`render_view` replays a vector: today's crop (:func:`~distill.data.views.view_pixels`),
  then kornia *functional* ops in a fixed order on CPU float32 with the stored scalars (noise
  from a ``torch.Generator`` seeded by the stored noise seed), rounded to uint8, then mixed with
  the partner's unmixed view rendered by the same function.
- A partner is drawn from the sample's own (domain, split) pool: a source-train image never
  mixes with a target or a test image.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field, fields
from importlib.metadata import version
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from distill.data.sample_table import SPLITS, SampleTable
from distill.data.views import Mix, Photometric, ViewConfig, ViewParams, view_params, view_pixels
from distill.errors import DistillError, DistillWarning
from distill.records import CacheManifest

PARAMS_LAYOUT: tuple[str, ...] = (
    "x0", "y0", "w", "h", "flip",                                   # crop (views.view_params)
    "bright", "contrast", "sat", "hue", "gray", "invert", "solarize_thr",
    "blur_sigma", "noise_std", "noise_seed", "jpeg_q",              # photometric
    "mix_mode", "lam", "cut_x0", "cut_y0", "cut_x1", "cut_y1",      # mix (box in pixels of the rendered view)
)
"""Names of a policy cache row's ``view_params`` columns (a crop-only cache stores the first 5)."""
CROP_PARAMS = 5
_I = {name: i for i, name in enumerate(PARAMS_LAYOUT)}
MIX_MODE, LAM = _I["mix_mode"], _I["lam"]
MIX_NONE, MIX_UP, MIX_CUT = 0, 1, 2
# identity values of the columns after the crop: a vector holding them renders as the plain crop
_IDENTITY = {"bright": 0.0, "contrast": 1.0, "sat": 1.0, "hue": 0.0, "gray": 0.0, "invert": 0.0,
             "solarize_thr": 1.0, "blur_sigma": 0.0, "noise_std": 0.0, "noise_seed": 0.0, "jpeg_q": 0.0,
             "mix_mode": 0.0, "lam": 1.0, "cut_x0": 0.0, "cut_y0": 0.0, "cut_x1": 0.0, "cut_y1": 0.0}
_NOISE_SEEDS = 2 ** 24  # float32 holds every integer below it exactly
_FULL = (0.0, 0.0, 1.0, 1.0, 0.0)  # the whole image, unflipped: view_pixels as a plain resize


@dataclass(frozen=True)
class ViewPolicy:
    """How views 1.. of a cache are drawn: crop, photometric ops, mix. Stored in the cache manifest.

    ``kornia_version`` is recorded: replay is promised for the same kornia (its ops' arithmetic).
    """

    name: str = "crops"
    crop: ViewConfig = field(default_factory=ViewConfig)
    photometric: Photometric = field(default_factory=Photometric)
    mix: Mix = field(default_factory=Mix)
    kornia_version: str = field(default_factory=lambda: version("kornia"))

    @property
    def crop_only(self) -> bool:
        """True when views are crops + flips only: the cache keeps today's 5 params and path."""
        return not self.photometric.active and not self.mix.active

    @property
    def layout(self) -> tuple[str, ...]:
        return PARAMS_LAYOUT[:CROP_PARAMS] if self.crop_only else PARAMS_LAYOUT

    def to_dict(self) -> dict[str, Any]:
        ph = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.photometric).items()}
        return {"name": self.name, "crop": self.crop.to_dict(), "photometric": ph, "mix": asdict(self.mix),
                "kornia_version": self.kornia_version}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ViewPolicy:
        known = {f.name for f in fields(cls)}
        if set(d) - known:
            raise DistillError(f"view policy: unknown key(s) {sorted(set(d) - known)} (known: {sorted(known)})")
        parts: dict[str, Any] = {k: v for k, v in d.items() if k in ("name", "kornia_version")}
        if "crop" in d:
            parts["crop"] = ViewConfig.from_dict(d["crop"])
        for key, typ in (("photometric", Photometric), ("mix", Mix)):
            if key in d:
                names = {f.name for f in fields(typ)}
                if set(d[key]) - names:
                    raise DistillError(f"view policy {key}: unknown key(s) {sorted(set(d[key]) - names)}")
                keys: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d[key].items()}
                parts[key] = typ(**keys)
        return cls(**parts)


STRONG = Photometric(jitter=0.8, brightness=0.3, contrast=0.4, saturation=0.4, hue=0.1, grayscale=0.2,
                     invert=0.2, solarize=0.1, blur=0.2, noise=0.2, noise_std=(0.01, 0.08), jpeg=0.2)
PRESETS = ("crops", "fm")


def preset(name: str, crop: ViewConfig | None = None, mixup: float | None = None,
           cutmix: float | None = None) -> ViewPolicy:
    """``crops`` (today's views: crops + flips) or ``fm`` (function matching: strong photometric ops
    + mixup/cutmix; no flips by default, the built-in suite is digits). ``crop`` overrides the crop."""
    if name == "crops":
        pol = ViewPolicy("crops", crop or ViewConfig())
        mix = Mix()
    elif name == "fm":
        pol = ViewPolicy("fm", crop or ViewConfig(hflip=0.0), STRONG)
        mix = Mix(mixup_alpha=0.4, cutmix_alpha=1.0, prob=0.5, switch_prob=0.5)
    else:
        raise DistillError(f"unknown view policy '{name}' (known: {', '.join(PRESETS)})")
    mix = Mix(mix.mixup_alpha if mixup is None else mixup, mix.cutmix_alpha if cutmix is None else cutmix,
              mix.prob, mix.switch_prob)
    return ViewPolicy(pol.name, pol.crop, pol.photometric, mix)


# ---------------------------------------------------------------------- partners
class PartnerPools:
    """Sample indices grouped by (domain, split), sorted: a mix partner is drawn from its sample's group.

    Held as three arrays (~20 bytes an image, no Python object per image; a dict entry per sample cost ~100): the
    sorted sample indices, each one's group, and the indices again, grouped (each group's slice is its pool).
    """

    def __init__(self, index: np.ndarray, group: np.ndarray):
        """``index[i]``'s group is ``group[i]`` (any integer code: one per (domain, split))."""
        index, group = np.asarray(index, dtype=np.int64), np.asarray(group, dtype=np.int64)
        order = np.argsort(index, kind="stable")
        self._index = index[order]
        codes, inverse = np.unique(group[order], return_inverse=True)
        self._group = inverse.astype(np.int32 if len(codes) > 127 else np.int8)
        grouped = self._index[np.argsort(self._group, kind="stable")]  # ascending within each group
        ends = np.cumsum(np.bincount(inverse, minlength=len(codes)))
        self._pools = [grouped[a:b] for a, b in zip([0, *ends[:-1].tolist()], ends.tolist())]

    @classmethod
    def of(cls, samples: Iterable[tuple[int, str, str]]) -> PartnerPools:
        """Pools of ``(sample index, domain, split)`` triples (a few: tests; a dataset's: :meth:`of_table`)."""
        keys: dict[tuple[str, str], int] = {}
        rows = [(int(i), keys.setdefault((d, s), len(keys))) for i, d, s in samples]
        return cls(np.array([i for i, _ in rows], dtype=np.int64), np.array([g for _, g in rows], dtype=np.int64))

    @classmethod
    def of_table(cls, samples: SampleTable) -> PartnerPools:
        """Pools of a :class:`~distill.data.sample_table.SampleTable`'s samples, from its columns."""
        group = samples.column("domain").astype(np.int64) * len(SPLITS) + samples.column("split")
        return cls(samples.column("index"), group)

    def pool(self, sample_index: int) -> np.ndarray:
        """Sorted sample indices of ``sample_index``'s (domain, split), itself included (KeyError: not pooled)."""
        at = int(np.searchsorted(self._index, sample_index))
        if at >= len(self._index) or int(self._index[at]) != int(sample_index):
            raise KeyError(int(sample_index))
        return self._pools[int(self._group[at])]


def cutmix_box(size: tuple[int, int], lam: float, cy: int, cx: int) -> tuple[tuple[int, int, int, int], float]:
    """timm's ``rand_bbox`` + ``cutmix_bbox_and_lam(correct_lam=True)`` for a given box centre.

    timm draws the centre from global ``np.random``; we draw it from the view's generator and
    apply the same rule here. Returns ((y0, y1, x0, x1), lambda corrected to the box's area).
    """
    h, w = size
    ratio = np.sqrt(1 - lam)
    cut_h, cut_w = int(h * ratio), int(w * ratio)
    y0, y1 = int(np.clip(cy - cut_h // 2, 0, h)), int(np.clip(cy + (cut_h + 1) // 2, 0, h))
    x0, x1 = int(np.clip(cx - cut_w // 2, 0, w)), int(np.clip(cx + (cut_w + 1) // 2, 0, w))
    return (y0, y1, x0, x1), 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)


def draw_params(seed: int, sample_index: int, view: int, image_wh: tuple[int, int], policy: ViewPolicy,
                partner_pool: np.ndarray | None, *, size: tuple[int, int],
                resize_mode: str = "shortest") -> tuple[np.ndarray, int, int]:
    """One view's parameters, a pure function of its arguments.

    Args:
        seed, sample_index, view: the row (view 0: the clean view, never augmented or mixed).
        image_wh: the image's (width, height).
        policy: the cache's policy.
        partner_pool: sorted sample indices of the sample's (domain, split) (:meth:`PartnerPools.pool`);
            None or a pool of one: no mixing.
        size: (H, W) the view is rendered at (the teacher's input): the cutmix box is in its pixels.
        resize_mode: open_clip resize mode (view 0's box).

    Returns:
        (float32 [len(policy.layout)], partner sample index or -1, partner view or -1). The
        partner's unmixed view is its own row ``(partner, partner view)``.
    """
    crop = view_params(seed, sample_index, view, image_wh, policy.crop, clean_size=size, resize_mode=resize_mode)
    if policy.crop_only:
        return crop, -1, -1
    vec = np.array([*crop, *_IDENTITY.values()], dtype=np.float32)
    if view == 0:
        return vec, -1, -1
    key = [int(seed), int(sample_index), int(view)]
    ph, rng = policy.photometric, np.random.default_rng(key + [1])
    gates = rng.random(7)  # jitter gray invert solarize blur noise jpeg: always drawn, so each op's draw is fixed
    vals = {"bright": rng.uniform(-ph.brightness, ph.brightness),
            "contrast": rng.uniform(max(0.0, 1 - ph.contrast), 1 + ph.contrast),
            "sat": rng.uniform(max(0.0, 1 - ph.saturation), 1 + ph.saturation),
            "hue": rng.uniform(-ph.hue, ph.hue) * 2 * math.pi,
            "solarize_thr": rng.uniform(*ph.solarize_threshold), "blur_sigma": rng.uniform(*ph.blur_sigma),
            "noise_std": rng.uniform(*ph.noise_std), "noise_seed": float(rng.integers(0, _NOISE_SEEDS)),
            "jpeg_q": float(rng.integers(int(ph.jpeg_quality[0]), int(ph.jpeg_quality[1]) + 1))}
    on = dict(zip(("jitter", "gray", "invert", "solarize", "blur", "noise", "jpeg"),
                  gates < [ph.jitter, ph.grayscale, ph.invert, ph.solarize, ph.blur, ph.noise, ph.jpeg]))
    if on["jitter"]:
        for name in ("bright", "contrast", "sat", "hue"):
            vec[_I[name]] = vals[name]
    vec[_I["gray"]], vec[_I["invert"]] = float(on["gray"]), float(on["invert"])
    if on["solarize"]:
        vec[_I["solarize_thr"]] = min(vals["solarize_thr"], 0.999)  # >= 1 means off
    if on["blur"] and vals["blur_sigma"] > 0:
        vec[_I["blur_sigma"]] = vals["blur_sigma"]
    if on["noise"] and vals["noise_std"] > 0:
        vec[_I["noise_std"]], vec[_I["noise_seed"]] = vals["noise_std"], vals["noise_seed"]
    if on["jpeg"]:
        vec[_I["jpeg_q"]] = vals["jpeg_q"]
    mix, rng = policy.mix, np.random.default_rng(key + [2])
    pool = np.asarray(partner_pool if partner_pool is not None else [], dtype=np.int64)
    if not mix.active or len(pool) < 2 or rng.random() >= mix.prob:
        return vec, -1, -1
    cut = mix.cutmix_alpha > 0 and (mix.mixup_alpha <= 0 or rng.random() < mix.switch_prob)
    alpha = mix.cutmix_alpha if cut else mix.mixup_alpha
    lam = float(rng.beta(alpha, alpha))
    pos = int(np.searchsorted(pool, sample_index))
    own = pos < len(pool) and pool[pos] == sample_index
    j = int(rng.integers(0, len(pool) - 1 if own else len(pool)))
    partner = int(pool[j + 1 if own and j >= pos else j])
    if cut:
        h, w = size
        (y0, y1, x0, x1), lam = cutmix_box((h, w), lam, int(rng.integers(0, h)), int(rng.integers(0, w)))
        vec[_I["cut_x0"]:_I["cut_y1"] + 1] = (x0, y0, x1, y1)
    vec[MIX_MODE], vec[LAM] = (MIX_CUT if cut else MIX_UP), lam
    return vec, partner, int(view)


def unmixed(vec: np.ndarray) -> np.ndarray:
    """``vec`` with its mix fields reset (no partner): a view whose partner could not be decoded."""
    out = np.array(vec, dtype=np.float32)
    out[MIX_MODE:] = [_IDENTITY[n] for n in PARAMS_LAYOUT[MIX_MODE:]]
    return out


# ---------------------------------------------------------------------- rendering
def _photometric(u8: Tensor, p: np.ndarray) -> Tensor:
    """The photometric ops of vector ``p`` on uint8 [3, H, W], in a fixed order; uint8 out."""
    if all(float(p[_I[n]]) == v for n, v in _IDENTITY.items() if _I[n] < MIX_MODE):
        return u8
    import kornia  # lazy: +0.4 s at import for every trainer and cache reader; only policy views need it
    x = u8.to(torch.float32).div(255).unsqueeze(0)
    f = {n: float(p[_I[n]]) for n in PARAMS_LAYOUT[CROP_PARAMS:MIX_MODE]}
    if f["bright"] != 0:
        x = kornia.enhance.adjust_brightness(x, f["bright"])
    if f["contrast"] != 1:
        x = kornia.enhance.adjust_contrast(x, f["contrast"])
    if f["sat"] != 1:
        x = kornia.enhance.adjust_saturation(x, f["sat"]).clamp(0, 1)
    if f["hue"] != 0:
        x = kornia.enhance.adjust_hue(x, f["hue"]).clamp(0, 1)
    if f["gray"] >= 0.5:
        x = kornia.color.rgb_to_grayscale(x).expand(-1, 3, -1, -1).contiguous()
    if f["invert"] >= 0.5:
        x = kornia.enhance.invert(x)
    if f["solarize_thr"] < 1:
        x = kornia.enhance.solarize(x, f["solarize_thr"])
    if f["blur_sigma"] > 0:
        side = min(x.shape[-2:])
        sigma = f["blur_sigma"] * side
        k = min(2 * math.ceil(3 * sigma) + 1, 2 * (side - 1) + 1)
        x = kornia.filters.gaussian_blur2d(x, (k, k), torch.tensor([[sigma, sigma]], dtype=torch.float32))
    if f["noise_std"] > 0:
        g = torch.Generator().manual_seed(int(f["noise_seed"]))
        x = (x + torch.randn(x.shape, generator=g, dtype=torch.float32) * f["noise_std"]).clamp(0, 1)
    if f["jpeg_q"] > 0:
        x = kornia.enhance.jpeg_codec_differentiable(x, torch.tensor([f["jpeg_q"]], dtype=torch.float32))
    return x.clamp(0, 1).mul(255).round().to(torch.uint8)[0].contiguous()


def _vector(vec: ViewParams) -> np.ndarray:
    return np.asarray(vec.tolist() if isinstance(vec, (np.ndarray, Tensor)) else vec, dtype=np.float32)


def render_view(img: Image.Image, vec: ViewParams, size: tuple[int, int], interpolation: str = "bicubic",
                partner_img: Image.Image | None = None, partner_vec: ViewParams | None = None) -> Tensor:
    """Replay a view: crop, photometric ops, then the mix with the partner's unmixed view.

    Args:
        img: the decoded RGB image.
        vec: the row's ``view_params`` (5 crop params, or :data:`PARAMS_LAYOUT`).
        size: (H, W) to render at: the teacher's input size (the student resizes these bytes).
        interpolation: the crop's resize filter (the teacher's).
        partner_img, partner_vec: the partner image and its row's ``view_params`` (its own mix
            fields are ignored), needed when ``vec`` is mixed.

    Returns:
        uint8 [3, H, W].
    """
    p = _vector(vec)
    u8 = view_pixels(img, p[:CROP_PARAMS], size, interpolation)
    if len(p) == CROP_PARAMS:
        return u8
    u8 = _photometric(u8, p)
    mode = int(p[MIX_MODE])
    if mode == MIX_NONE:
        return u8
    if partner_img is None or partner_vec is None:
        raise DistillError("render_view: a mixed view needs its partner's image and view params")
    q = _vector(partner_vec)
    other = _photometric(view_pixels(partner_img, q[:CROP_PARAMS], size, interpolation), q)
    if mode == MIX_UP:
        lam = torch.tensor(float(p[LAM]), dtype=torch.float32)
        return (u8.to(torch.float32) * lam + other.to(torch.float32) * (1 - lam)).round().to(torch.uint8)
    x0, y0, x1, y1 = (int(v) for v in p[_I["cut_x0"]:_I["cut_y1"] + 1])
    out = u8.clone()
    out[:, y0:y1, x0:x1] = other[:, y0:y1, x0:x1]
    return out


@dataclass(frozen=True)
class PolicyRender:
    """How a policy cache's views reach a student: rendered at the teacher's input, then resized.

    View 0 (the clean view) takes today's path, :func:`view_pixels` at the student's size. Views
    1.. are :func:`render_view` at the teacher's size and interpolation, so noise, blur, JPEG and
    the cutmix box are the teacher's very view, then resized to the student's size (a no-op when
    the sizes match). The pixel store and the trainer's decode path both call :meth:`pixels`.
    """

    teacher_size: tuple[int, int]
    teacher_interpolation: str

    @classmethod
    def for_manifest(cls, manifest: CacheManifest | None) -> PolicyRender | None:
        """None for a crop-only or old cache (today's path), else the teacher's size and filter."""
        if manifest is None or manifest.views.policy is None:
            return None
        built = manifest.views.policy.get("kornia_version")
        if built != version("kornia"):
            warnings.warn(f"this view-policy cache was built with kornia {built}, this is kornia {version('kornia')}: "
                          "views decoded here may differ from the teacher's by rounding (a pixel store replays "
                          "exactly)", DistillWarning, stacklevel=2)
        pre = manifest.preprocess
        return cls((int(pre.size[0]), int(pre.size[1])), str(pre.interpolation))

    def pixels(self, img: Image.Image, view: int, vec: ViewParams, size: tuple[int, int], interpolation: str,
               partner_img: Image.Image | None = None, partner_vec: ViewParams | None = None) -> Tensor:
        """uint8 [3, H, W] at the student's ``size`` of the row ``(view, vec)``."""
        if int(view) == 0:
            return view_pixels(img, _vector(vec)[:CROP_PARAMS], size, interpolation)
        u8 = render_view(img, vec, self.teacher_size, self.teacher_interpolation, partner_img, partner_vec)
        if tuple(int(v) for v in size) == self.teacher_size:
            return u8
        return view_pixels(Image.fromarray(u8.permute(1, 2, 0).numpy()), _FULL, size, interpolation)


__all__ = ["LAM", "MIX_MODE", "PARAMS_LAYOUT", "PRESETS", "PartnerPools", "PolicyRender",
           "ViewPolicy", "cutmix_box", "draw_params", "preset", "render_view", "unmixed"]
