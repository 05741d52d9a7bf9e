"""The rendered report (distill/report/render_html.py, charts.py, export_sections.py, render_md.py)."""
from __future__ import annotations

import html
import re
from pathlib import Path

from distill.report.write import write_report


def test_report_content_is_self_contained(report: Path) -> None:
    text = report.read_text()
    assert "<script src" not in text and "<link" not in text and "@import" not in text
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", text))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls  # the SVG namespace is a name, never fetched
    for needle in ("Pareto front", "Per-domain accuracy", "Latency distributions", "Top operators", "INT8 decisions",
                   "Provenance", "clean", "noisy", "int8/tensorrt", "QLinearConv", "data-point="):
        assert needle in text, needle
    md = (report.parent / "report.md").read_text()
    assert md.startswith("# test report") and "## Pareto front" in md and "## INT8 decisions" in md
    assert "## Per-run accuracy (%)" in md
    assert "| test_resnet (erm) | 1 | 60.0 | 90.0* | 80.0* | 60.0 |" in md  # the run, in percent, sources marked


def test_grouped_html_and_markdown(grouped_runs: Path, tmp_path: Path) -> None:
    res = write_report([grouped_runs], tmp_path / "g.html", "g")
    text = (tmp_path / "g.html").read_text().replace("<wbr>", "")  # line-break hints in long names
    assert "{&quot;arch" not in text and text.count("ViT-test · open_clip_model.safetensors") == 2  # table + provenance
    assert text.count('<tr class="grp">') == 3  # teacher, source-trained, source-free
    assert "Adapted to the target domains without source data (source-free)" in text
    # target mean ± std (n seeds) [lowest-highest seed], per-seed values in the tooltip; sources marked *
    assert ('<td class="num tm" data-v="0.62" title="seeds 0, 1, 2: 60.0; 64.0; 62.0">62.0<span class="sd"> ±\u00a02.0'
            '</span><span class="sd"> (3) [60.0–64.0]</span></td>') in text
    assert '<td class="num src" data-v="0.91">91.0<span class="sd"> ±\u00a01.0</span><span class="sd">*</span></td>' in text
    assert '<td class="num tm" data-v="0.7">70.0</td>' in text  # one seed: the mean alone, no spread
    md = Path(res.markdown).read_text()
    assert ("| test_resnet (kd; temperature=4) | 3 | 62.0 ± 2.0 (3) [60.0–64.0] | 91.0 ± 1.0* | 81.0 ± 1.0* "
            "| 62.0 ± 2.0 |") in md
    assert "| test_resnet (kd; temperature=2) | 1 | 70.0 | 88.0* | 79.0* | 70.0 |" in md
    assert "| test_resnet (erm) | 2 | 52.0 ± 2.8 (2) [50.0–54.0] |" in md
    assert md.index("### Trained on the source domains") < md.index("### Adapted to the target domains") \
        < md.index("test_resnet (sfda)")


def test_html_compares_rows_of_several_seeds_by_welch(grouped_runs: Path, tmp_path: Path) -> None:
    """The HTML page carries report.md's Welch line: kd (T=4, 3 seeds) vs erm (2 seeds) is +10 points, beyond 2 SE
    but Welch p = 0.066, so not real; kd (T=2, one seed) and the one-seed source-free run are compared with nothing."""
    write_report([grouped_runs], tmp_path / "w.html", "w")
    text = (tmp_path / "w.html").read_text().replace("<wbr>", "")
    line = "test_resnet (kd; temperature=4) vs test_resnet (erm): +10.0 points, 2 SE = 4.6, Welch p = 0.066 -> within noise"
    assert f"<li>{html.escape(line)}</li>" in text and f"- {line}" in (tmp_path / "w.md").read_text()  # same words
    assert text.count('<ul class="welch">') == 1  # the source-free kind has no row of several seeds
    at = text.index('id="accuracy"')
    assert at < text.index(html.escape(line)) < text.index("</section>", at)  # in the accuracy section, below its table
    assert "temperature=2) vs" not in text and "vs test_resnet (kd; temperature=2)" not in text


