"""``build_engine.sh``: TensorRT engines built on the target device, for TensorRT 10 or 11, then checked.

The script asks ``trtexec`` which TensorRT it is (its ``[TensorRT v100300]`` banner; the Python
bindings as a fallback; ``TRT_MAJOR=10|11`` overrides) and runs one of two blocks:

- TensorRT 10 (Jetson Orin on JetPack 6.1/6.2: 10.3): ``--fp16`` from the fp32 ONNX, ``--int8 --fp16`` from the
  QDQ ONNX.
- TensorRT >= 11: none of the removed ``--int8/--fp16/--best/--calib`` (nor ``--stronglyTyped``, a
  deprecated no-op in 11: every network is strongly typed); fp16 from the fp16 ONNX, int8 from the QDQ ONNX.
  On a Jetson (``/etc/nv_tegra_release``), TensorRT 11 gets a note with what NVIDIA's Jetson migration
  pages say: JetPack 6.x stays on TensorRT 10.x, and 11.4.1 is the 11.x that supports JetPack (7.2.2+).

Then, when the export had calibration images and ``polygraphy`` is installed, each engine is
run by polygraphy on those images next to ONNX Runtime on the ONNX it was built from (and on the
fp32 ONNX), and :mod:`distill.export.engine_check` prints the top-1 agreement of each pair. Every engine is checked
whatever failed before it: one whose own polygraphy run fails is moved aside (``ENGINE.failed``, with
``ENGINE.check.log``); a failing ONNX Runtime run of an ONNX file is not the engines' fault, so only the comparisons
with that file are skipped; polygraphy runs the batches its data loader makes of the check images (the opt batch, and
a last smaller one), so each engine that passed is then run by ``trtexec --loadEngine`` at the profile's batches it
did not run (min and max; opt too where there are fewer check images than that); at the end the summary, one line naming every
failure, and exit 1. A polygraphy that cannot run TensorRT (it says it cannot import ``tensorrt``, or it fails on every
engine) moves no engine aside: each is run by trtexec at every batch instead, one line says why and how to fix it, and
the script exits 1 (the comparison did not happen; ``POLYGRAPHY=none`` builds without it). Without
polygraphy or calibration images each engine is run by ``trtexec --loadEngine``, once at each distinct batch of the
profile (min, opt, max; ``--iterations``, ``--warmUp``, ``--duration`` and ``--shapes`` are trtexec's inference
options, with the ``name:BxCxHxW`` spec, in TensorRT 10.3 and 11.1 alike: ``samples/common/sampleOptions.cpp`` at
NVIDIA/TensorRT's v10.3.0 and v11.1 tags), so a broken engine, or one out of memory at the max batch, fails at build
time rather than when the edge runner first times it: every engine is run, a failing one is moved aside
(``ENGINE.failed``, with ``ENGINE.smoke.log``; not deleted, since the failure may be transient), then one line names
the failures and the script exits 1. ``SKIP_CHECK=1`` skips both. Ctrl-C stops the script where it is (exit 130),
also in a polygraphy run that turns it into SIGTERM (its TensorRT logger does), which is not taken as the engine's.

Each engine built gets ``ENGINE.source.json`` beside it: the ONNX file it was built from, that file's sha256 and the
engine's, at build time. The edge runner's ``engine_source`` reads it, so a record names the bytes the engine was built
from, not whatever ONNX was copied beside it since.
"""
from __future__ import annotations

import shlex
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from distill.export import engine_check
from distill.export.images import ImageSet
from distill.export.tensorrt import (
    JETPACK_NOTE,
    MIN_MAJOR,
    SOURCE_SUFFIX,
    STRONGLY_TYPED_MAJOR,
    shape_spec,
    trtexec_command,
)
from distill.export.tensorrt_shell import CHECK, DETECT, SMOKE, START

