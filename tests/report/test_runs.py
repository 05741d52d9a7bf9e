"""Runs in the report (distill/report/runs.py): read as fractions, grouped over seeds, labelled."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from distill.report.runs import Run, read_run
from distill.report.write import collect, write_report

from .conftest import write_run


def test_summary_accuracy_is_a_fraction_even_when_tiny(tmp_path: Path) -> None:
    """summary.json holds fractions: a model under 1 % stays under 1 % (no unit guessed from the values)."""
    run = write_run(tmp_path / "r", strategy="erm", acc={"clean": 0.009, "dark": 0.005, "noisy": 0.004}, seed=3)
    r = read_run(run)
    assert r.accuracy == {"clean": 0.009, "dark": 0.005, "noisy": 0.004}
    assert r.seed == 3 and not r.adapted and r.teacher == "ViT-test · open_clip_model.safetensors"
    write_report([run], tmp_path / "r.html")
    assert "| test_resnet (erm) | 1 | 0.4 | 0.9* | 0.5* | 0.4 |" in (tmp_path / "r.md").read_text()


def test_runs_grouped_labelled_and_separated(grouped_runs: Path) -> None:
    data = collect([grouped_runs])
    by_label = {g.label: g for g in data.groups}
    assert set(by_label) == {"test_resnet (kd; temperature=4)", "test_resnet (kd; temperature=2)",
                             "test_resnet (erm)", "test_resnet (sfda)"}
    kd4 = by_label["test_resnet (kd; temperature=4)"]
    assert kd4.n == 3 and kd4.seeds == [0, 1, 2] and not kd4.adapted
    assert kd4.mean["noisy"] == pytest.approx(0.62) and kd4.std["noisy"] == pytest.approx(0.02)
    assert kd4.target_mean == pytest.approx(0.62) and kd4.target_std == pytest.approx(0.02)
    assert kd4.target_per_seed == pytest.approx([0.60, 0.64, 0.62]) and kd4.target_spread == pytest.approx((0.60, 0.64))
    assert by_label["test_resnet (erm)"].n == 2 and by_label["test_resnet (erm)"].std["clean"] == 0.0
    kd2 = by_label["test_resnet (kd; temperature=2)"]
    assert "noisy" not in kd2.std and kd2.target_std is None and kd2.target_spread is None  # one seed: no spread
    sfda = by_label["test_resnet (sfda)"]
    assert sfda.adapted and sfda.n == 1
    # source-trained first, best target mean first within each kind
    assert [g.label for g in data.groups] == ["test_resnet (kd; temperature=2)", "test_resnet (kd; temperature=4)",
                                              "test_resnet (erm)", "test_resnet (sfda)"]
    # one teacher, its zero-shot merged over the runs (the adapted run's partial dict adds no second row)
    assert data.teachers == {"ViT-test · open_clip_model.safetensors": pytest.approx(
        {"clean": 0.5, "dark": 0.4, "noisy": 0.3})}


def test_labels_say_adapted_only_where_needed(tmp_path: Path) -> None:
    write_run(tmp_path / "a", strategy="shot", acc={"noisy": 0.70}, seed=0, adapted_from="erm/checkpoints/best")
    write_run(tmp_path / "b", strategy="shot", acc={"clean": 0.90, "dark": 0.80, "noisy": 0.60}, seed=0)
    write_run(tmp_path / "c", strategy="erm", acc={"clean": 0.90, "dark": 0.80, "noisy": 0.50}, seed=0,
              source=("clean",), target=("dark", "noisy"))
    write_run(tmp_path / "d", strategy="erm", acc={"clean": 0.90, "dark": 0.80, "noisy": 0.55}, seed=0)
    labels = {Path(r.dir).name: r.label for r in collect([tmp_path]).runs}
    assert labels == {"a": "test_resnet (shot, adapted)", "b": "test_resnet (shot, source-trained)",
                      "c": "test_resnet (erm; src clean; tgt dark+noisy)",
                      "d": "test_resnet (erm; src clean+dark; tgt noisy)"}


def test_an_unlabeled_pool_or_a_text_head_is_another_row_not_another_seed(tmp_path: Path) -> None:
    """fm, fm + an unlabeled pool and an open-vocabulary fm share strategy and options: config.yaml tells them apart."""
    from distill.report.runs import group_runs, label_runs

    base = read_run(write_run(tmp_path / "fm", strategy="fm", acc={"clean": 0.9, "dark": 0.8, "noisy": 0.6}, seed=0))
    pool = replace(base, dir="fm_unlabeled", unlabeled=["noisy"], accuracy={"clean": 0.9, "dark": 0.8, "noisy": 0.7})
    text = replace(base, dir="openvocab", head="text", withheld=["c"])
    seed1 = replace(base, dir="fm-s1", seed=1, accuracy={"clean": 0.9, "dark": 0.8, "noisy": 0.62})
    runs = [base, pool, text, seed1]
    label_runs(runs)
    groups = {g.label: g for g in group_runs(runs)}
    assert set(groups) == {"test_resnet (fm)",
                           "test_resnet (fm; unlabeled noisy)",
                           "test_resnet (fm; head text; withheld c)"}
    assert groups["test_resnet (fm)"].n == 2  # the two seeds of fm
    assert groups["test_resnet (fm; unlabeled noisy)"].target_mean == pytest.approx(0.7)


def _fm_run_with_pool(folder: Path, seed: int, unlabeled: list[str]) -> Run:
    """An fm run whose config.yaml names ``unlabeled`` as its pool (as typed: relative, absolute, ~user)."""
    import yaml

    write_run(folder, strategy="fm", acc={"clean": 0.9, "dark": 0.8, "noisy": 0.6}, seed=seed)
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    cfg["data"]["unlabeled"] = unlabeled
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return read_run(folder)


def test_an_unlabeled_folder_is_labelled_and_grouped_by_its_name(tmp_path: Path) -> None:
    """Review 25 L4: new runs store a data.unlabeled folder's path absolute, and the report labelled and grouped runs
    on the string: a long label, and an older run's ./cam and a new run's /.../cam were two configurations."""

    from distill.report.runs import group_runs, label_runs

    def run(name: str, seed: int, unlabeled: list[str]) -> Run:
        return _fm_run_with_pool(tmp_path / name, seed, unlabeled)

    runs = [run("old", 0, ["./cam", "noisy"]), run("new", 1, [str(tmp_path / "project" / "cam") + "/", "noisy"]),
            run("none", 0, [])]
    label_runs(runs)
    groups = {g.label: g for g in group_runs(runs)}
    assert set(groups) == {"test_resnet (fm; unlabeled cam+noisy)", "test_resnet (fm)"}
    assert groups["test_resnet (fm; unlabeled cam+noisy)"].seeds == [0, 1]


def test_two_folders_of_one_name_are_two_configurations_labelled_by_their_paths(tmp_path: Path) -> None:
    """Review 25b L4: grouping by a folder's name alone averaged /a/cam and /b/cam as seeds of one configuration.
    New runs store the path: two folders, two rows, labelled by path since their names are the same; an older run's
    ./cam then matches neither (two folders of that name) and stays a row of its own, spelled as relative."""

    from distill.report.runs import group_runs, label_runs

    def run(name: str, seed: int, unlabeled: list[str]) -> Run:
        return _fm_run_with_pool(tmp_path / name, seed, unlabeled)

    a, b = str(tmp_path / "a" / "cam"), str(tmp_path / "b" / "cam")
    runs = [run("ra0", 0, [a]), run("ra1", 1, [a]), run("rb0", 0, [b]), run("old", 0, ["./cam"])]
    label_runs(runs)
    groups = {g.label: g for g in group_runs(runs)}
    assert set(groups) == {f"test_resnet (fm; unlabeled {a})", f"test_resnet (fm; unlabeled {b})",
                           "test_resnet (fm; unlabeled ./cam)"}
    assert groups[f"test_resnet (fm; unlabeled {a})"].seeds == [0, 1]


@pytest.mark.parametrize(("typed", "shown"), [("./cam", "./cam"), ("cam/", "./cam"), ("data/cam", "./data/cam"),
                                              ("../data/cam", "../data/cam")])
def test_an_older_run_s_relative_folder_beside_paths_reads_as_relative(tmp_path: Path, typed: str, shown: str) -> None:
    """An older run's ./cam (stored as typed, relative to a folder it does not record), matched to neither /a/cam nor
    /b/cam, was labelled 'unlabeled cam' beside their full paths: a real folder named cam, or a domain. It keeps a
    relative spelling."""

    from distill.report.runs import group_runs, label_runs

    a, b = str(tmp_path / "a" / "cam"), str(tmp_path / "b" / "cam")
    runs = [_fm_run_with_pool(tmp_path / name, 0, pool) for name, pool in (("ra", [a]), ("rb", [b]), ("old", [typed]))]
    label_runs(runs)
    assert sorted(g.label for g in group_runs(runs)) == sorted(
        [f"test_resnet (fm; unlabeled {a})", f"test_resnet (fm; unlabeled {b})", f"test_resnet (fm; unlabeled {shown})"])


def test_a_pool_is_labelled_by_path_only_where_another_configuration_has_its_names(tmp_path: Path) -> None:
    """Review 25c M1: the name-or-path choice was made for the whole block, so /a/cam and /b/cam beside a third
    configuration were both labelled 'unlabeled cam': two rows, one label. A '~user' unknown here (Path.expanduser
    raises) stays as written (review 25c M2)."""

    from distill.report.runs import group_runs, label_runs

    def run(name: str, unlabeled: list[str]) -> Run:
        return _fm_run_with_pool(tmp_path / name, 0, unlabeled)

    a, b, c = (str(tmp_path / x / n) for x, n in (("a", "cam"), ("b", "cam"), ("c", "other")))
    runs = [run("ra", [a]), run("rb", [b]), run("rc", [c]), run("none", []), run("tilde", ["~nobody-here-xyz/cam2"])]
    label_runs(runs)
    labels = sorted(g.label for g in group_runs(runs))
    assert labels == sorted([f"test_resnet (fm; unlabeled {a})", f"test_resnet (fm; unlabeled {b})",
                             "test_resnet (fm; unlabeled other)", "test_resnet (fm)",
                             "test_resnet (fm; unlabeled cam2)"])


def test_an_older_adaptation_with_some_options_recorded_takes_the_defaults_beneath_them(tmp_path: Path) -> None:
    """Review 25c L1: an adaptation before 2026-12-05 recorded only the options it was given."""
    from distill.report.runs import group_runs, label_runs
    from distill.strategies import get_strategy
    from distill.train.adapt import effective_options

    defaults = effective_options(get_strategy("sfda"), {})
    key = sorted(defaults)[0]
    acc = {"clean": 0.9, "dark": 0.8, "noisy": 0.6}
    old = read_run(write_run(tmp_path / "old", strategy="sfda", acc=acc, seed=0, options={key: defaults[key]},
                             adapted_from="src/best"))
    new = read_run(write_run(tmp_path / "new", strategy="sfda", acc=acc, seed=1, options=defaults,
                             adapted_from="src/best"))
    label_runs([old, new])
    [group] = group_runs([old, new])
    assert group.seeds == [0, 1] and old.options == defaults


def test_an_older_adaptation_without_recorded_options_groups_with_a_newer_one_at_the_defaults(tmp_path: Path) -> None:
    """Review 25b M3: adaptations recorded strategy_options {} (the defaults) before 2026-12-05 and every option
    since; the same settings' seeds from before and after fell into two rows."""
    from distill.report.runs import group_runs, label_runs
    from distill.strategies import get_strategy
    from distill.train.adapt import effective_options

    defaults = effective_options(get_strategy("sfda"), {})
    assert defaults, "sfda has options to record"
    acc = {"clean": 0.9, "dark": 0.8, "noisy": 0.6}
    old = read_run(write_run(tmp_path / "old", strategy="sfda", acc=acc, seed=0, adapted_from="src/best"))
    new = read_run(write_run(tmp_path / "new", strategy="sfda", acc=acc, seed=1, options=defaults,
                             adapted_from="src/best"))
    label_runs([old, new])
    [group] = group_runs([old, new])
    assert group.seeds == [0, 1] and old.options == defaults


