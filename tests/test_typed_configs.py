"""The typed configs a user builds directly (README "Python API") fail with one-line DistillErrors, as the loaders do:
pydantic models (distill/validation.py) and the cache build's dataclasses."""
from __future__ import annotations

import copy
import pickle

import pytest

from distill.config import OptimConfig, RunConfig, StrategyConfig, TrainConfig, load_train_config
from distill.data.split import SplitKeys
from distill.errors import DistillError
from distill.export.config import ExportConfig
from distill.export.qad_config import QADConfig
from distill.recipes import CONFIGS_DIR, load_recipe


@pytest.mark.parametrize("make, line", [
    (lambda: ExportConfig(precisions="fp8"),
     r"^ExportConfig: 'precisions': unknown precision\(s\) fp8; .*\(got 'fp8'\)$"),
    (lambda: ExportConfig(zzz=1), r"^ExportConfig: unknown keyword argument 'zzz' \(keys: .*precisions, .*\)$"),
    (lambda: ExportConfig(precision="fp32"),
     r"^ExportConfig: unknown keyword argument 'precision' \(did you mean 'precisions'\?\)$"),
    (lambda: QADConfig(checkpoint="c", out_dir="o", epochs=0), r"^QADConfig: 'epochs': Input should be greater .* \(got 0\)$"),
    (lambda: QADConfig(checkpoint="c", out_dir="o", zzz=1), r"^QADConfig: unknown keyword argument 'zzz' \(keys: "),
    # an unknown key before the missing one it misspells (this said "missing required key 'out_dir'")
    (lambda: QADConfig(checkpoint="c", out="o"), r"^QADConfig: unknown keyword argument 'out' \(did you mean 'out_dir'"),
    (lambda: OptimConfig(epoch=3), r"^OptimConfig: unknown keyword argument 'epoch' \(did you mean 'epochs'\?\)$"),
    (lambda: QADConfig(checkpoint="c", out_dir="o", epochs=2, observer_epochs=5),
     r"^QADConfig: observer_epochs \(5\) must be <= epochs \(2\)$"),
    (lambda: SplitKeys(bogus=1), r"^SplitKeys: unknown keyword argument 'bogus' \(keys: .*test_fraction, "),
    (lambda: StrategyConfig(name=3), r"^StrategyConfig: 'name': Input should be a valid string \(got 3\)$"),
    (lambda: OptimConfig(batch_size=0), r"^OptimConfig: 'batch_size': Input should be greater .* \(got 0\)$"),
    (lambda: TrainConfig(), r"^TrainConfig: missing required key 'data'$"),
])
def test_constructing_a_config_badly_is_one_line(make, line):
    with pytest.raises(DistillError, match=line):
        make()


def test_strategy_options_and_the_split_keys_of_the_configs_that_carry_them_still_load():
    """StrategyConfig became Checked (one-line errors): its extra keys are still the strategy's options; SplitKeys
    refuses unknown keys, and DataConfig / ExportConfig still take theirs besides the split keys."""
    strategy = StrategyConfig(name="kd", temperature=2.0)
    assert strategy.options() == {"temperature": 2.0} and pickle.loads(pickle.dumps(strategy)) == strategy
    kd = load_recipe("kd", {"strategy.temperature": 3.0, "data.test_fraction": 0.3})
    assert kd.strategy.options()["temperature"] == 3.0 and kd.data.test_fraction == 0.3
    assert ExportConfig(eval_count=2, test_fraction=0.1).split_keys() == {"test_fraction": 0.1}
    assert SplitKeys(test_fraction=0.2).split_keys() == {"test_fraction": 0.2}


def test_a_config_still_pickles_copies_and_loads_sections_with_their_path():
    """The one-line constructor leaves pickling, model_copy and the loaders' --set naming alone."""
    qad = QADConfig(checkpoint="c", out_dir="o", epochs=2)
    assert pickle.loads(pickle.dumps(qad)) == qad and copy.deepcopy(qad) == qad
    assert qad.model_copy(update={"epochs": 3}).epochs == 3
    kd = load_recipe("kd")
    assert pickle.loads(pickle.dumps(kd)) == kd
    with pytest.raises(DistillError, match=r"^optim\.epochs=0: 'optim\.epochs': Input should be greater"):
        load_recipe("kd", {"optim.epochs": 0})


