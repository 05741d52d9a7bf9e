"""``BenchRecord.append_to`` on a bench file whose last line was cut off (power loss, kill -9) starts a new line with one
warning, as the edge runner's ``write_jsonl`` does: before, the new record was glued onto the fragment and lost."""
from __future__ import annotations

from pathlib import Path

from distill.records import BenchRecord
from tests.report.test_engine_join import engine_record


def test_append_to_after_a_cut_off_line_keeps_the_new_record(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bench.jsonl"
    engine_record("/dev/a/model.int8.engine").append_to(path)
    whole = path.read_bytes()
    path.write_bytes(whole + whole[: len(whole) // 2])  # a second line cut off half way
    capsys.readouterr()
    engine_record("/dev/b/model.fp16.engine").append_to(path)
    skipped: list[tuple[int, str]] = []
    records = list(BenchRecord.read_lines(path, skipped))
    assert [r.model for r in records] == ["/dev/a/model.int8.engine", "/dev/b/model.fp16.engine"]
    assert [n for n, _ in skipped] == [2] and path.read_bytes().endswith(b"\n")
    err = capsys.readouterr().err
    assert err.count("last line is cut off") == 1 and str(path) in err, err


def test_append_to_a_whole_or_new_file_says_nothing(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bench.jsonl"
    for name in ("a", "b"):
        engine_record(f"/dev/{name}/model.int8.engine").append_to(path)
    assert len(list(BenchRecord.read_lines(path))) == 2 and path.read_text().count("\n") == 2
    assert capsys.readouterr().err == ""


def test_append_to_after_a_whole_record_without_its_newline_keeps_both_silently(tmp_path: Path, capsys) -> None:
    """Review 4 finding 3: a complete last record merely lacking its newline (echo -n, another tool) was called "cut
    off ... readers skip the cut-off one", though readers read it: the warning is for a last line that is not JSON."""
    path = tmp_path / "bench.jsonl"
    engine_record("/dev/a/model.int8.engine").append_to(path)
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    capsys.readouterr()
    engine_record("/dev/b/model.fp16.engine").append_to(path)
    assert [r.model for r in BenchRecord.read_lines(path)] == ["/dev/a/model.int8.engine", "/dev/b/model.fp16.engine"]
    assert capsys.readouterr().err == ""
