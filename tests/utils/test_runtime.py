"""Device resolution with a mocked ``torch.cuda``: CI without a GPU catches the GPU crashes.

``torch.cuda.set_device`` stays the real function (only the C call underneath is recorded), so
its own check -- "Expected a torch.device with a specified index" -- runs here exactly as on
a GPU: the first H100 run crashed there.
"""
from __future__ import annotations

import pytest
import torch

from distill.errors import DistillError
from distill.utils.runtime import check_precision, resolve_device
from tests.gloo import free_port


@pytest.fixture
def gpus(monkeypatch):
    """Pretend ``n`` GPUs are visible; returns the list of indices passed to the real set_device."""
    calls: list[int] = []

    def install(n: int, current: int = 0):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
        monkeypatch.setattr(torch._C, "_cuda_setDevice", lambda i: calls.append(i), raising=False)
        return calls

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    return install


def test_auto_is_cuda_with_index_and_set_device_gets_it(gpus):
    calls = gpus(2)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert calls == [0, 0], "set_device must receive an indexed device"


def test_single_process_cuda_is_the_current_device(gpus):
    calls = gpus(4, current=2)
    assert resolve_device("cuda") == torch.device("cuda", 2) and calls == [2]
    assert resolve_device("cuda:3") == torch.device("cuda", 3) and calls == [2, 3]