BUILD_SCRIPT = "build_engine.sh"        # in the export folder: builds the engines on the device
CHECK_SCRIPT = "tensorrt_check.py"      # engine_check.py, copied: polygraphy's data loader + the agreement
CHECK_IMAGES_FILE = engine_check.IMAGES_FILE
CHECK_DIR = "tensorrt_check"            # written on the device: polygraphy's saved outputs and log
CHECK_IMAGES = 256                      # calibration images the engines are checked on, at most
# ENGINE + these: an engine whose trtexec or polygraphy run failed, moved aside, and the log of that run
_ASIDE = (".failed", ".smoke.log", ".check.log")


def check_image_count(n_images: int, count: int = CHECK_IMAGES) -> int:
    """How many of ``n_images`` calibration images :func:`write_check_files` writes (``write_build_script``'s
    ``check_images``)."""
    return min(n_images, count)


def write_check_files(out_dir: str | Path, images: ImageSet, input_name: str,
                      batches: tuple[int, int, int], count: int = CHECK_IMAGES) -> list[str]:
    """The check's inputs: up to ``count`` calibration images (spread over the set, uint8 with the
    normalization to apply) and the standalone :mod:`~distill.export.engine_check` script.

    Returns:
        The file names written, in ``out_dir``.
    """
    out_dir = Path(out_dir)
    n = len(images)
    keep = np.unique(np.linspace(0, n - 1, count).astype(np.int64)) if n > count else np.arange(n)
    np.savez(out_dir / CHECK_IMAGES_FILE, images=images.images[keep],
             mean=np.asarray(images.mean, np.float32), std=np.asarray(images.std, np.float32),
             input_name=np.asarray(input_name), batch=np.asarray(batches[1]), min_batch=np.asarray(batches[0]))
    shutil.copyfile(engine_check.__file__, out_dir / CHECK_SCRIPT)
    return [CHECK_SCRIPT, CHECK_IMAGES_FILE]


def _block(engines: list[dict[str, Any]], input_name: str, chw: tuple[int, int, int],
           batches: tuple[int, int, int], workspace_mib: int, typed: bool) -> list[str]:
    lines = []
    for e in engines:
        src = e["onnx_strongly_typed"] if typed else e["onnx"]
        cmd = trtexec_command(src, e["engine"], e["precision"], input_name, chw, batches,
                              workspace_mib=workspace_mib, trtexec="$TRTEXEC", typed=typed)
        note = f"building {e['engine']} ({e['precision']}, from {src})"
        lines.append(f"    echo {shlex.quote(note)}; CURRENT={shlex.quote(e['engine'])}")
        lines.append('    "$TRTEXEC" ' + " ".join(shlex.quote(a) for a in cmd[1:]))
        lines.append(f"    record_source {shlex.quote(e['engine'])} {shlex.quote(src)}")
        lines.append(f"    BUILT+=({shlex.quote(e['engine'])})")
    return lines


def _checks(engines: list[dict[str, Any]], reference: str, typed: bool) -> list[str]:
    lines = []
    for e in engines:
        src = e["onnx_strongly_typed"] if typed else e["onnx"]
        for onnx_file in dict.fromkeys([src, reference]):
            lines.append(f"    check {shlex.quote(e['engine'])} {shlex.quote(onnx_file)}")
    return lines


