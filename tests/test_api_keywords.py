"""distill/api.py: the keywords that mirror a command's flags (``skip_bad`` for ``--skip-bad``), and error messages
worded for a Python call (the keys it passed, not ``--set``)."""
from __future__ import annotations

import pytest

from distill import api
from distill.config import TrainConfig, dump_config, load_train_config
from distill.errors import DistillError
from distill.recipes import CONFIGS_DIR
from distill.records import RUN_CONFIG
from distill.run_paths import stored_paths


@pytest.fixture
def trained(monkeypatch):
    import distill.train

    calls: list[tuple[TrainConfig, bool]] = []
    monkeypatch.setattr(distill.train, "train", lambda cfg, resume=False: calls.append((cfg, resume)) or "summary")
    return calls


# ---------------------------------------------------------------- skip_bad: --skip-bad of train and adapt (QA G, F7)
@pytest.mark.parametrize("overrides", [None, {"optim.epochs": 1}, ["optim.epochs=1"]])
def test_train_takes_skip_bad_as_the_cli_takes_skip_bad(trained, overrides):
    assert api.train("erm", overrides, skip_bad=True) == "summary"
    assert api.train("erm", overrides) == "summary"
    assert [cfg.data.skip_bad for cfg, _ in trained] == [True, False]


def test_adapt_takes_skip_bad(monkeypatch, trained):
    seen = []
    monkeypatch.setattr(api, "adapt_config", lambda *a, overrides=None, **k: seen.append(overrides)
                        or load_train_config(CONFIGS_DIR / "shot.yaml", api.override_items(overrides)))
    assert api.adapt("ckpt", "mnist_m", "data", skip_bad=True, overrides={"optim.epochs": 1}) == "summary"
    assert seen == [{"optim.epochs": 1, "data.skip_bad": True}] and trained[0][0].data.skip_bad


def test_skip_bad_is_refused_with_resume_and_checked(trained, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / RUN_CONFIG).write_text(dump_config(stored_paths(load_train_config(CONFIGS_DIR / "sfda.yaml",
                                                                             [f"run.out={run}"]))))
    with pytest.raises(DistillError, match=r"train: .*; skip_bad not allowed with it$"):
        api.train(resume=run, skip_bad=True)
    with pytest.raises(DistillError, match=r"adapt: .*; skip_bad not allowed with it$"):
        api.adapt(resume=run, skip_bad=True)
    with pytest.raises(DistillError, match=r"^skip_bad: expected True or False, got 'yes'$"):
        api.train("erm", skip_bad="yes")  # type: ignore[arg-type]
    assert api.train(resume=run, skip_bad=False) == "summary"
