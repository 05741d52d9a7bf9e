"""Unlabeled pools (``data.unlabeled``): pool images feed the distillation terms and never a label loss.

For every strategy that takes pool rows (``needs.unlabeled``): over an epoch every labelled row
is a source-train image and every pool row is -1; rewriting the pool images' dataset labels
changes nothing, bit for bit; with the distillation weights at 0 no gradient reaches a pool
image's pixels. Strategies that cannot take a pool are refused, naming the key.

A folder outside data.root in the pool (``unlabeled: [/path/to/images]``) gets the same checks for
the cache-reading strategies kd, fm and adv_cached, plus its refusals: a folder missing, empty, overlapping the
root, absent from the cache or changed since the cache was built.
"""
from __future__ import annotations

import json
import shutil
from importlib import import_module
from pathlib import Path

import pytest
import torch

from distill.config import load_train_config
from distill.data.unlabeled import add_folders, scan_folders
from distill.data.view_policy import preset
from distill.errors import DistillError
from distill.records import PoolFolder, UnlabeledPool
from distill.strategies import get_strategy, list_strategies
from distill.strategies.losses import label_cross_entropy
from distill.student.transforms import normalize
from distill.train import Trainer, build
from distill.utils.runtime import seed_step
from tests.shapes import CLASSES, COLOURS, draw, make_shapes_root

SOURCE, TARGET, POOL = ["red"], ["green", "blue"], ["blue"]
BATCH, RATIO = 4, 2.0  # 8 pool images per step: more per epoch than the pool holds, so it cycles
UNLABELED = [n for n in list_strategies() if get_strategy(n).needs.unlabeled]
# the options that leave only the label loss (distillation, feature and adversarial terms at 0)
LABELS_ONLY = {"erm": {}, "kd": {"alpha": 0.0}, "fm": {"alpha": 0.0}, "adv_cached": {"alpha": 0.0, "adv_fraction": 0.0},
               "rise": {"lambda_kd": 0.0, "lambda_feat": 0.0}, "vl2v": {"lambda_align": 0.0, "lambda_kd": 0.0},
               "customkd": {"lambda_kd": 0.0, "lambda_custom": 0.0, "lambda_general": 0.0, "lambda_fit": 0.0}}
BUILD = import_module("distill.train.build")  # the module (distill.train.build is also the function's name)
DEFAULTS = {"adv_cached": {"adv_fraction": 0.0}}  # every row shows its own pixels (the gradient test reads them)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(data root, cache of every domain with 2 views, adversarial views of the source and the pool)."""
    from distill.data import DomainFolder
    from distill.teacher import Teacher
    from distill.teacher.cache import AdversarialOptions, CacheOptions, build_adversarial_views, build_cache

    root = make_shapes_root(tmp_path_factory.mktemp("pool_data"), SOURCE + ["green", "blue"], per_class=6)
    ds = DomainFolder(root, test_fraction=0.3)
    torch.manual_seed(0)
    teacher = Teacher("distill-demo-vit", None, ds.classes, ["a photo of a {}."])
    # an fm policy cache (photometric ops + mixup/cutmix partners), so fm runs as it would for a user
    cache = build_cache(ds, teacher, tmp_path_factory.mktemp("pool_cache") / "c",
                        CacheOptions(views=2, seed=3, shard_size=32, policy=preset("fm")), num_workers=0,
                        progress=False)
    build_adversarial_views(ds, teacher, cache, AdversarialOptions(views=1, epsilon=8 / 255, steps=1, seed=5,
                                                                   domains=SOURCE + POOL), shard_size=32, progress=False)
    return root, cache


def _cfg(world, strategy: str, out: Path, options: dict | None = None, **data) -> dict:
    root, cache = world
    return {"data": {"root": str(root), "source": SOURCE, "target": TARGET, "test_fraction": 0.3,
                     "unlabeled": POOL, "unlabeled_ratio": RATIO, **data},
            "cache": str(cache), "student": {"arch": "test_resnet", "input_size": 16},
            "strategy": {"name": strategy, **(options or {})},
            "optim": {"epochs": 1, "batch_size": BATCH, "lr": 0.01, "warmup_epochs": 0},
            "run": {"out": str(out), "workers": 0, "progress": False, "seed": 1}}


