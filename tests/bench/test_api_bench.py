"""``distill.api.bench``: ``distill bench`` from Python (QA G F6: report() read bench .jsonl files only the CLI could
write). Same options and defaults as the command, the typed records back, the same .jsonl written."""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from distill import api
from distill.bench.edge_runner import parse_batches
from distill.cli import build_parser
from distill.errors import DistillError, UnknownKeyword
from distill.records import BenchRecord


def test_bench_writes_the_commands_jsonl_and_returns_its_records(small_onnx: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "results" / "bench.jsonl"
    records = api.bench(small_onnx, batch=[1, 2], warmup=1, iters=3, threads=1, out=out)
    assert all(isinstance(r, BenchRecord) for r in records)
    assert [(r.model, r.batch, r.runtime, r.threads) for r in records] == [
        (str(small_onnx), 1, "ort-cpu", 1), (str(small_onnx), 2, "ort-cpu", 1)]
    assert list(BenchRecord.read_lines(out)) == records  # what the file holds, model_relative included
    assert records[0].model_relative == str(Path("..") / ".." / small_onnx.relative_to(tmp_path.parent))
    err = capsys.readouterr().err
    assert "small.fp32.onnx ort-cpu batch=1: p50" in err  # the command's line per record, on stderr
    # without out: the records only, nothing written, and a second call appends to the same file as --out does
    assert [r.batch for r in api.bench([small_onnx], batch="4", warmup=1, iters=2)] == [4]
    api.bench(small_onnx, warmup=1, iters=2, out=out)
    assert [json.loads(line)["batch"] for line in out.read_text().splitlines()] == [1, 2, 1]


def test_bad_arguments_are_one_line(small_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(UnknownKeyword, match=r"bench\(\): unknown keyword argument 'iter' \(did you mean 'iters'\?\)"):
        api.bench(small_onnx, iter=3)  # type: ignore[call-arg]
    for batch in (0, "a", 1.5, [1, None], True):
        with pytest.raises(DistillError, match="bench: batch must be a positive int, a list of them or a string"):
            api.bench(small_onnx, batch=batch)  # type: ignore[arg-type]
    with pytest.raises(DistillError, match="bench: models must be a path"):
        api.bench(5)  # type: ignore[arg-type]
    with pytest.raises(DistillError, match="is a folder; name a file"):  # checked before anything is timed
        api.bench(small_onnx, out=tmp_path)
    (tmp_path / "export.json").write_text("{}")  # as distill bench --out: a record is not appended to
    with pytest.raises(DistillError, match=r"^out .*export.json: not a .jsonl file"):
        api.bench(small_onnx, out=tmp_path / "export.json")
    assert (tmp_path / "export.json").read_text() == "{}"
    with pytest.raises(DistillError, match="not found"):
        api.bench(tmp_path / "none.onnx")


def test_defaults_are_the_commands() -> None:
    """Every option of ``distill bench`` is a keyword of bench() (``-`` as ``_``) with the command's default."""
    args = vars(build_parser().parse_args(["bench", "m.onnx"]))
    params = inspect.signature(api.bench).parameters
    flags = {k: v for k, v in args.items() if k not in ("command", "model", "func", "_parser", "interrupt_hint",
                                                        "no_progress")}
    assert set(flags) == set(params) - {"models"}
    for key, default in flags.items():
        mine = params[key].default
        assert (tuple(parse_batches(str(mine))) == tuple(parse_batches(default))) if key == "batch" \
            else mine == default, key
