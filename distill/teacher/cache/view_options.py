"""The view flags of ``distill cache build`` as :class:`~distill.teacher.cache.options.CacheOptions`' ``augment`` and
``policy``, in one function (:func:`view_settings`) for the CLI and the Python API, so that a policy spelled either
way makes the same cache (the plan's ``views`` block, part of the cache's identity, is the same).

==================  ===========================  =========================================================
flag                ``options`` key              Python value
==================  ===========================  =========================================================
``--policy fm``     ``policy``                   ``"fm"``, or ``{"name": "fm", ...}`` with the two below
``--mixup A``       ``policy["mixup"]``          a number (None: the preset's; 0 turns mixup off)
``--cutmix A``      ``policy["cutmix"]``         a number (None: the preset's; 0 turns cutmix off)
``--crop-scale``    ``augment["scale"]``         ``[0.6, 1.0]``
``--crop-ratio``    ``augment["ratio"]``         ``[0.75, 1.3333]``
``--hflip P``       ``augment["hflip"]``         a probability (unset: the policy's, 0 for fm, else 0.5)
==================  ===========================  =========================================================
"""
from __future__ import annotations

import numbers
from typing import Any, Mapping

from distill.data.view_policy import PRESETS, ViewPolicy, preset
from distill.data.views import ViewConfig
from distill.errors import DistillError

#: the keys of ``augment`` and ``policy`` given as mappings, and the flag each stands for
CROP_KEYS = {"scale": "--crop-scale", "ratio": "--crop-ratio", "hflip": "--hflip"}
POLICY_KEYS = {"name": "--policy", "mixup": "--mixup", "cutmix": "--cutmix"}
#: ``CacheOptions``' ``augment`` when none is given: the policy's default crop then (fm: no flips), as without flags
UNSET_AUGMENT = ViewConfig()


def view_settings(augment: Any = UNSET_AUGMENT, policy: Any = None) -> tuple[ViewConfig, ViewPolicy | None]:
    """``CacheOptions``' ``augment`` (the crop of views 1..) and ``policy`` (None: crop-only views) from:

    - ``augment``: a :class:`ViewConfig` (taken as it is), a mapping of ``scale``, ``ratio`` and ``hflip`` (those
      left out: the defaults; ``hflip``: the policy's), or :data:`UNSET_AUGMENT` (the policy's default crop);
    - ``policy``: a :class:`ViewPolicy` (as it is: its crop replaces ``augment``), a preset name (``"crops"``,
      ``"fm"``), a mapping of ``name``, ``mixup`` and ``cutmix`` (``distill cache build``'s ``--policy``, ``--mixup``,
      ``--cutmix``), or None (crop-only views from ``augment``).

    A preset that draws crops and flips only is no policy (None): the cache keeps the crop-only layout, as the CLI's
    ``--policy crops``. A value of the wrong type or an unknown key is one line naming it.
    """
    if isinstance(policy, ViewPolicy):
        return policy.crop, policy
    if policy is None and isinstance(augment, ViewConfig):
        return augment, None
    name, mixup, cutmix = _policy_keys(policy)
    crop = augment if isinstance(augment, ViewConfig) and augment is not UNSET_AUGMENT else \
        _crop(augment, default_hflip=preset(name).crop.hflip)
    chosen = preset(name, crop, mixup=mixup, cutmix=cutmix)
    return crop, None if chosen.crop_only else chosen


def _policy_keys(policy: Any) -> tuple[str, float | None, float | None]:
    """(preset name, mixup, cutmix) of ``policy``: None, a name or a mapping of :data:`POLICY_KEYS`."""
    if policy is None:
        return "crops", None, None
    values = {"name": policy} if isinstance(policy, str) else policy
    if not isinstance(values, Mapping):
        raise DistillError(f"CacheOptions.policy: expected a ViewPolicy, a preset name ({', '.join(PRESETS)}) or a "
                           f"mapping of {', '.join(POLICY_KEYS)}, got {policy!r:.80} ({type(policy).__name__})")
    _known(values, POLICY_KEYS, "policy", " (a policy of your own: a distill.data.view_policy.ViewPolicy)")
    name = values.get("name", "crops")
    if name not in PRESETS:
        raise DistillError(f"CacheOptions.policy: unknown view policy {name!r} (presets: {', '.join(PRESETS)})")
    return name, _number(values.get("mixup"), "policy.mixup"), _number(values.get("cutmix"), "policy.cutmix")


def _crop(augment: Any, default_hflip: float) -> ViewConfig:
    """``augment`` (a mapping of :data:`CROP_KEYS`, or unset) as a ViewConfig; its ``hflip`` unset: ``default_hflip``."""
    values = {} if augment is UNSET_AUGMENT else augment
    if not isinstance(values, Mapping):
        raise DistillError(f"CacheOptions.augment: expected a ViewConfig or a mapping of {', '.join(CROP_KEYS)}, got "
                           f"{augment!r:.80} ({type(augment).__name__})")
    _known(values, CROP_KEYS, "augment", "")
    hflip = _number(values.get("hflip"), "augment.hflip")
    return ViewConfig(scale=_pair(values.get("scale", UNSET_AUGMENT.scale), "augment.scale"),
                      ratio=_pair(values.get("ratio", UNSET_AUGMENT.ratio), "augment.ratio"),
                      hflip=default_hflip if hflip is None else hflip)


def _known(values: Mapping[str, Any], keys: Mapping[str, str], what: str, more: str) -> None:
    """One line for the first key of ``values`` not in ``keys``; a key of the other section says it belongs there."""
    unknown = [k for k in values if k not in keys]
    if unknown:
        flags = ", ".join(f"{key} ({flag})" for key, flag in keys.items())
        other = "policy" if keys is CROP_KEYS else "augment"
        if unknown[0] in (POLICY_KEYS if other == "policy" else CROP_KEYS):
            more = f" ({unknown[0]!r} is a key of options.{other}: {other}={{{unknown[0]!r}: ...}})"
        raise DistillError(f"CacheOptions.{what}: unknown key {unknown[0]!r} (keys: {flags}){more}")


def _number(value: Any, key: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise DistillError(f"CacheOptions.{key}: expected a number, got {value!r:.80} ({type(value).__name__})")
    return float(value)


def _pair(value: Any, key: str) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value):
        raise DistillError(f"CacheOptions.{key}: expected two numbers [LO, HI], got {value!r:.80}")
    return float(value[0]), float(value[1])


def flag_hint(key: str) -> str:
    """`` (--crop-scale is options.augment's 'scale')`` for a flag's name given as an ``options`` key; else ''."""
    flag = f"--{key.replace('_', '-')}"
    for section, keys in (("augment", CROP_KEYS), ("policy", POLICY_KEYS)):
        for name, known in keys.items():
            if known == flag and not (section == "policy" and name == "name"):
                return f" ({flag} is options.{section}'s {name!r}: {section}={{{name!r}: ...}})"
    return ""