def write_build_script(out_dir: str | Path, engines: list[dict[str, Any]], input_name: str,
                       chw: tuple[int, int, int], batches: tuple[int, int, int] = (1, 8, 32),
                       workspace_mib: int = 1024, reference: str | None = None,
                       check_images: int | None = None) -> Path:
    """Write ``out_dir/build_engine.sh`` building each ``{"onnx", "onnx_strongly_typed", "engine",
    "precision"}`` entry (``onnx``: TensorRT 10's source, ``onnx_strongly_typed``: 11's).

    Args:
        reference: the fp32 ONNX the engines are also compared with; None: no polygraphy check
            (the export wrote no calibration images, :func:`write_check_files`).
        check_images: how many images :func:`write_check_files` wrote (:func:`check_image_count`): polygraphy runs
            the engines at the batches its data loader makes of them (:func:`engine_check.batch_sizes`: the opt batch
            only where there are at least that many), and trtexec runs each engine after the check at the profile's
            other batches; None (not known): at every batch of the profile.

    Paths in the script are relative to the export folder (the script ``cd``s there), so the
    folder can be copied to the device as is.
    """
    out_dir = Path(out_dir)
    smoke = sorted(set(batches))  # trtexec's smoke run: one call per distinct batch of the profile, smallest first
    lines = [
        "#!/usr/bin/env bash",
        "# Build TensorRT engines for this export. Run it ON THE TARGET DEVICE: an engine only runs on",
        "# the GPU model and TensorRT version that built it (copy this folder, then ./build_engine.sh).",
        f"# Optimization profile for '{input_name}': batch min/opt/max = {batches[0]}/{batches[1]}/{batches[2]}.",
        "# int8 engines come from the tensorrt-flavour QDQ model (explicit quantization, scales inside the",
        "# ONNX; no calibration cache). TensorRT 10 (JetPack 6.1/6.2 ship 10.3) takes the precision flags --fp16 / --int8;",
        f"# TensorRT {STRONGLY_TYPED_MAJOR} removed them (and --best, --calib): it builds strongly typed networks,",
        "# fp16 from the fp16 ONNX, int8 from the QDQ ONNX (whose float layers run in fp32, TF32 allowed).",
        "# The fp32 engine gets --noTF32 (both): TensorRT otherwise lets fp32 layers run in TF32 on Ampere+ (Orin).",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        'TRTEXEC_GIVEN="${TRTEXEC:-}"',
        'TRTEXEC="${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}"',
        'POLYGRAPHY="${POLYGRAPHY:-polygraphy}"',
        'PYTHON_GIVEN="${PYTHON:-}"  # PYTHON=: else the Python of the polygraphy used (START: python_of)',
        *START.strip("\n").splitlines(),
        *(DETECT % {"min": MIN_MAJOR, "jetpack": JETPACK_NOTE}).strip("\n").splitlines(),
        f"rm -f {' '.join(shlex.quote(e['engine'] + s) for e in engines for s in ('', SOURCE_SUFFIX, *_ASIDE))}"
        "  # a failed build leaves no engine of an earlier run",
        f'if [ "$TRT_MAJOR" -ge {STRONGLY_TYPED_MAJOR} ]; then',
        '    echo "TensorRT $TRT_MAJOR: strongly typed networks (precision from each ONNX)"',
        *_block(engines, input_name, chw, batches, workspace_mib, typed=True),
        "else",
        '    echo "TensorRT $TRT_MAJOR: precision flags (--fp16; --int8 --fp16 with the QDQ model)"',
        *_block(engines, input_name, chw, batches, workspace_mib, typed=False),
        "fi",
        'CURRENT=""',
        *(SMOKE % {"batches": " ".join(map(str, smoke)), "said": ", ".join(map(str, smoke)),
                   "shapes": " ".join(shlex.quote(shape_spec(input_name, b, chw)) for b in smoke)}
          ).strip("\n").splitlines(),
    ]
    if reference is None:  # no calibration images, so no polygraphy check: each engine still runs (SKIP_CHECK=1:
        # not even that, as with calibration images)
        lines.append('if [ "${SKIP_CHECK:-0}" = 1 ]; then echo "engine run skipped (SKIP_CHECK=1)"; else smoke_all; fi')
    elif engines:
        ran = set(engine_check.batch_sizes(check_images, batches[1], batches[0])) if check_images is not None else set()
        after = " ".join(str(b) for b in smoke if b not in ran)  # polygraphy ran those batches; trtexec runs the rest
        said = (", ".join(map(str, sorted(ran))) or "none") if check_images is not None else "not known"
        lines += [*(CHECK % {"dir": CHECK_DIR, "script": CHECK_SCRIPT, "after": after, "ran": said}
                    ).rstrip("\n").splitlines(),
                  f'if [ "$TRT_MAJOR" -ge {STRONGLY_TYPED_MAJOR} ]; then',
                  *_checks(engines, reference, typed=True),
                  "else",
                  *_checks(engines, reference, typed=False),
                  "fi",
                  "check_done"]  # the summary, then one line naming every failure of the check (exit 1)
    if reference is None or not engines:
        lines.append("summary")
    path = out_dir / BUILD_SCRIPT
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o755)
    return path