@pytest.mark.parametrize("key", ["optim.epochs", "run.seed", "data.split_seed", "optim.lr", "strategy.temperature"])
def test_a_bool_is_no_number(key):
    """YAML's true (and Python's True) is not 1: pydantic's lax mode took it for an int (and a float)."""
    with pytest.raises(DistillError, match=rf"^{key}=True: .*Input should be a valid (integer|number), not a bool"):
        load_recipe("kd", {key: True})
    with pytest.raises(DistillError, match=r"Input should be a valid integer, not a bool"):
        RunConfig(out="r", seed=False)
    with pytest.raises(DistillError, match=r"^eval_count: Input should be a valid integer, not a bool"):
        ExportConfig.from_options({"eval_count": True})
    with pytest.raises(DistillError, match=r"^QADConfig: 'epochs': Input should be a valid integer, not a bool"):
        QADConfig(checkpoint="c", out_dir="o", epochs=True)


def test_numbers_still_arrive_as_yaml_ints_set_strings_and_ints_for_floats():
    cfg = load_train_config(CONFIGS_DIR / "kd.yaml", ["optim.epochs=3", "run.seed=7", "optim.lr=1", "optim.grad_clip=2"])
    assert (cfg.optim.epochs, cfg.run.seed, cfg.optim.lr, cfg.optim.grad_clip) == (3, 7, 1.0, 2.0)
    assert load_recipe("kd", {"optim.warmup_epochs": 2, "run.deterministic": False}).optim.warmup_epochs == 2.0
    assert ExportConfig.from_options({"eval_count": 0, "calib_count": 8}).calib_count == 8


def _build(**kw):
    from distill.teacher.cache.job import CacheBuildConfig

    return CacheBuildConfig(data="d", out="o", arch="distill-demo-vit", pretrained="none", **kw)


@pytest.mark.parametrize("make, line", [
    (lambda o: o.CacheOptions(views="2"), r"^CacheOptions\.views: expected an integer, got '2' \(str\)$"),
    (lambda o: o.CacheOptions(seed=True), r"^CacheOptions\.seed: expected an integer, got True \(bool\)$"),
    (lambda o: o.CacheOptions(domains=["a", 3]), r"^CacheOptions\.domains: expected domain names"),
    (lambda o: o.AdversarialOptions(epsilon="big"), r"^AdversarialOptions\.epsilon: expected a number"),
    (lambda o: o.PixelOptions(sizes="32"), r"^PixelOptions\.sizes: expected sizes .*got '32'$"),
    (lambda o: o.PixelOptions(sizes=[32, 32]), r"^PixelOptions\.sizes \[32, 32\]: 32x32 listed twice"),
    (lambda o: o.PixelOptions(sizes=(32, 24)), r"^PixelOptions\.sizes \(32, 24\): one 32x24 size or two square ones\? "
                                               r"Write \(\(32, 24\),\) for one H x W store, \[32, 24\] for 32x32 and 24x24$"),
    (lambda o: _build(split={"test_fracton": 0.2}), r"^CacheBuildConfig\.split: unknown key 'test_fracton'"),
    (lambda o: _build(split={"test_fraction": 2}), r"^SplitKeys: 'test_fraction': Input should be less than 1"),
    (lambda o: _build(options=3), r"^CacheBuildConfig\.options: expected a CacheOptions or a mapping"),
    (lambda o: _build(workers="2"), r"^CacheBuildConfig\.workers: expected an integer, got '2' \(str\)$"),
])
def test_cache_build_settings_are_checked_when_made(make, line):
    """They were a TypeError deep in the build (views '2' < 1), an AttributeError (split as a dict), a TypeError in
    __post_init__ (sizes 32 or (32, 32))."""
    from distill.teacher.cache import options

    with pytest.raises(DistillError, match=line):
        make(options)


