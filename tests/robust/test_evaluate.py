"""distill.robust.evaluate: per-domain clean / PGD / corruption accuracy, `distill eval` (table, --json,
errors), and the train config's robust section."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from distill.cli import main as cli
from distill.config import RobustSettings, load_train_config
from distill.errors import DistillError
from distill.records import RobustAccuracy, RobustReport
from distill.robust.evaluate import RobustEvaluator, _step_size, robust_table
from distill.student.model import Student, default_spec, save_student
from tests.shapes import CLASSES, make_shapes_root


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_shapes_root(tmp_path_factory.mktemp("robust_data"), ["red", "green"], per_class=8)


@pytest.fixture(scope="module")
def checkpoint(root, tmp_path_factory) -> Path:
    """A test_resnet trained 40 Adam steps on the train split (its answers depend on the image, so an
    attack has something to flip; an untrained one predicts one class whatever the input)."""
    from PIL import Image

    from distill.data import DomainFolder

    torch.manual_seed(0)
    student = Student(default_spec("test_resnet", CLASSES, 16))
    ds = DomainFolder(root, test_fraction=0.3)
    tf = student.preprocess()
    train = ds.select(["red", "green"], "train")
    x = torch.stack([tf(Image.open(ds.path(s)).convert("RGB")) for s in train])
    y = torch.tensor([s.label for s in train])
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    student.train()
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(student(x), y).backward()
        opt.step()
    return save_student(student.eval(), tmp_path_factory.mktemp("ckpt") / "best")


def test_robust_evaluator_per_domain(root, checkpoint):
    from distill.data import DomainFolder
    from distill.student.model import load_student

    ds = DomainFolder(root, test_fraction=0.3)
    student = load_student(checkpoint)
    settings = RobustSettings(pgd_eps=(8 / 255, 64 / 255), pgd_steps=3, corruptions=("gaussian_noise", "contrast"))
    ev = RobustEvaluator(ds, ["red", "green"], student.spec, settings)
    res = ev(student)
    assert set(res) == {"red", "green"}
    for d, r in res.items():
        assert r.n == len(ds.select([d], "test"))
        x, y = ev._data[d]  # clean accuracy recomputed from the model on the evaluator's images
        with torch.no_grad():
            acc = float((student(ev.normalize(x)).argmax(-1) == y).float().mean())
        assert r.clean == pytest.approx(acc), "a fraction, not a percent"
    # the attack bites: PGD-3 at 64/255 flips images this (untrained) model gets right (a no-op attack
    # or a wrong gradient sign would leave it at clean accuracy; "pgd <= clean" alone holds by construction)
    assert sum(r.pgd["64/255"] for r in res.values()) < sum(r.clean for r in res.values())
    assert sum(r.clean for r in res.values()) > 0
    for d, r in res.items():
        assert set(r.corruptions) == {"gaussian_noise", "contrast"}
        assert r.corruption_mean == pytest.approx(sum(r.corruptions.values()) / 2)
        assert all(0.0 <= v <= 1.0 for v in [r.clean, *r.pgd.values(), *r.corruptions.values()])
    assert not student.training, "evaluation must leave the model in eval mode it was given"


def test_distill_eval_json(root, checkpoint, capsys):
    rc = cli(["eval", str(checkpoint), "--data", str(root), "--domains", "green", "--pgd-eps", "2/255,8/255",
              "--pgd-steps", "2", "--corruptions", "jpeg,gaussian_blur", "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    report = json.loads(out)
    assert list(report["domains"]) == ["green"]
    g = report["domains"]["green"]
    assert set(g["pgd"]) == {"2/255", "8/255"} and set(g["corruptions"]) == {"jpeg", "gaussian_blur"}
    assert report["settings"]["pgd_steps"] == 2 and report["settings"]["pgd_eps"] == ["2/255", "8/255"]
    assert list(report) == ["checkpoint", "data", "split", "skipped_images", "settings", "domains"]
    assert 0.0 <= g["clean"] <= 1.0 and RobustReport.from_dict(report).domains["green"].n == g["n"]
    # clean only, as a table
    assert cli(["eval", str(checkpoint), "--data", str(root), "--pgd-eps", "0", "--corruptions", "none"]) == 0
    table = capsys.readouterr().out
    assert "clean" in table and "pgd" not in table.split("\n")[1]


def test_distill_eval_errors_are_one_line(root, checkpoint, capsys):
    assert cli(["eval", str(checkpoint), "--data", str(root), "--corruptions", "fog"]) == 1
    assert "unknown corruption 'fog'" in capsys.readouterr().err
    assert cli(["eval", str(root), "--data", str(root)]) == 1
    assert "not a student checkpoint" in capsys.readouterr().err


def test_distill_eval_of_a_run_folder_names_its_checkpoint(root, checkpoint, tmp_path, capsys):
    """`distill eval RUN` (the run folder, not RUN/checkpoints/best): the error names the folder to pass."""
    import shutil

    best = tmp_path / "run" / "checkpoints" / "best"
    shutil.copytree(checkpoint, best)
    assert cli(["eval", str(tmp_path / "run"), "--data", str(root)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {tmp_path / 'run'}: not a student checkpoint"), err
    assert err.endswith(f"pass {best}"), err


def test_train_robust_section(root, tmp_path):
    """The optional `robust` config section evaluates the best checkpoint after training."""
    from distill.train import train

    cfg = {"data": {"root": str(root), "source": ["red"]}, "student": {"arch": "test_resnet", "input_size": 16},
           "strategy": {"name": "erm"}, "optim": {"epochs": 1, "batch_size": 8},
           "run": {"out": str(tmp_path / "run"), "workers": 0, "progress": False},
           "robust": {"pgd_eps": ["4/255"], "pgd_steps": 2, "corruptions": ["contrast"], "max_images": 4}}
    summary = train(load_train_config(None, base=cfg))
    rob = summary.robust
    assert set(rob.domains) == {"red", "green"} and rob.settings["pgd_eps"] == ["4/255"]
    assert all(r.n == 4 and 0.0 <= r.clean <= 1.0 for r in rob.domains.values())
    written = json.loads((tmp_path / "run" / "robust.json").read_text())
    assert list(written) == ["checkpoint", "settings", "domains"], "a training run's robust.json"
    assert RobustReport.read(tmp_path / "run") == rob
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["robust"] == written
    with pytest.raises(DistillError, match="robust.pgd_eps"):
        load_train_config(None, base={**cfg, "robust": {"pgd_eps": ["big"]}})


def test_table_prints_fractions_as_percents_and_the_report_record_keeps_them():
    results = {"red": RobustAccuracy(n=80, clean=0.75, pgd={"2/255": 23 / 80}, corruptions={"jpeg": 0.25, "contrast": 0.75},
                                     corruption_mean=0.5)}
    lines = robust_table(results).splitlines()
    assert lines[0].split() == ["domain", "n", "clean", "pgd", "2/255", "jpeg", "contrast", "corr.", "mean"]
    assert lines[1].split() == ["red", "80", "75.0", "28.8", "25.0", "75.0", "50.0"], "23/80 printed as 28.75 was"
    assert lines[-1].startswith("(accuracy in %")
    assert robust_table({}) == "(no images)"
    settings = RobustSettings(pgd_eps=["2/255"], corruptions=["jpeg", "contrast"])
    assert _step_size(settings, 2 / 255) == pytest.approx(2.5 * (2 / 255) / 10), "Madry's rule by default"
    assert _step_size(RobustSettings(pgd_step_size="1/255"), 8 / 255) == pytest.approx(1 / 255), "or the fixed step"
    record = RobustReport(checkpoint="ckpt", settings=settings.to_dict(), domains=results).to_dict()
    assert list(record) == ["checkpoint", "settings", "domains"], "a training run's robust.json"
    assert record["settings"]["pgd_eps"] == ["2/255"] and record["settings"]["pgd_step_rule"] == "2.5*eps/steps"
    assert record["domains"]["red"]["pgd"]["2/255"] == 23 / 80, "fractions in the artifact"
    cli_record = RobustReport(checkpoint="ckpt", data="ROOT", split="test", skipped_images=[{"path": "a.png", "reason": "x"}],
                              settings=settings.to_dict(), domains=results).to_dict()
    assert list(cli_record) == ["checkpoint", "data", "split", "skipped_images", "settings", "domains"]
    assert cli_record["skipped_images"] == [{"path": "a.png", "reason": "x"}]
    with pytest.raises(DistillError, match="domains.red.clean"):
        RobustReport.from_dict(dict(record, domains={"red": dict(record["domains"]["red"], clean="high")}))


def test_table_columns_stay_aligned_with_a_long_domain_name():
    """A domain name longer than the column (PACS's art_painting) pushed its row right of the header (QA I, 10)."""
    acc = RobustAccuracy(n=4, clean=0.25, pgd={"2/255": 0.0}, corruptions={"jpeg": 0.25}, corruption_mean=0.25)
    lines = robust_table({"art_painting_long": acc, "cartoon": acc}).splitlines()
    assert len({len(line) for line in lines[:3]}) == 1, lines  # every column as wide in each line
    n_end = lines[0].index(" n ") + 2  # the header's "n" and each row's count end in one column
    assert [line[:n_end].split()[-1] for line in lines[1:3]] == ["4", "4"], lines
    assert lines[0].startswith("domain ") and lines[1].startswith("art_painting_long ")
