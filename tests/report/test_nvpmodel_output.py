"""Real ``nvpmodel -q`` answers start with a fan line on many boards (review 3 finding 3): the device is the board,
its power mode name and L4T release, never the fan mode. Answers as public guides and fixtures show them: JetPack 6
on an Orin NX, a Xavier at MAXN and at MODE_30W_4CORE."""
from __future__ import annotations

from pathlib import Path

import pytest

from distill.bench.edge_runner import nvpmodel_fields
from distill.records import BenchRecord
from distill.report.data import device_label, fan_label
from distill.report.write import collect, write_report
from tests.report.test_engine_join import engine_record, write_export
from tests.report.test_jetson_devices import BOARD, jetson

ORIN_NX_JP6 = "NV Fan Mode:quiet\nNV Power Mode: MAXN\n0\n"
XAVIER_COOL = "NV Fan Mode:cool\nNV Power Mode: MAXN\n0\n"
XAVIER_30W = "NV Fan Mode:cool\nNV Power Mode: MODE_30W_4CORE\n5\n"


@pytest.mark.parametrize("out,fields", [
    (ORIN_NX_JP6, {"power_mode": "MAXN", "power_mode_id": "0", "fan_mode": "quiet"}),
    (XAVIER_30W, {"power_mode": "MODE_30W_4CORE", "power_mode_id": "5", "fan_mode": "cool"}),
    ("NV Power Mode: MAXN_SUPER\n2\n", {"power_mode": "MAXN_SUPER", "power_mode_id": "2"}),
    ("something else\n", {"power_mode": "something else"}),
])
def test_the_runner_keeps_the_power_mode_apart_from_the_fan_mode(out: str, fields: dict[str, str]) -> None:
    assert nvpmodel_fields(out) == fields


@pytest.mark.parametrize("stored", [
    " ".join(ORIN_NX_JP6.split()),  # an older runner: the whole answer on one line
    nvpmodel_fields(ORIN_NX_JP6)["power_mode"],  # this runner: the name
])
def test_the_device_is_the_power_mode_without_the_fan_line(stored: str) -> None:
    rec = jetson(engine_record("/x/model.int8.engine"), stored, 0.2, "2026-12-06T09:20:31+0000")
    assert device_label(rec) == f"{BOARD} (MAXN · L4T 36.4.3)"


def test_the_fan_switched_from_quiet_to_cool_is_one_device(tmp_path: Path) -> None:
    ex = write_export(tmp_path / "exp", "1")
    rec = engine_record(str(ex / "model.int8.engine"))
    jetson(rec, " ".join(ORIN_NX_JP6.split()), 0.2, "2026-12-06T09:20:31+0000").append_to(ex / "bench.jsonl")
    jetson(rec, " ".join(XAVIER_COOL.split()), 0.3, "2026-12-06T10:00:00+0000").append_to(ex / "bench.jsonl")
    data = collect([ex])
    assert {p.device for p in data.points} == {f"{BOARD} (MAXN · L4T 36.4.3)"}
    assert len(data.points) == 1  # one file timed twice on one device: repeats of one point


def _fan(record: BenchRecord, fields: dict[str, str]) -> BenchRecord:
    """``record`` with this runner's ``nvpmodel -q`` fields (power mode, its id, the fan mode)."""
    return record.model_copy(update={"device": {**record.device, "jetson": {**record.device["jetson"], **fields}}})


def _html(tmp_path: Path, *answers: str) -> str:
    """report.html of one engine timed once per ``nvpmodel -q`` answer (an hour apart)."""
    ex = write_export(tmp_path / "exp", "1")
    rec = engine_record(str(ex / "model.int8.engine"))
    for i, out in enumerate(answers):
        _fan(jetson(rec, "", 0.2 + i / 10, f"2026-12-06T{9 + i:02d}:00:00+0000"), nvpmodel_fields(out)).append_to(
            ex / "bench.jsonl")
    return write_report([ex], tmp_path / "r.html").html.read_text()


def test_the_recorded_fan_mode_is_shown_beside_the_device(tmp_path: Path) -> None:
    """The runner records the fan mode; the report showed it nowhere. Now by the device in "All records" and in
    Provenance's devices, without making it part of the device (the Pareto fronts, the points)."""
    html = _html(tmp_path, ORIN_NX_JP6)
    assert f'All records <span class="muted">on {BOARD} (MAXN · L4T 36.4.3) · fan quiet' in html
    assert f"<td>{BOARD} · MAXN · L4T 36.4.3 · fan quiet</td>" in html


def test_records_of_one_device_at_two_fan_modes_each_show_theirs(tmp_path: Path) -> None:
    """quiet, then cool: one device (repeats of one point), so the fan is not in the heading but on each row."""
    html = _html(tmp_path, ORIN_NX_JP6, XAVIER_COOL)
    assert f'All records <span class="muted">on {BOARD} (MAXN · L4T 36.4.3),' in html
    assert html.count('<br><span class="muted">fan quiet</span>') == html.count('<span class="muted">fan cool</span>') == 1


def test_no_fan_is_shown_where_none_is_recorded(tmp_path: Path) -> None:
    html = _html(tmp_path, "NV Power Mode: MAXN_SUPER\n2\n")
    assert f'on {BOARD} (MAXN_SUPER · L4T 36.4.3),' in html and "fan " not in html


def _md(tmp_path: Path, *answers: str) -> str:
    """report.md beside :func:`_html`'s report."""
    _html(tmp_path, *answers)
    return (tmp_path / "r.md").read_text()


def test_report_md_shows_the_fan_mode_beside_the_device_too(tmp_path: Path) -> None:
    """report.md showed no fan mode at all: now as report.html does, by the device where its records share one."""
    md = _md(tmp_path, ORIN_NX_JP6)
    assert f"Measured on {BOARD} (MAXN · L4T 36.4.3) · fan quiet." in md
    assert f"| {BOARD} (MAXN · L4T 36.4.3) · fan quiet |" in md  # the Pareto table's device cell


def test_report_md_at_two_fan_modes_puts_the_newest_records_on_its_row(tmp_path: Path) -> None:
    md = _md(tmp_path, ORIN_NX_JP6, XAVIER_COOL)
    assert f"Measured on {BOARD} (MAXN · L4T 36.4.3)." in md and "· fan" not in md
    assert md.count("(fan cool) |") == 2 and "(fan quiet)" not in md  # one point (the newest record), two tables


def test_report_md_without_a_fan_mode_names_none(tmp_path: Path) -> None:
    md = _md(tmp_path, "NV Power Mode: MAXN_SUPER\n2\n")
    assert f"Measured on {BOARD} (MAXN_SUPER · L4T 36.4.3)." in md and "fan " not in md


def test_an_older_runners_one_line_answer_shows_its_fan_mode_too() -> None:
    rec = jetson(engine_record("/x/model.int8.engine"), " ".join(XAVIER_COOL.split()), 0.2, "2026-12-06T09:20:31+0000")
    assert (fan_label(rec), device_label(rec)) == ("fan cool", f"{BOARD} (MAXN · L4T 36.4.3)")