def _trainer(world, strategy: str, out: Path, monkeypatch, options: dict | None = None,
             relabel_pool: bool = False) -> Trainer:
    setup = build(load_train_config(None, base=_cfg(world, strategy, out, options)))
    if relabel_pool:  # every pool image's folder label changes
        cols, rows = setup.dataset.samples.columns, setup.unlabeled.rows()  # samples are columns: relabel there
        cols.label[rows] = (cols.label[rows] + 1) % len(CLASSES)
    return Trainer(setup)


def _batches(trainer: Trainer, epoch: int = 0):
    for pixels, loader_labels, domain, index, view in trainer.loader(epoch, 0):
        yield loader_labels, trainer.make_batch(pixels, loader_labels, domain, index, view)


def _row_grads(trainer) -> torch.Tensor:
    """Per-row |d loss / d pixels| of the trainer's first batch (labelled rows first, then pool rows)."""
    _, batch = next(_batches(trainer))
    trainer.strategy.eval()  # BatchNorm on running statistics: rows do not see each other
    seed_step(1, 0, 0)
    batch.pixels = batch.pixels.detach().requires_grad_()
    batch.images = normalize(batch.pixels, trainer._mean, trainer._std)
    trainer.strategy(batch)["loss"].backward()
    return batch.pixels.grad.abs().flatten(1).sum(1)


class _Log:
    def step(self, step, global_step, out, labels, lr, skipped=False):
        self.loss = out["loss"].detach()


@pytest.mark.parametrize("strategy", UNLABELED)
def test_every_labelled_row_is_a_source_train_image_and_every_pool_row_is_unlabelled(world, tmp_path, monkeypatch,
                                                                                       strategy):
    trainer = _trainer(world, strategy, tmp_path / "run", monkeypatch)
    source = {x.index: x.label for x in trainer.setup.dataset.select(SOURCE, "train")}
    pool = {x.index for x in trainer.setup.unlabeled}
    assert pool and trainer.pool_per_step == 8 and trainer.steps_per_epoch * 8 > len(pool)  # the pool cycles
    seen_pool, steps = set(), 0
    for loader_labels, batch in _batches(trainer):
        steps += 1
        index, labels = batch.sample_index.tolist(), batch.labels.tolist()
        assert len(index) == BATCH + 8 and all(i in pool for i in index[BATCH:])  # labelled first, then pool
        for i, y, folder_label in zip(index, labels, loader_labels.tolist()):
            if y >= 0:
                assert source.get(i) == y, f"row of sample {i} has label {y} but is not that source-train image"
            if i in pool:
                assert y == -1 and folder_label >= 0  # the folder knows a label; the gate hides it
                seen_pool.add(i)
    assert steps == trainer.steps_per_epoch and seen_pool == pool


@pytest.mark.parametrize("strategy", UNLABELED)
def test_pool_labels_cannot_change_a_step(world, tmp_path, monkeypatch, strategy):
    runs = []
    for relabel in (False, True):
        trainer = _trainer(world, strategy, tmp_path / f"run{relabel}", monkeypatch, relabel_pool=relabel)
        trainer.strategy.on_epoch_start(0)
        _, batch = next(_batches(trainer))
        seed_step(1, 0, 0)
        log = _Log()
        trainer.train_step(batch, log)
        runs.append((log.loss, {k: v.clone() for k, v in trainer.strategy.state_dict().items()}))
    assert torch.equal(runs[0][0], runs[1][0])
    assert runs[0][1].keys() == runs[1][1].keys()
    for key in runs[0][1]:
        assert torch.equal(runs[0][1][key], runs[1][1][key]), key


@pytest.mark.parametrize("strategy", UNLABELED)
def test_no_label_gradient_reaches_a_pool_image(world, tmp_path, monkeypatch, strategy):
    """With only the label loss left, pool pixels get exactly 0 gradient (and labelled ones do not);
    with the strategy's own weights, the distillation terms do reach the pool (erm has none)."""
    for options, distills in ((LABELS_ONLY[strategy], False), (DEFAULTS.get(strategy, {}), strategy != "erm")):
        trainer = _trainer(world, strategy, tmp_path / f"run{distills}", monkeypatch, options)
        per_row = _row_grads(trainer)
        assert bool((per_row[:BATCH] > 0).all()), per_row
        if distills:
            assert bool((per_row[BATCH:] > 0).all()), per_row
        else:
            assert torch.equal(per_row[BATCH:], torch.zeros(len(per_row) - BATCH)), per_row


