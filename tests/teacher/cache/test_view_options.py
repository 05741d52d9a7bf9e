"""build_cache's view keys (QA G F1): ``options.policy`` takes the CLI's preset name (``"fm"``) or a mapping of
``name``/``mixup``/``cutmix``, ``options.augment`` a mapping of ``scale``/``ratio``/``hflip``, through the function
`distill cache build` turns its flags with, so a policy spelled either way is the same cache (its plan's views block,
part of the cache's identity)."""
from __future__ import annotations

from pathlib import Path

import pytest

from distill.cli import main as cli
from distill.data.view_policy import preset
from distill.data.views import ViewConfig
from distill.errors import DistillError
from distill.teacher.cache import CacheOptions
from distill.teacher.cache.build import _views_block
from distill.teacher.cache.job import CacheBuildConfig

BASE = {"data": "data", "out": "c", "arch": "distill-demo-vit", "pretrained": "none"}


def _cli_options(tmp_path: Path, flags: list[str], monkeypatch) -> CacheOptions:
    """The CacheOptions `distill cache build ... FLAGS` hands the build."""
    from distill.teacher.cache import job

    seen: list[CacheBuildConfig] = []

    def fake_build(cfg: CacheBuildConfig) -> None:
        seen.append(cfg)
        raise KeyboardInterrupt  # stop before the summary reads a manifest

    monkeypatch.setattr(job, "run_cache_build", fake_build)
    cli(["cache", "build", "--data", str(tmp_path), "--out", str(tmp_path / "c"), "--arch", "distill-demo-vit",
         "--pretrained", "none", "--views", "3", *flags])  # its interrupt: "interrupted: rerun ..."
    return seen[0].options


@pytest.mark.parametrize(("flags", "options"), [
    ([], {}),
    (["--policy", "fm"], {"policy": "fm"}),
    (["--policy", "fm", "--crop-scale", "0.6,1"], {"policy": "fm", "augment": {"scale": [0.6, 1]}}),
    (["--policy", "fm", "--crop-scale", "0.6,1", "--mixup", "0", "--cutmix", "0.5", "--hflip", "0.5"],
     {"policy": {"name": "fm", "mixup": 0, "cutmix": 0.5}, "augment": {"scale": (0.6, 1.0), "hflip": 0.5}}),
    (["--policy", "crops", "--hflip", "0", "--crop-ratio", "0.5,2"], {"policy": "crops", "augment": {"hflip": 0,
                                                                                                     "ratio": [0.5, 2]}}),
    (["--crop-scale", "0.6,1"], {"augment": {"scale": [0.6, 1]}}),
])
def test_the_cli_flags_and_the_python_keys_make_the_same_cache(flags, options, tmp_path, monkeypatch):
    by_flags = _cli_options(tmp_path, flags, monkeypatch)
    by_keys = CacheBuildConfig.from_options({**BASE, "options": {"views": 3, **options}}).options
    assert by_keys == by_flags and _views_block(by_keys) == _views_block(by_flags)


def test_the_fm_preset_by_name_is_the_policy_spelled_as_an_object():
    """`policy="fm"` with a crop is what `preset("fm", ViewConfig(...))` (the only spelling before) makes."""
    by_object = CacheOptions(views=3, policy=preset("fm", ViewConfig(scale=(0.6, 1.0), hflip=0.0)))
    by_name = CacheOptions(views=3, policy="fm", augment={"scale": [0.6, 1]})  # type: ignore[arg-type]
    assert _views_block(by_name) == _views_block(by_object)
    assert by_name.policy is not None and by_name.policy.crop.hflip == 0.0  # fm draws no flips unless asked
    assert CacheOptions(policy="crops").policy is None  # crops and flips only: the crop-only layout, as --policy crops


@pytest.mark.parametrize(("options", "line"), [
    ({"policy": "fm", "crop_scale": [0.6, 1]},
     "CacheBuildConfig.options: unknown key 'crop_scale' (keys: domains, views, seed, augment, batch_size, shard_size, "
     "dtype, fingerprint, policy, logits, topk, embeddings) (--crop-scale is options.augment's 'scale': "
     "augment={'scale': ...})"),
    ({"mixup": 0.2}, "CacheBuildConfig.options: unknown key 'mixup' (keys: domains, views, seed, augment, batch_size, "
                     "shard_size, dtype, fingerprint, policy, logits, topk, embeddings) (--mixup is options.policy's "
                     "'mixup': policy={'mixup': ...})"),
    ({"policy": "fancy"}, "CacheOptions.policy: unknown view policy 'fancy' (presets: crops, fm)"),
    ({"policy": 5}, "CacheOptions.policy: expected a ViewPolicy, a preset name (crops, fm) or a mapping of name, "
                    "mixup, cutmix, got 5 (int)"),
    ({"augment": {"scale": 0.6}}, "CacheOptions.augment.scale: expected two numbers [LO, HI], got 0.6"),
    ({"augment": {"flip": 0}}, "CacheOptions.augment: unknown key 'flip' (keys: scale (--crop-scale), ratio "
                               "(--crop-ratio), hflip (--hflip))"),
    ({"policy": {"name": "fm", "hflip": 0.5}}, "CacheOptions.policy: unknown key 'hflip' (keys: name (--policy), "
                                               "mixup (--mixup), cutmix (--cutmix)) ('hflip' is a key of "
                                               "options.augment: augment={'hflip': ...})"),
    ({"augment": {"mixup": 0.2}}, "CacheOptions.augment: unknown key 'mixup' (keys: scale (--crop-scale), ratio "
                                  "(--crop-ratio), hflip (--hflip)) ('mixup' is a key of options.policy: "
                                  "policy={'mixup': ...})"),
])
def test_a_wrong_view_key_is_one_line_naming_it(options, line):
    with pytest.raises(DistillError) as e:
        CacheBuildConfig.from_options({**BASE, "options": options})
    assert str(e.value) == line


def test_build_cache_as_the_qa_wrote_it(tmp_path):
    """The README demo's `--views 3 --policy fm --crop-scale 0.6,1`, from Python."""
    from distill.api import build_cache
    from tests.shapes import make_shapes_root

    root = make_shapes_root(tmp_path / "data", ["red"], per_class=2)
    manifest = build_cache({**BASE, "data": root, "out": tmp_path / "c", "workers": 0, "progress": False,
                            "options": {"views": 3, "policy": "fm", "augment": {"scale": [0.6, 1]}}})
    assert manifest is not None and manifest.views.policy is not None and manifest.views.policy["name"] == "fm"
    assert manifest.views.augment["scale"] == [0.6, 1.0] and manifest.views.augment["hflip"] == 0.0
