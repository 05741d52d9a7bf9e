"""distill/api.py and distill/__init__.py: the Python API over the CLI's typed configs (the README's
example, which trains and exports, runs in tests/test_readme.py)."""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest

import distill
from distill import api
from distill.config import TrainConfig, dump_config, load_train_config
from distill.errors import DistillError
from distill.recipes import CONFIGS_DIR, load_recipe
from distill.records import RUN_CONFIG
from distill.run_paths import stored_paths


@pytest.fixture
def trained(monkeypatch):
    import distill.train

    calls: list[tuple[TrainConfig, bool]] = []
    monkeypatch.setattr(distill.train, "train", lambda cfg, resume=False, **kw: calls.append((cfg, resume)) or "summary")
    return calls


def test_lazy_top_level_names():
    assert {"build_cache", "adapt", "TrainConfig", "RunSummary", "CacheBuildConfig", "load_recipe"} <= set(dir(distill))
    from distill.teacher.cache.job import CacheBuildConfig

    assert distill.CacheBuildConfig is CacheBuildConfig and distill.adapt is api.adapt
    from distill.export.qad_config import QADConfig, QADRecord

    assert (distill.qad, distill.QADConfig, distill.QADRecord) == (api.qad, QADConfig, QADRecord)
    assert dataclasses.is_dataclass(distill.CacheBuildConfig)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        distill.nope  # noqa: B018


def test_train_config_from_a_name_a_file_or_a_config():
    by_name = api.train_config("kd", {"optim.epochs": 3, "run.out": "runs/x"})
    assert by_name == load_recipe("kd", {"optim.epochs": 3, "run.out": "runs/x"})
    assert api.train_config(CONFIGS_DIR / "kd.yaml", {"optim.epochs": 3, "run.out": "runs/x"}) == by_name
    again = api.train_config(by_name, {"optim.epochs": 4})
    assert again.optim.epochs == 4 and again.strategy == by_name.strategy and api.train_config(by_name) is by_name
    with pytest.raises(DistillError, match="unknown key 'optim.epoch'"):
        api.train_config(by_name, {"optim.epoch": 4})
    with pytest.raises(DistillError, match="must be a TrainConfig"):
        api.train_config({"strategy": "kd"})  # type: ignore[arg-type]