def test_a_run_whose_config_no_longer_validates_is_left_out_with_one_warning(tmp_path: Path) -> None:
    """Review 25b L5: an older run's config.yaml that a stricter config refuses (a bool where a number goes) cost
    the whole report; it is left out, named, like a half-written export.json."""
    import yaml

    good = write_run(tmp_path / "in" / "good", strategy="erm", acc={"clean": 0.9, "dark": 0.5, "noisy": 0.4}, seed=0)
    bad = write_run(tmp_path / "in" / "bad", strategy="erm", acc={"clean": 0.9, "dark": 0.5, "noisy": 0.4}, seed=1)
    cfg = yaml.safe_load((bad / "config.yaml").read_text())
    cfg["optim"]["epochs"] = True
    (bad / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    data = collect([tmp_path / "in"])
    assert [r.dir for r in data.runs] == [str(good)]
    [warning] = data.warnings
    assert str(bad / "config.yaml") in warning and warning.endswith("skipped that run") and "\n" not in warning


def test_report_md_compares_rows_of_several_seeds_by_welch(grouped_runs: Path, tmp_path: Path) -> None:
    """kd (T=4, 3 seeds: 60/64/62) vs erm (2 seeds: 50/54): +10 points is beyond 2 SE (4.6) but Welch's p is 0.066
    (t 4.33, df 1.7), so the report does not call it real; kd (T=2) has one seed and is compared with nothing."""
    write_report([grouped_runs], tmp_path / "r.html")
    md = (tmp_path / "r.md").read_text()
    assert "- test_resnet (kd; temperature=4) vs test_resnet (erm): +10.0 points, 2 SE = 4.6, Welch p = 0.066 -> " \
           "within noise" in md
    assert "temperature=2) vs" not in md and "vs test_resnet (kd; temperature=2)" not in md