def test_cache_build_settings_take_what_the_flags_take():
    from distill.data.split import SplitKeys
    from distill.teacher.cache.options import AdversarialOptions, CacheOptions, PixelOptions

    assert CacheOptions(domains="mnist").domains == ("mnist",)  # not ('m', 'n', 'i', 's', 't')
    assert AdversarialOptions(split=None).split is None  # both splits (--adv-split all), though the default is 'train'
    assert CacheOptions(domains="a, b").domains == AdversarialOptions(domains=["a", "b"]).domains == ("a", "b")
    assert PixelOptions(sizes=32).sizes == ((32, 32),) and PixelOptions(sizes=((32, 24),)).sizes == ((32, 24),)
    assert PixelOptions(sizes=[32, 24]).sizes == ((32, 32), (24, 24))  # as --store-pixels 32,24
    assert PixelOptions(sizes=(32,)).sizes == ((32, 32),) and PixelOptions(sizes=(32, 24, 16)).sizes[2] == (16, 16)
    cfg = _build(split={"test_fraction": 0.2}, options={"views": 2}, pixels={"sizes": 16}, unlabeled="/x")
    assert cfg.split == SplitKeys(test_fraction=0.2) and cfg.options == CacheOptions(views=2)
    assert cfg.pixels == PixelOptions(sizes=((16, 16),)) and cfg.unlabeled == ("/x",)


def test_build_cache_takes_a_mapping_of_its_keys(monkeypatch, tmp_path):
    """As export and qad do; a dict was an AttributeError ('dict' object has no attribute 'pretrained')."""
    from distill import api
    from distill.teacher.cache import job

    seen: list[job.CacheBuildConfig] = []
    monkeypatch.setattr(job, "run_cache_build", lambda cfg: seen.append(cfg) or "manifest")
    keys = {"data": tmp_path, "out": tmp_path / "c", "arch": "distill-demo-vit", "pretrained": "none"}
    assert api.build_cache({**keys, "options": {"views": 2}}) == "manifest"
    assert seen == [job.CacheBuildConfig(**keys, options=job.CacheOptions(views=2))]
    with pytest.raises(DistillError, match=r"^build_cache config: unknown key 'view' \(keys: data, out"):
        api.build_cache({**keys, "view": 2})
    with pytest.raises(DistillError, match=r"^build_cache config: missing required key 'pretrained'"):
        api.build_cache({k: v for k, v in keys.items() if k != "pretrained"})
    with pytest.raises(DistillError, match="config must be a CacheBuildConfig or a mapping"):
        api.build_cache("c")  # type: ignore[arg-type]


def test_cache_build_settings_take_numpy_ints_and_pretrained_none():
    """Review 25b L1/L2: pretrained=None (random weights, the Teacher convention) and numpy ints worked before the
    type checks (int() coercion); they arrive as "none" and plain ints."""
    import numpy as np

    from distill.teacher.cache.job import CacheBuildConfig
    from distill.teacher.cache.options import AdversarialOptions, CacheOptions, PixelOptions

    assert CacheBuildConfig(data="d", out="o", arch="distill-demo-vit", pretrained=None) == _build()  # type: ignore[arg-type]
    options = CacheOptions(seed=np.int64(3), views=np.int32(2), topk=np.int64(5))
    assert (options.seed, options.views, options.topk) == (3, 2, 5) and type(options.seed) is int
    adversarial = AdversarialOptions(epsilon=np.float32(0.5), steps=np.int64(2))
    assert adversarial.epsilon == 0.5 and type(adversarial.epsilon) is float and type(adversarial.steps) is int
    assert PixelOptions((np.int64(32),)).sizes == ((32, 32),) and PixelOptions(np.int64(16)).sizes == ((16, 16),)
    assert PixelOptions(((np.int64(32), np.int64(24)),)).sizes == ((32, 24),)
    assert type(PixelOptions([np.int64(8)]).sizes[0][0]) is int
    with pytest.raises(DistillError, match=r"^PixelOptions\.sizes \(32, 24\): one 32x24 size"):
        PixelOptions((np.int64(32), np.int64(24)))
    with pytest.raises(DistillError, match=r"^CacheOptions\.seed: expected an integer, got np\.True_|^CacheOptions\.seed"):
        CacheOptions(seed=np.bool_(True))