def test_mixed_partners_take_their_labels_through_the_same_gate(world, tmp_path, monkeypatch):
    """On a mixing cache, ``partner_labels`` is the partner's gated label: a pool partner is -1, like no partner."""
    trainer = _trainer(world, "erm", tmp_path / "run", monkeypatch)
    cache = trainer.setup.caches[0]
    assert trainer._mixing
    _, batch = next(_batches(trainer))
    rows = cache.lookup(batch.sample_index, batch.view)
    partner = rows["mix_partner"]
    want = [trainer.label_of[p].item() if p >= 0 else -1 for p in partner.tolist()]
    assert batch.partner_labels.tolist() == want
    assert (partner >= 0).any(), "the fm cache mixes some views"
    pool = {x.index for x in trainer.setup.unlabeled}
    # a pool partner reads -1 through the gate, exactly like no partner
    assert all(w == -1 for p, w in zip(partner.tolist(), want) if p in pool or p < 0)
    assert torch.equal(batch.mix_lam, rows["mix_lam"])
    assert bool((batch.mix_lam[partner < 0] == 1).all()) and bool((batch.mix_lam[partner >= 0] < 1).all())
    out = trainer.strategy(batch)  # erm on mixed views: the mixed label loss
    logits = trainer.strategy.student(batch.images)
    assert torch.equal(out["ce"], label_cross_entropy(logits, batch.labels, batch.partner_labels, batch.mix_lam))


@pytest.mark.parametrize("strategy", ["shot", "kd_online"])
def test_a_strategy_that_cannot_take_a_pool_is_refused_naming_the_key(world, tmp_path, strategy):
    cfg = _cfg(world, strategy, tmp_path / "run")
    if get_strategy(strategy).needs.online_teacher:
        cfg["teacher"] = {"arch": "distill-demo-vit", "pretrained": None, "templates": ["a photo of a {}."]}
    if get_strategy(strategy).needs.source_checkpoint:
        cfg["source_checkpoint"] = str(tmp_path / "unused")
    with pytest.raises(DistillError, match=r"data\.unlabeled.*" + strategy):
        build(load_train_config(None, base=cfg))


def test_unknown_or_source_pool_domains_are_refused(world, tmp_path):
    with pytest.raises(DistillError, match=r"data\.unlabeled: domain 'purple' not found"):
        build(load_train_config(None, base=_cfg(world, "kd", tmp_path / "a", unlabeled=["purple"])))
    with pytest.raises(DistillError, match=r"data\.unlabeled: \['red'\] are also in data\.source"):
        load_train_config(None, base=_cfg(world, "kd", tmp_path / "b", unlabeled=["red"]))


# ---------------------------------------------------------------------- a folder outside data.root
FOLDER_STRATEGIES = ["kd", "fm", "adv_cached"]


def _field_cam(folder: Path, per_class: int = 4) -> Path:
    """Blue shapes, flat and nested, with no class folders: a deployment camera's unlabeled images."""
    for cls in CLASSES:
        for k in range(per_class):
            path = folder / ("night" if k % 2 else "") / f"{cls}_{k}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            draw(cls, COLOURS["blue"], 5000 + 10 * k + CLASSES.index(cls), k).save(path)
    return folder


def _folder_dataset(root: Path, folder: Path):
    """(the data root with the folder added as `cache build --unlabeled` adds it, the random-weight teacher)."""
    from distill.data import DomainFolder
    from distill.teacher import Teacher

    ds = DomainFolder(root, test_fraction=0.3)
    add_folders(ds, scan_folders([str(folder)], root, "--unlabeled"))
    torch.manual_seed(0)
    return ds, Teacher("distill-demo-vit", None, ds.classes, ["a photo of a {}."])


def _folder_cache(root: Path, folder: Path, out: Path, **options) -> Path:
    from distill.teacher.cache import CacheOptions, build_cache

    ds, teacher = _folder_dataset(root, folder)
    return build_cache(ds, teacher, out, CacheOptions(**{"views": 2, "seed": 3, "shard_size": 32, **options}),
                       num_workers=0, progress=False)


