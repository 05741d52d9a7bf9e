"""The build plans (``build.json``) are typed records, written and read through them: the cache's
(:class:`~distill.records.CacheBuildPlan`), its adversarial views' (:class:`~distill.records.AdversarialPlan`)
and its pixel stores' (:class:`~distill.teacher.cache.pixels.PixelPlan`)."""
from __future__ import annotations

import json
import shutil

import pytest

from distill.errors import DistillError
from distill.records import CACHE_BUILD_PLAN, CACHE_MANIFEST, AdversarialPlan, CacheBuildPlan
from distill.teacher.cache import AdversarialOptions, build_adversarial_views, build_cache, make_plan
from distill.teacher.cache.pixels import PixelPlan, build_pixel_store, pixel_dir_name
from tests.teacher.cache.common import SETTINGS, assert_same_cache


def test_the_cache_plan_is_a_record_that_round_trips_byte_for_byte(reference, dataset, teacher):
    plan = make_plan(dataset, teacher, SETTINGS)
    assert isinstance(plan, CacheBuildPlan) and plan.views.count == 2 and plan.layout is None
    text = (reference / CACHE_BUILD_PLAN).read_text()
    assert CacheBuildPlan.read(reference) == plan
    assert json.dumps(CacheBuildPlan.read(reference).to_dict(), indent=2) + "\n" == text  # keys it did not set: absent
    manifest = json.loads((reference / CACHE_MANIFEST).read_text())  # the manifest repeats the plan's keys
    assert {k: manifest[k] for k in plan.to_dict() if k != "dataset"} == {
        k: v for k, v in plan.to_dict().items() if k != "dataset"}


def _unfinished(reference, out, edit) -> None:
    """``out``: the reference build as if killed after two shards, with its build.json edited by ``edit``."""
    shutil.copytree(reference, out)
    (out / CACHE_MANIFEST).unlink()
    for shard in sorted(out.glob("shard-*.safetensors"))[2:]:
        shard.unlink()
    plan = json.loads((out / CACHE_BUILD_PLAN).read_text())
    edit(plan)
    (out / CACHE_BUILD_PLAN).write_text(json.dumps(plan, indent=2) + "\n")


def test_an_older_plan_file_still_resumes(reference, dataset, teacher, tmp_path):
    """A build.json of a build started before ``teacher.precision`` and ``dataset.pretrain_fraction`` existed
    (their legacy defaults are this run's): read through the record, the absent keys stay absent."""
    def older(plan):
        del plan["teacher"]["precision"], plan["dataset"]["pretrain_fraction"], plan["dataset"]["val_fraction"]
    out = tmp_path / "c"
    _unfinished(reference, out, older)
    older_plan = CacheBuildPlan.read(out)
    assert "precision" not in older_plan.to_dict()["teacher"] and older_plan.dataset.pretrain_fraction == 0.0
    with pytest.raises(DistillError, match=r"dataset\.val_fraction: \"<absent>\" vs 0\.1"):  # not legacy: refused
        build_cache(dataset, teacher, out, SETTINGS, num_workers=0, progress=False)
    _unfinished(reference, tmp_path / "d", lambda plan: (plan["teacher"].pop("precision"),
                                                         plan["dataset"].pop("pretrain_fraction")))
    build_cache(dataset, teacher, tmp_path / "d", SETTINGS, num_workers=0, progress=False)
    assert_same_cache(reference, tmp_path / "d")


def test_a_cache_plan_file_this_distill_does_not_read_is_refused_with_the_rebuild_command(reference, dataset,
                                                                                          teacher, tmp_path):
    out = tmp_path / "c"
    _unfinished(reference, out, lambda plan: plan["dataset"].update(shiny=1))
    with pytest.raises(DistillError, match=r"build\.json: an unfinished build with a different plan is here \(that "
                                           r"build vs this run: not a plan this distill reads: dataset\.shiny: Extra "
                                           r"inputs are not permitted\); remove the directory to rebuild") as e:
        build_cache(dataset, teacher, out, SETTINGS, num_workers=0, progress=False)
    assert "\n" not in str(e.value)


def test_the_adversarial_and_pixel_plans_are_records_too(reference, dataset, teacher, tmp_path):
    out = tmp_path / "c"
    shutil.copytree(reference, out)
    adv = build_adversarial_views(dataset, teacher, out, AdversarialOptions(views=1, steps=0, domains=("art",)),
                                  batch_size=4, shard_size=4, progress=False)
    plan = AdversarialPlan.read(adv)
    assert plan.views == 1 and plan.num_shards == 2 and plan.to_dict() == json.loads((adv / CACHE_BUILD_PLAN).read_text())
    store = build_pixel_store(dataset, out, (8, 8), num_workers=0, progress=False)
    pixel = PixelPlan.from_dict(json.loads((store / CACHE_BUILD_PLAN).read_text()))
    assert pixel.size == (8, 8) and pixel.codec == "raw" and store.name == pixel_dir_name((8, 8), "bicubic")
    # a damaged plan of either is refused with its rebuild command, in one line
    for folder, how in ((adv, r"remove .*adversarial to rebuild"), (store, "remove that folder to rebuild it")):
        (folder / CACHE_MANIFEST).unlink()
        (folder / CACHE_BUILD_PLAN).write_text('{"format": "other"}')
    with pytest.raises(DistillError, match=r"build\.json: adversarial views with a different plan are here \(not a "
                                           r"plan this distill reads: .*\); remove .*adversarial to rebuild"):
        build_adversarial_views(dataset, teacher, out, AdversarialOptions(views=1, steps=0, domains=("art",)),
                                batch_size=4, shard_size=4, progress=False)
    with pytest.raises(DistillError, match=r"build\.json: an unfinished pixel store with a different plan is here "
                                           r"\(that store vs this run: not a plan this distill reads: pixel store "
                                           r"format 'other' .*\); remove that folder to rebuild it"):
        build_pixel_store(dataset, out, (8, 8), num_workers=0, progress=False)