def test_torchrun_local_rank_picks_the_gpu(gpus, monkeypatch):
    calls = gpus(2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert calls == [1]


def test_more_ranks_than_gpus_is_one_line(gpus, monkeypatch):
    calls = gpus(1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(DistillError) as e:
        resolve_device("cuda", what="run.device")
    msg = str(e.value)
    assert "LOCAL_RANK=1" in msg and "only 1 GPU" in msg and "--nproc_per_node=1" in msg and "\n" not in msg
    assert calls == [], "nothing may reach CUDA before the check"
    with pytest.raises(DistillError, match=r"cuda:3 does not exist, only 1 GPU"):
        resolve_device("cuda:3")


def test_cpu_and_no_cuda(gpus):
    calls = gpus(0)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device(None) == torch.device("cpu")
    with pytest.raises(DistillError, match="--device 'cuda': CUDA is not available"):
        resolve_device("cuda", what="--device")
    with pytest.raises(DistillError, match="not a device"):
        resolve_device("gpu0")
    assert calls == []


def test_the_mock_keeps_torchs_own_index_check(gpus):
    """The fixture mocks only the C call: torch's check still refuses what distill.train used to pass,
    set_device(torch.device('cuda')), so the tests above would have caught the H100 crash."""
    gpus(1)
    with pytest.raises(ValueError, match="specified index"):
        torch.cuda.set_device(torch.device("cuda"))


def test_one_home_for_device_and_process_group():
    """No stage keeps its own copy of device resolution or process-group setup (the crash lived in one of four)."""
    from pathlib import Path

    import distill

    pkg = Path(distill.__file__).parent
    allowed = {"utils/runtime.py",  # the home
               "utils/state.py",  # saves/restores CUDA RNG state, resolves nothing
               "bench/edge_runner.py"}  # runs alone on devices without distill installed
    offenders = []
    for f in pkg.rglob("*.py"):
        rel = f.relative_to(pkg).as_posix()
        text = f.read_text()
        for needle in ("cuda.is_available(", "set_device(", "init_process_group("):
            if needle in text and rel not in allowed:
                offenders.append(f"{rel}: {needle}")
    assert not offenders, offenders


@pytest.mark.parametrize("argv", [
    ["eval", "CKPT", "--data", "ROOT", "--device", "cuda"],
    ["cache", "build", "--data", "ROOT", "--out", "OUT", "--arch", "distill-demo-vit", "--pretrained", "none",
     "--device", "cuda"],
    ["teacher", "eval", "--arch", "distill-demo-vit", "--data", "ROOT", "--device", "cuda"],
    ["bench", "CKPT", "--runtime", "torch", "--device", "cuda"],
])
def test_cli_devices_go_through_runtime(argv, gpus, tmp_path, capsys):
    """Each command's --device reaches resolve_device before any work (one-line error without CUDA)."""
    from distill.cli import main
    from tests.shapes import make_shapes_root

    gpus(0)
    root = make_shapes_root(tmp_path / "data", ["red"], per_class=2)
    ckpt = _tiny_checkpoint(tmp_path / "ckpt")
    argv = [str(root) if a == "ROOT" else str(ckpt) if a == "CKPT" else str(tmp_path / "out") if a == "OUT" else a
            for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "--device 'cuda': CUDA is not available" in err and len(err.splitlines()) == 1, err


def _tiny_checkpoint(path):
    from distill.student.model import Student, default_spec, save_student

    return save_student(Student(default_spec("test_resnet", ["circle", "square", "stripes"], 16)), path)


def test_train_device_goes_through_runtime(gpus, tmp_path, capsys):
    import yaml

    from distill.cli import main
    from tests.shapes import make_shapes_root

    gpus(0)
    root = make_shapes_root(tmp_path / "data", ["red", "green"], per_class=2)
    cfg = {"data": {"root": str(root), "source": ["red"]}, "strategy": {"name": "erm"},
           "student": {"arch": "test_resnet", "input_size": 16},
           "run": {"out": str(tmp_path / "run"), "device": "cuda", "workers": 0}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "-c", str(tmp_path / "c.yaml")]) == 1
    err = capsys.readouterr().err.strip()
    assert "run.device 'cuda': CUDA is not available" in err and len(err.splitlines()) == 1, err


def test_precision_rules():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert check_precision("bf16", cpu) is torch.bfloat16 and check_precision("fp16", cuda) is torch.float16
    with pytest.raises(DistillError, match="fp16 needs a CUDA GPU"):
        check_precision("fp16", cpu, what="optim.precision")
    with pytest.raises(DistillError, match="'fp64': use one of fp32, bf16, fp16"):
        check_precision("fp64", cpu)


def test_cudnn_autotuner_stays_off_whether_or_not_runs_are_deterministic():
    """Measured on an H200: the autotuner gained nothing on the student's step and likely cost a 62 s first
    epoch; deterministic runs need it off. A change here should come with a new GPU measurement."""
    from distill.utils.runtime import set_deterministic

    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.are_deterministic_algorithms_enabled())
    try:
        torch.backends.cudnn.benchmark = False
        set_deterministic(False)
        assert torch.backends.cudnn.benchmark is False
        set_deterministic(True)
        assert torch.backends.cudnn.benchmark is False and torch.backends.cudnn.deterministic is True
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[:2]
        torch.use_deterministic_algorithms(saved[2], warn_only=True)


def test_process_group_timeout_is_long_by_default_and_set_by_the_environment(monkeypatch):
    import datetime

    from distill.errors import DistillError
    from distill.utils.runtime import DEFAULT_TIMEOUT, TIMEOUT_ENV, dist_timeout
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert dist_timeout() == DEFAULT_TIMEOUT >= datetime.timedelta(hours=1)
    monkeypatch.setenv(TIMEOUT_ENV, "90")
    assert dist_timeout() == datetime.timedelta(seconds=90)
    for bad in ("soon", "0", "-5"):
        monkeypatch.setenv(TIMEOUT_ENV, bad)
        with pytest.raises(DistillError, match=TIMEOUT_ENV):
            dist_timeout()


def _share_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as tdist

    from distill.errors import DistillError
    from distill.utils.runtime import Dist, share_from_main
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        d, calls = Dist(rank, 2), []
        value = share_from_main(lambda: calls.append(rank) or ["listed by", rank], d)

        def fails():
            raise DistillError("ROOT: no images")
        try:
            share_from_main(fails, d)
            error = None
        except DistillError as e:
            error = str(e)
        torch.save({"value": value, "calls": calls, "error": error}, f"{out}.{rank}")
    finally:
        tdist.destroy_process_group()


def test_work_shared_from_rank_0_runs_once_and_its_error_reaches_every_rank(tmp_path):
    import torch.multiprocessing as mp
    port = free_port()
    mp.spawn(_share_worker, args=(port, str(tmp_path / "r")), nprocs=2)
    r0, r1 = torch.load(tmp_path / "r.0"), torch.load(tmp_path / "r.1")
    assert r0["value"] == r1["value"] == ["listed by", 0]
    assert r0["calls"] == [0] and r1["calls"] == []  # rank 1 never listed
    assert r0["error"] == r1["error"] == "ROOT: no images"