@pytest.fixture(scope="module")
def folder_world(tmp_path_factory):
    """(data root, an fm policy cache of the root and of a folder outside it with adversarial views, the folder)."""
    from distill.teacher.cache import AdversarialOptions, TeacherCache, build_adversarial_views

    root = make_shapes_root(tmp_path_factory.mktemp("folder_data"), SOURCE + ["green"], per_class=6)
    cam = _field_cam(tmp_path_factory.mktemp("outside") / "field_cam")
    cache = _folder_cache(root, cam, tmp_path_factory.mktemp("folder_cache") / "c", policy=preset("fm"))
    ds, teacher = _folder_dataset(root, cam)
    adv = build_adversarial_views(ds, teacher, cache, AdversarialOptions(views=1, epsilon=8 / 255, steps=1, seed=5),
                                  shard_size=32, progress=False)
    assert json.loads((adv / "manifest.json").read_text())["domains"] == ["green", "red", "field_cam"]  # by default
    assert TeacherCache.open(cache).folders[0].name == "field_cam"
    return root, cache, cam


def _folder_cfg(folder_world, strategy: str, out: Path, options: dict | None = None, **data) -> dict:
    root, cache, cam = folder_world
    return _cfg((root, cache), strategy, out, options, **{"target": ["green"], "unlabeled": [str(cam)], **data})


def _folder_trainer(folder_world, strategy: str, out: Path, options: dict | None = None,
                    relabel_pool: bool = False) -> Trainer:
    setup = build(load_train_config(None, base=_folder_cfg(folder_world, strategy, out, options)))
    if relabel_pool:  # every folder image gets a class label in the dataset
        cols, rows = setup.dataset.samples.columns, setup.unlabeled.rows()  # samples are columns: relabel there
        cols.label[rows] = cols.index[rows] % len(CLASSES)
    return Trainer(setup)


@pytest.mark.parametrize("strategy", FOLDER_STRATEGIES)
def test_every_folder_image_reaches_the_distillation_loss_unlabelled(folder_world, tmp_path, strategy):
    root, cache_dir, cam = folder_world
    trainer = _folder_trainer(folder_world, strategy, tmp_path / "run")
    setup, cache = trainer.setup, trainer.setup.caches[0]
    [record] = cache.folders
    folder = set(range(record.first_index, record.first_index + record.images))
    assert {x.index for x in setup.unlabeled} == folder and len(folder) == 12
    assert {(x.domain, x.label, x.split) for x in setup.unlabeled} == {("field_cam", -1, "train")}
    assert setup.pool_record == UnlabeledPool(domains=[], images=12, ratio=RATIO, folders=[
        PoolFolder(name="field_cam", path=str(cam.resolve()), images=12)])
    source = {x.index: x.label for x in setup.dataset.select(SOURCE, "train")}
    seen = set()
    for loader_labels, batch in _batches(trainer):
        index, labels = batch.sample_index.tolist(), batch.labels.tolist()
        assert all(i in source for i in index[:BATCH]) and all(i in folder for i in index[BATCH:])
        assert labels[BATCH:] == [-1] * 8 and loader_labels[BATCH:].eq(-1).all()
        assert all(source[i] == y for i, y in zip(index[:BATCH], labels[:BATCH]))
        rows = cache.lookup(batch.sample_index, batch.view)  # the distillation targets are the folder's rows
        assert torch.equal(batch.teacher_logits, rows["logits"]) and torch.equal(batch.teacher_emb, rows["image_emb"])
        seen.update(index[BATCH:])
    assert seen == folder


@pytest.mark.parametrize("strategy", FOLDER_STRATEGIES)
def test_folder_labels_cannot_change_a_step_and_no_label_gradient_reaches_a_folder_image(folder_world, tmp_path,
                                                                                        strategy):
    runs = []
    for relabel in (False, True):
        trainer = _folder_trainer(folder_world, strategy, tmp_path / f"run{relabel}", relabel_pool=relabel)
        _, batch = next(_batches(trainer))
        seed_step(1, 0, 0)
        log = _Log()
        trainer.train_step(batch, log)
        runs.append((log.loss, trainer.strategy.state_dict()))
    assert torch.equal(runs[0][0], runs[1][0])
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])
    for options, distills in ((LABELS_ONLY[strategy], False), (DEFAULTS.get(strategy, {}), True)):
        trainer = _folder_trainer(folder_world, strategy, tmp_path / f"grad{distills}", options)
        per_row = _row_grads(trainer)
        assert bool((per_row[:BATCH] > 0).all()), per_row
        assert bool((per_row[BATCH:] > 0).all()) if distills else torch.equal(per_row[BATCH:], torch.zeros(8))