def test_int8_section_shows_the_label_free_criterion(stress_report: Path) -> None:
    """The fallback decides on disagreement with fp32 (not the test drop): the INT8 table shows that
    number against the budget, and the test drop apart."""
    html = stress_report.read_text()
    section = html[html.index('<section id="int8">'):]
    section = section[:section.index("</section>")]
    assert "worst disagreement, %: before → after" in section and "worst test drop, pts" in section
    assert "2.73 → 0.60" in section  # the decision's own numbers (before: fallback, after: the shipped file)
    assert "+0.40 <span class=\"sd\">(p 0.012)</span>" in section  # the worst drop with its McNemar p
    assert "/backbone/blocks/blocks.0/blocks.0.0/se/conv_expand/Conv<br>" in section
    assert "/backbone/conv_head/Conv + float output" in section  # export.json float_outputs: its output float too


def test_int8_section_shows_how_many_test_images_sit_near_a_tie(stress_report: Path) -> None:
    """export.json's near_ties: the share of test images int8 can turn (fp32 margin below int8's move), under the
    disagreement in html and as its own column in md; an export without it shows a dash, not a number."""
    html = stress_report.read_text()
    section = html[html.index('<section id="int8">'):]
    section = section[:section.index("</section>")]
    assert section.count('<span class="muted">near a tie: 36 %</span>') == 1  # only customkd-0's ort-cpu file has it
    md = stress_report.with_suffix(".md").read_text()
    rows = [line for line in md[md.index("## INT8 decisions"):].splitlines() if line.startswith("| ")][1:]
    assert sum(line.endswith("| 36 % |") for line in rows) == 1 and sum(line.endswith("| – |") for line in rows) == 5
    assert "Test images near a tie: the share of test images" in md


def test_int8_section_says_which_x86_cpus_run_an_ort_cpu_file_as_exported(stress_report: Path) -> None:
    """export.json's x86_without_vnni: 7-bit weights run alike on every x86 CPU; 8-bit ones saturate u8 x s8 pairs on
    CPUs without VNNI, flagged; an export without the check (and a tensorrt file) shows nothing."""
    html = stress_report.read_text()
    section = html[html.index('<section id="int8">'):]
    section = section[:section.index("</section>")]
    assert section.count('<span class="muted">7-bit weights: any x86 CPU</span>') == 1
    assert section.count('<span class="bad">8-bit weights: 12 layers saturate on x86 without VNNI</span>') == 1
    assert section.count("bit weights") == 2
    md = stress_report.with_suffix(".md").read_text()
    rows = [line for line in md[md.index("## INT8 decisions"):].splitlines() if line.startswith("| ")][1:]
    assert sum("| ort-cpu (7-bit weights: any x86 CPU) |" in line for line in rows) == 1
    assert sum("| ort-cpu (8-bit weights: 12 layers saturate on x86 without VNNI) |" in line for line in rows) == 1


def test_the_tensorrt_qdq_column_shows_only_where_a_file_was_checked(stress_inputs: Path, tmp_path: Path) -> None:
    """The TensorRT QDQ placement check runs on tensorrt-flavour exports only: without one the INT8 table has no
    column of dashes (it made the demo's card overflow at 800 px); with one, the column and its verdict show."""
    import json
    import shutil

    from distill.report.export_sections import section_int8
    from distill.report.write import collect

    ex = tmp_path / "exports" / "customkd-0"
    shutil.copytree(stress_inputs / "exports" / "customkd-0", ex)
    assert "TensorRT QDQ" not in section_int8(collect([ex]))
    raw = json.loads((ex / "export.json").read_text())
    trt = next(m for m in raw["models"] if m.get("flavour") == "tensorrt")
    trt["tensorrt_qdq_check"] = {"ok": True, "problems": []}
    (ex / "export.json").write_text(json.dumps(raw))
    html = section_int8(collect([ex]))
    assert "<th>TensorRT QDQ</th>" in html and '<span class="good">ok</span>' in html
    assert html.count("<tr>") == html.count("</tr>") and all(row.count("<td") == 8 for row in html.split("<tr>")[2:])


def test_the_provenance_names_cpu_flags_hidden_from_the_benchmark() -> None:
    """A benchmark run under scripts/as_avx2.sh records the flags it saw and those hidden (cpu_info's hidden_flags):
    the report shows both, so AVX2-kernel timings are not read as a VNNI CPU's."""
    from distill.report.export_sections import _cpu_flags

    assert _cpu_flags({"flags": ["avx2", "fma"]}) == "avx2 fma"
    assert _cpu_flags({"flags": ["avx2", "fma"], "hidden_flags": ["avx512_vnni", "avx512f"]}) == \
        "avx2 fma (hidden from CPUID: avx512_vnni avx512f)"