def test_train_and_adapt_resume(trained, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    cfg = stored_paths(load_train_config(CONFIGS_DIR / "sfda.yaml", [f"run.out={run}"]))  # as a run writes it
    (run / RUN_CONFIG).write_text(dump_config(cfg))
    assert api.train(resume=run) == "summary" and api.adapt(resume=run) == "summary"
    assert [(c.strategy.name, r) for c, r in trained] == [("sfda", True), ("sfda", True)]
    with pytest.raises(DistillError, match="exactly as configured"):
        api.train("kd", resume=run)
    with pytest.raises(DistillError, match="exactly as configured"):
        api.adapt(target="mnist_m", resume=run)
    with pytest.raises(DistillError, match="pass source_checkpoint, target and data"):
        api.adapt(target="mnist_m")


def test_train_takes_a_recipe_name(trained):
    assert api.train("erm", {"optim.epochs": 1}) == "summary"
    (cfg, resume), = trained
    assert cfg.strategy.name == "erm" and cfg.optim.epochs == 1 and not resume


def test_adapt_refuses_a_strategy_that_does_not_adapt(tmp_path):
    with pytest.raises(DistillError, match="'kd' is not a source-free adaptation strategy"):
        api.adapt_config(tmp_path, "mnist_m", tmp_path, strategy="kd")


def test_build_cache_from_its_config_returns_its_manifest(tmp_path):
    """`build_cache(CacheBuildConfig)` (what `distill cache build` runs) returns the manifest it wrote; again, the same."""
    from distill.records import CacheManifest
    from distill.teacher.cache import CacheOptions
    from tests.shapes import make_shapes_root

    root = make_shapes_root(tmp_path / "data", ["red", "green"], per_class=4)
    cfg = distill.CacheBuildConfig(data=root, out=tmp_path / "c", arch="distill-demo-vit", pretrained="none",
                                   templates_file=None, options=CacheOptions(views=2, seed=3, shard_size=8),
                                   workers=0, progress=False, device="cpu")
    manifest = distill.build_cache(cfg)
    assert isinstance(manifest, CacheManifest) and manifest == CacheManifest.read(tmp_path / "c")
    assert manifest.views.count == 2 and manifest.rows == 2 * manifest.dataset.cached_images
    assert manifest.teacher.arch == "distill-demo-vit" and manifest.dataset.test_fraction == 0.3
    assert distill.build_cache(cfg) == manifest  # complete: found, not rebuilt


def test_export_takes_a_config_mapping_and_eval_count_zero(monkeypatch, tmp_path):
    """README: `export(ckpt, out, cfg, **keys)` with an ExportConfig or its keys, and eval_count 0 = every test image."""
    import distill.export
    from distill.export import ExportConfig

    seen: list[ExportConfig] = []
    monkeypatch.setattr(distill.export, "export_checkpoint", lambda ck, out, cfg: seen.append(cfg) or "report")
    assert api.export(tmp_path, tmp_path / "o", {"precisions": "fp16"}, eval_count=0) == "report"
    assert api.export(tmp_path, tmp_path / "o", eval_count=0) == "report"
    assert api.export(tmp_path, tmp_path / "o", ExportConfig(), eval_count=0) == "report"
    assert seen[0].precisions == ("fp16",) and [c.eval_count for c in seen] == [None, None, None]
    with pytest.raises(DistillError, match="eval_count: .*-1"):
        api.export(tmp_path, tmp_path / "o", eval_count=-1)
    with pytest.raises(DistillError, match="unknown key 'precision'"):
        api.export(tmp_path, tmp_path / "o", {"precision": "fp16"})
    with pytest.raises(DistillError, match="config must be an ExportConfig or a mapping"):
        api.export(tmp_path, tmp_path / "o", "fp16")  # type: ignore[arg-type]


@pytest.mark.parametrize("call, line", [
    # the flag is --out, the key out_dir: named as the unknown keyword it is, not as out_dir's absence
    (lambda tmp: api.qad(checkpoint=str(tmp), out=str(tmp / "q")),
     r"^qad\(\): unknown keyword argument 'out' \(did you mean 'out_dir'\?\); its keywords are QADConfig's keys"),
    (lambda tmp: api.export(tmp, tmp / "o", precision="fp32"),
     r"^export\(\): unknown keyword argument 'precision' \(did you mean 'precisions'\?\); its keywords are "
     r"ExportConfig's keys"),
    (lambda tmp: api.qad({"checkpoint": str(tmp), "out": str(tmp / "q")}),
     r"^qad config: unknown key 'out' \(did you mean 'out_dir'\?\)$"),
    (lambda tmp: api.export(tmp, tmp / "o", {"precision": "fp32"}),
     r"^export config: unknown key 'precision' \(did you mean 'precisions'\?\)$"),
    (lambda tmp: api.qad(checkpoint=str(tmp), out_dir=str(tmp / "q"), zzz=1),
     r"^qad\(\): unknown keyword argument 'zzz' \(keys: checkpoint, out_dir, cache, .*trt_batches, trt_workspace_mib\); its keywords"),
    (lambda tmp: api.train_config("kd", {"optim.epoch": 3}),
     r"^optim.epoch=3: unknown key 'optim.epoch' \(did you mean 'optim.epochs'\?\)$"),
])
def test_an_unknown_keyword_is_named_with_the_closest_key(call, line, tmp_path, monkeypatch):
    """QA session 26 F6: qad(out=...) failed as "out_dir: Field required", export(precision=...) as an unknown key with
    no hint; each is one line naming the keyword, the closest key, and where the keywords come from."""
    import distill.export
    import distill.export.qad

    monkeypatch.setattr(distill.export, "export_checkpoint", lambda *a: pytest.fail("exported"))
    monkeypatch.setattr(distill.export.qad, "qad", lambda *a: pytest.fail("ran qad"))
    with pytest.raises(DistillError, match=line):
        call(tmp_path)


@pytest.mark.parametrize("call, line", [
    (lambda: api.train("kd", overides={"optim.epochs": 1}),
     r"^train\(\): unknown keyword argument 'overides' \(did you mean 'overrides'\?\)$"),
    (lambda: api.adapt("ck", "a", "root", stratgy="shot"),
     r"^adapt\(\): unknown keyword argument 'stratgy' \(did you mean 'strategy'\?\)$"),
    (lambda: api.report("runs", output="r.html"),
     r"^report\(\): unknown keyword argument 'output' \(did you mean 'out'\?\)$"),
    (lambda: api.report("runs", zzz=1), r"^report\(\): unknown keyword argument 'zzz' \(keys: paths, out, title\)$"),
    (lambda: api.load_recipe("kd", override={"optim.epochs": 1}),
     r"^load_recipe\(\): unknown keyword argument 'override' \(did you mean 'overrides'\?\)$"),
])
def test_every_api_function_names_an_unknown_keyword_in_one_line(call, line):
    """train(), adapt(), report() ... raised Python's TypeError for a mistyped keyword where qad() and export() gave
    one line with the closest key; now one mechanism (distill.validation.checked_keywords) does it for all."""
    with pytest.raises(DistillError, match=line):
        call()


@pytest.mark.parametrize("name", api.__all__)
def test_no_api_function_raises_a_type_error_for_an_unknown_keyword(name):
    """Each public function checks its keywords before it runs (so nothing runs here)."""
    with pytest.raises(DistillError, match=rf"^{name}\(\): unknown keyword argument 'zzz_typo' \((keys: |it takes none)"):
        getattr(api, name)(zzz_typo=1)


@pytest.mark.parametrize("name", api.__all__)
def test_an_unknown_keyword_is_still_a_type_error(name):
    """Review 1 L3: checked_keywords raised a DistillError that is no TypeError, so a caller probing for a keyword an
    older distill lacks (``except TypeError:``) got an uncaught error; it is both now, one line as before."""
    with pytest.raises(TypeError, match=rf"^{name}\(\): unknown keyword argument 'zzz_typo'") as raised:
        getattr(api, name)(zzz_typo=1)
    assert isinstance(raised.value, DistillError)


def test_resume_refuses_every_other_argument_by_name(trained, tmp_path):
    """adapt(strategy=..., resume=RUN) must not resume as the run's own strategy in silence; the error names what was
    passed (not "config or overrides" when it was target=)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / RUN_CONFIG).write_text(dump_config(stored_paths(load_train_config(CONFIGS_DIR / "sfda.yaml",
                                                                             [f"run.out={run}"]))))
    with pytest.raises(DistillError, match=r"adapt: .*; strategy not allowed with it$"):
        api.adapt(strategy="shot", resume=run)
    with pytest.raises(DistillError, match=r"; target, strategy not allowed with it$"):
        api.adapt(target="mnist_m", strategy="sfda", resume=run)
    with pytest.raises(DistillError, match=r"train: .*; overrides not allowed with it$"):
        api.train(overrides={"optim.epochs": 3}, resume=run)
    assert trained == []
    assert api.adapt(resume=run, cache=[], overrides={}) == "summary"


def test_train_config_takes_set_items_too():
    by_items = api.train_config("kd", ["optim.epochs=3", "run.out=runs/x"])
    assert by_items == api.train_config("kd", {"optim.epochs": 3, "run.out": "runs/x"})
    assert api.train_config(by_items, ["optim.epochs=4"]).optim.epochs == 4


def test_progress_turns_the_bars_off_also_on_resume(trained, tmp_path, monkeypatch):
    """progress=False is run.progress false, allowed with resume as --no-progress is with --resume (resume refused every
    override, so a resumed run always drew bars); build_cache takes it too."""
    from distill.teacher.cache import job

    run = tmp_path / "run"
    run.mkdir()
    (run / RUN_CONFIG).write_text(dump_config(stored_paths(load_train_config(CONFIGS_DIR / "sfda.yaml",
                                                                             [f"run.out={run}"]))))
    api.train(resume=run, progress=False)
    api.adapt(resume=run, progress=False)
    api.train("kd", {"run.out": str(tmp_path / "kd")}, progress=False)
    api.train("kd", {"run.progress": False}, progress=True)
    api.train(resume=run)
    assert [(c.run.progress, r) for c, r in trained] == [(False, True), (False, True), (False, False), (True, False),
                                                         (True, True)]
    assert trained[0][0].model_copy(update={"run": trained[-1][0].run}) == trained[-1][0]  # nothing else changes
    with pytest.raises(DistillError, match="progress: expected True, False or None, got 'no'"):
        api.train(resume=run, progress="no")  # type: ignore[arg-type]
    seen: list = []
    monkeypatch.setattr(job, "run_cache_build", lambda cfg: seen.append(cfg.progress))
    keys = {"data": tmp_path, "out": tmp_path / "c", "arch": "distill-demo-vit", "pretrained": "none"}
    api.build_cache(keys, progress=False)
    api.build_cache(distill.CacheBuildConfig(**keys))
    assert seen == [False, True]


def test_a_second_train_into_a_finished_run_names_the_python_argument(tmp_path):
    """The refusal told an API user to pass `--resume RUN`, a flag of the CLI; it names `resume=` too."""
    from distill.records import CHECKPOINT_POINTER, CHECKPOINTS_DIR
    from distill.train.run import train

    run = tmp_path / "run"
    (run / CHECKPOINTS_DIR).mkdir(parents=True)
    (run / CHECKPOINTS_DIR / CHECKPOINT_POINTER).write_text("{}")
    with pytest.raises(DistillError, match=r"already holds a run: pass --resume .*run to continue it \(resume= in Python\)"):
        train(load_recipe("kd", {"run.out": str(run)}))


def test_an_unknown_keyword_without_onnxruntime_still_says_what_to_install(monkeypatch):
    """export()'s and qad()'s keys are their configs', in modules that import onnxruntime: with none installed, the
    keyword check leaves the call to say what to install (require_onnxruntime), not an ImportError."""
    import importlib
    import importlib.util

    real_import, real_find = importlib.import_module, importlib.util.find_spec

    def no_ort(name, *args):
        if name.startswith("distill.export"):
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_ort)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real_find(name, *a))
    for call in (lambda: api.export("ck", "o", precision="fp32"), lambda: api.qad(checkpoint="ck", out="o")):
        with pytest.raises(DistillError, match="^no ONNX Runtime is installed"):
            call()


def _path_arguments() -> list[tuple[str, str]]:
    """(function, argument) of every public API function's argument that takes a path (``Path`` in its type)."""
    import inspect

    return [(name, p.name) for name in api.__all__
            for p in inspect.signature(getattr(api, name)).parameters.values() if "Path" in str(p.annotation)]


def test_the_path_arguments_are_found():
    assert {("export", "checkpoint"), ("export", "out"), ("report", "paths"), ("report", "out"), ("train", "resume"),
            ("adapt", "cache"), ("load_recipe", "name")} <= set(_path_arguments())


@pytest.mark.parametrize(("name", "argument"), _path_arguments())
def test_a_wrong_typed_path_argument_is_one_line_naming_the_function_argument_and_type(name, argument):
    """QA G F3: export(5, "exp/x") raised pathlib's TypeError, report(5) "'int' object is not iterable", where
    train(42) gave one line; every path argument is checked the same way now, before anything runs."""
    import inspect

    function = getattr(api, name)
    required = {p.name: "x" for p in inspect.signature(function).parameters.values()
                if p.default is inspect.Parameter.empty and p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD}
    with pytest.raises(DistillError) as e:
        function(**{**required, argument: 5})
    assert not isinstance(e.value, TypeError)
    assert re.fullmatch(rf"{name}: {argument}( must be a path| must be a path or a list of paths)? \(str or "
                        rf"os\.PathLike\), got int|{name}: config must be a TrainConfig, .*, got int", str(e.value))


@pytest.mark.parametrize(("call", "line"), [
    (lambda: api.export(5, "exp/x"), "export: checkpoint must be a path (str or os.PathLike), got int"),
    (lambda: api.report(5), "report: paths must be a path or a list of paths (str or os.PathLike), got int"),
    (lambda: api.report(["runs/a", 5]), "report: paths[1] must be a path (str or os.PathLike), got int"),
    (lambda: api.export("ckpt", None), "export: out must be a path (str or os.PathLike), got None"),
    (lambda: api.export("ckpt", "out", data_root=5), "export: data_root must be a path (str or os.PathLike), got int"),
    (lambda: api.qad(checkpoint=5, out_dir="q"), "qad: checkpoint must be a path (str or os.PathLike), got int"),
    (lambda: api.adapt_config("c", "t", "d", cache=["a", 3.0]),
     "adapt_config: cache[1] must be a path (str or os.PathLike), got float"),
    (lambda: api.train_config(42), "train_config: config must be a TrainConfig, a recipe file or a recipe name, got int"),
    (lambda: api.train(42), "train: config must be a TrainConfig, a recipe file or a recipe name, got int"),
])
def test_wrong_typed_paths_as_the_qa_typed_them(call, line):
    with pytest.raises(DistillError) as e:
        call()
    assert str(e.value) == line


class _OwnPath(os.PathLike):
    """An os.PathLike that is not a pathlib.Path (nor iterable)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __fspath__(self) -> str:
        return str(self.path)


def test_any_os_pathlike_is_one_path_where_a_list_of_paths_is_also_taken(tmp_path):
    """Review 1 (5): the path check accepts any os.PathLike, but report() and adapt_config() took only str and
    pathlib.Path as one path and list()'d the rest: "TypeError: '_OwnPath' object is not iterable". Now each is one
    path, and the line that refuses it names the folder."""
    with pytest.raises(DistillError, match=rf"^nothing to report: .* found under {re.escape(str(tmp_path))}$"):
        api.report(_OwnPath(tmp_path), out=tmp_path / "r.html")
    with pytest.raises(DistillError, match=rf"^{re.escape(str(tmp_path))}: not a student checkpoint"):
        api.adapt_config(_OwnPath(tmp_path), "b", _OwnPath(tmp_path), cache=_OwnPath(tmp_path))