def test_a_folder_moved_elsewhere_still_matches_its_cache_and_a_pool_mixes_domains_and_folders(folder_world, tmp_path):
    root, cache, cam = folder_world
    moved = shutil.copytree(cam, tmp_path / "elsewhere" / "renamed")
    setup = build(load_train_config(None, base=_folder_cfg(folder_world, "kd", tmp_path / "run",
                                                           unlabeled=["green", str(moved)], target=["green"])))
    assert setup.dataset.folders["field_cam"].path == moved.resolve()  # the cache's name, this folder's files
    assert {x.domain for x in setup.unlabeled} == {"green", "field_cam"}
    assert setup.pool_record.domains == ["green"] and setup.pool_record.folders[0].path == str(moved.resolve())


def test_a_folder_pool_without_a_cache_is_placed_after_the_root(folder_world, tmp_path):
    cfg = _folder_cfg(folder_world, "erm", tmp_path / "run")
    cfg["cache"] = None
    trainer = Trainer(build(load_train_config(None, base=cfg)))
    from distill.data import DomainFolder

    n = len(DomainFolder(folder_world[0], test_fraction=0.3).samples)
    assert sorted(x.index for x in trainer.setup.unlabeled) == list(range(n, n + 12))
    assert trainer.label_of[n:].eq(-1).all() and len(trainer.label_of) == n + 12
    _, batch = next(_batches(trainer))
    assert batch.labels[BATCH:].eq(-1).all()


def test_folder_entries_are_refused_in_one_line_naming_the_key(folder_world, tmp_path):
    root, cache, cam = folder_world
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    other = _field_cam(tmp_path / "other_cam", per_class=1)
    cases = [([str(tmp_path / "nowhere")], rf"folder '{tmp_path / 'nowhere'}' does not exist"),
             ([str(tmp_path / "empty")], r"folder '.*empty' holds no images"),
             ([str(root / "green")], r"folder '.*green' overlaps the data root"),
             (["purple"], r"domain 'purple' not found under .*a folder is named by a path"),
             ([str(other)], rf"cache {cache} was built without unlabeled folder '{other}'; rebuild with "
                            rf"`distill cache build \.\.\. --unlabeled {other}`")]
    for entries, message in cases:
        with pytest.raises(DistillError, match=r"^data\.unlabeled: " + message) as err:
            build(load_train_config(None, base=_folder_cfg(folder_world, "kd", tmp_path / "run", unlabeled=entries)))
        assert "\n" not in str(err.value)


def test_a_bare_folder_name_is_a_domain_and_the_error_says_how_to_name_the_folder(folder_world, tmp_path, monkeypatch):
    """QA K F10: `data.unlabeled=[field]` with a folder `field` here was refused as a domain with no word of how to
    name the folder; the entry that works (`./field`, or the path the cache build prints) works."""
    root, cache, cam = folder_world
    monkeypatch.chdir(cam.parent)
    with pytest.raises(DistillError) as err:
        build(load_train_config(None, base=_folder_cfg(folder_world, "kd", tmp_path / "run", unlabeled=[cam.name])))
    assert str(err.value).endswith(f"a folder is named by a path: with a '/', or starting with '.' or '~'; for the "
                                   f"folder '{cam.name}' here, write './{cam.name}')")
    setup = build(load_train_config(None, base=_folder_cfg(folder_world, "kd", tmp_path / "run",
                                                           unlabeled=[f"./{cam.name}"])))
    assert setup.dataset.folders["field_cam"].path == cam.resolve()


def test_a_folder_changed_since_its_cache_was_built_is_refused(folder_world, tmp_path):
    root = folder_world[0]
    cam = _field_cam(tmp_path / "cam", per_class=1)
    cache = _folder_cache(root, cam, tmp_path / "c", views=1, fingerprint="content")

    def run(out: str):
        cfg = _cfg((root, cache), "kd", tmp_path / out, target=["green"], unlabeled=[str(cam)])
        return build(load_train_config(None, base=cfg))

    assert {x.domain for x in run("ok").unlabeled} == {"cam"}
    image = cam / "circle_0.png"
    data = bytearray(image.read_bytes())
    data[-20] ^= 0xFF  # same size, other bytes: the content identity the cache recorded sees it
    image.write_bytes(bytes(data))
    with pytest.raises(DistillError, match=r"folder '.*cam': its images' bytes changed since cache .* was built"):
        run("edited")
    draw("square", COLOURS["blue"], 1, 1).save(cam / "new.png")
    with pytest.raises(DistillError, match=r"folder '.*cam' changed since cache .* was built \(files_sha256 \w+ vs "
                                           r"\w+: 3 vs 4 images.*rebuild with `distill cache build"):
        run("added")
