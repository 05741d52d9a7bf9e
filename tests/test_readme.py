"""Every command in README.md's ```bash blocks runs as written against the quick demo's outputs.

So the README cannot drift from the code: a renamed file, flag or default fails here.

How a README command becomes a test command (the only changes made to it):

- It runs in a fresh folder laid out as a user's after ``make demo``: ``demo_out/`` holds the
  quick demo's outputs (``demo_out/data/digits-full-seed0`` is the quick suite), ``data`` is
  ``demo_out/data``, ``teacher`` is ``demo_out/teacher`` (see :data:`SKIP` for why), and
  ``configs/`` is the repository's. Everything a command writes lands in that folder.
- ``ROOT`` (the README's placeholder for a dataset root) becomes ``demo_out/data/digits-full-seed0``.
- Optional arguments shown in brackets (``[--json]``, ``[--calib-method a|b]``) are dropped.
- ``distill`` runs as ``python -m distill``, ``python`` as this interpreter.
- ``distill train -c`` and ``distill adapt`` get :data:`TEST_SIZE` appended: the recipes are
  sized for the full suite (batch 64 is more than the quick suite's 52 mnist train images);
  not ``--resume``, which continues a run exactly as configured and takes no ``--set``.
- The ```python blocks (the Python API) run as written, each as one script, in the same folder;
  their examples are already at test size.
- Lines matched by :data:`SKIP` are not run, each for the reason given there; a line with
  ``...`` elides arguments and is not a command.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QUICK_SUITE = "digits-quick-seed0"

#: substring of a README command -> why this test does not run it
SKIP: dict[str, str] = {
    "make demo": "installs, then runs the full demo: this test runs on the quick demo's outputs instead",
    "make test": "runs the test suite this test is part of",
    "laion2b_s34b_b79k": "downloads a pretrained CLIP (needs internet)",
    "hf-hub:": "downloads from the Hugging Face hub (needs internet)",
    "/path/": "a placeholder path for the user's own checkpoint",
    "torchrun": "two processes: tests/train/test_trainer.py::test_ddp_two_processes_match_one and "
                "tests/teacher/cache/test_build.py::test_torchrun_two_processes_equal_one run them",
    "--runtime ort-trt": "needs TensorRT (on a Jetson)",
    "distill teacher bootstrap": "its full preset trains >= 1000 steps (minutes on this CPU); "
                                 "tests/teacher/test_bootstrap.py runs the command; teacher/ here is the quick demo's",
    "distill data materialize": "writes the full 6,797-image suite (~1 min); the quick demo's stage 1 ran the same "
                                "code, and data/ here is its output",
}
#: test-size overrides appended to training commands (see the module docstring)
TEST_SIZE = ["--set", "optim.epochs=2", "--set", "optim.batch_size=16"]
TIMEOUT_S = 300


def readme_commands(text: str) -> list[str]:
    """Every command line of the ```bash blocks, continuation lines joined, comments removed."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(" ".join(line.split()))
    return commands


def to_argv(command: str) -> list[str]:
    """A README command -> the argv this test runs (the rules of the module docstring)."""
    command = re.sub(r"\s\[[^\]]*\]", "", command)  # optional arguments
    command = re.sub(r"\bROOT\b", "demo_out/data/digits-full-seed0", command)
    argv = shlex.split(command)
    if argv[0] == "distill":
        argv = [sys.executable, "-m", "distill", *argv[1:]]
        if (argv[3] == "adapt" and "--resume" not in argv) or (argv[3] == "train" and "-c" in argv):
            argv += TEST_SIZE
    elif argv[0] == "python":
        argv = [sys.executable, *argv[1:]]
    return argv


def _workdir(tmp: Path, demo: Path) -> Path:
    """A user's folder after ``make demo`` (module docstring), built from links to the quick demo."""
    out = tmp / "demo_out"
    (out / "data").mkdir(parents=True)
    for child in demo.iterdir():
        if child.name != "data":
            (out / child.name).symlink_to(child)
    for suite in (demo / "data").iterdir():
        (out / "data" / suite.name).symlink_to(suite)
    (out / "data" / "digits-full-seed0").symlink_to(demo / "data" / QUICK_SUITE)
    (tmp / "data").symlink_to(out / "data")
    (tmp / "teacher").symlink_to(out / "teacher")
    (tmp / "configs").symlink_to(REPO / "configs")
    return tmp


def readme_python(text: str) -> list[str]:
    """The ```python blocks, each a script."""
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_parsing_rules():
    text = "```bash\ndistill a --x ROOT [--json]  # note\n# only a comment\ndistill b \\\n    --y 1\n```\n"
    assert readme_commands(text) == ["distill a --x ROOT [--json]", "distill b --y 1"]
    assert to_argv("distill cache inspect c [--json]")[1:] == ["-m", "distill", "cache", "inspect", "c"]
    assert to_argv("distill train -c k.yaml")[-4:] == TEST_SIZE
    assert to_argv("distill adapt --resume runs/a")[-2:] == ["--resume", "runs/a"]
    assert readme_python("x\n```python\nprint(1)\n```\n```bash\nls\n```") == ["print(1)\n"]


def test_readme_states_the_demos_cache_views_and_the_fm_policys_flips():
    """README section 2 said the demo caches 2 views while the stage table (and distill/demo.py) said 8; it said
    `--policy fm` uses no flips, which is only its default: `--hflip P` is taken with it."""
    from distill.data.view_policy import preset
    from distill.data.views import ViewConfig
    from distill.demo import CACHE_VIEWS

    text = (REPO / "README.md").read_text()
    stated = re.findall(r"(\d+) function-matching views per image", text) + \
        re.findall(r"The demo caches (\d+) views per image", text)
    assert len(stated) == 2 and set(stated) == {str(CACHE_VIEWS)}, stated
    fm = re.search(r"^- `--policy fm`.*?(?=^- )", text, flags=re.S | re.M).group(0)
    assert "no flips unless `--hflip P`" in fm
    assert preset("fm").crop.hflip == 0.0 and preset("fm", ViewConfig(hflip=0.5)).crop.hflip == 0.5


@pytest.mark.slow
def test_readme_python_api_runs_as_written(quick_demo, tmp_path):
    """The Python API example trains, exports and prints what the README says, from the folder `make demo` ran in."""
    demo, _ = quick_demo
    scripts = readme_python((REPO / "README.md").read_text())
    assert scripts and any("from distill.api import" in s for s in scripts)
    cwd = _workdir(tmp_path, demo)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    for i, script in enumerate(scripts):
        (cwd / f"readme_{i}.py").write_text(script)
        res = subprocess.run([sys.executable, f"readme_{i}.py"], cwd=cwd, env=env, capture_output=True, text=True,
                             timeout=TIMEOUT_S)
        assert res.returncode == 0, f"README python block {i} failed:\n{(res.stdout + res.stderr)[-3000:]}"
    summary = json.loads((cwd / "runs" / "api-kd" / "summary.json").read_text())
    # absolute, so that export(summary.checkpoint, ...) works from any folder (QA G F2)
    assert summary["strategy"] == "kd" and os.path.isabs(summary["checkpoint"]) and \
        Path(summary["checkpoint"]).samefile(cwd / "runs" / "api-kd" / "checkpoints" / "best")
    report = json.loads((cwd / "exports" / "api-kd" / "export.json").read_text())
    assert summary["checkpoint"] in res.stdout and all(m["file"] in res.stdout for m in report["models"]), res.stdout


@pytest.mark.slow
def test_readme_commands_run_as_written(quick_demo, tmp_path):
    demo, _ = quick_demo
    commands = readme_commands((REPO / "README.md").read_text())
    cwd = _workdir(tmp_path, demo)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    used: set[str] = set()
    ran = []
    for command in commands:
        skip = [key for key in SKIP if key in command]
        if skip or "..." in command:
            used.update(skip)
            continue
        argv = to_argv(command)
        res = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
        assert res.returncode == 0, f"README command failed: {command}\n{(res.stdout + res.stderr)[-3000:]}"
        ran.append((command, res.stdout + res.stderr))
    assert used == set(SKIP), f"skip rules that match no README command (stale): {set(SKIP) - used}"
    assert len(ran) >= 10, [c for c, _ in ran]
    out = dict(ran)
    # the cache command picks up the bootstrapped teacher's own templates (teacher.json beside the checkpoint)
    cache_cmd = next(c for c in out if c.startswith("distill cache build"))
    assert "prompt templates: 4 from teacher/teacher.json" in out[cache_cmd]
    # ... and the demo's view settings, so a user copying it gets the demo's cache
    mine, demos = (json.loads((p / "manifest.json").read_text()) for p in (cwd / "cache" / "demo", demo / "cache"))
    assert mine["views"] == demos["views"] and mine["templates"] == demos["templates"]
