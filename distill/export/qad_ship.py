"""QAD's "no harm" rule: which int8 file ``distill qad`` ships, QAD's or plain PTQ's (issue 21, docs/qad.md).

QAD's int8 ships only when, on hold-out images (train-split images of the calibration domains that are neither
the calibration images QAD trained on nor the test images accuracy is reported on), its top-1 disagreement with
the fp32 student, averaged over domains (each domain counts once), is strictly lower than plain PTQ's.
Otherwise (a tie included: QAD then costs training and changes nothing measurable) PTQ's int8 ships.
Deciding on the test images would be selection on test; on the calibration images, on what QAD was fit to.

The reason also says whether the pick is more than chance: McNemar's exact test on the hold-out images where
exactly one file flips (:func:`holdout_pairs`). On near-tie students it mostly is not (RESULTS.md, "How big must
QAD's hold-out be"), and the two files are then equally good choices.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Literal

import numpy as np

from distill.export.images import ImageSet
from distill.export.onnx import INPUT_NAME
from distill.export.tensorrt_script import check_image_count, write_build_script, write_check_files
from distill.records import QAD_ENGINE, Disagreement, HoldoutPairs, QADEngine, QADTensorRT
from distill.report.stats import mcnemar

Ship = Literal["qad", "ptq"]
TIE_PTS = 1e-9  # means closer than this are a tie (the same flips, summed in another order)


def ptq_file(flavour: str) -> str:
    """Plain PTQ's int8 file in a ``distill qad`` folder, written when the rule ships it."""
    return f"model.int8-{flavour}.ptq.onnx"


def holdout_pairs(ptq_flips: np.ndarray, qad_flips: np.ndarray) -> HoldoutPairs:
    """From [N] bool "top-1 differs from fp32" per hold-out image of each file (same images, same order)."""
    ptq, qad = np.asarray(ptq_flips, bool), np.asarray(qad_flips, bool)
    test = mcnemar((~qad).tolist(), (~ptq).tolist())  # "correct": agrees with fp32
    return HoldoutPairs(only_ptq=int((ptq & ~qad).sum()), only_qad=int((qad & ~ptq).sum()), p=test.p)


def no_harm(ptq: Disagreement, qad: Disagreement, images: int,
            pairs: HoldoutPairs | None = None) -> tuple[Ship, str]:
    """``("qad" | "ptq", reason)``: QAD when its mean hold-out disagreement with fp32 is below PTQ's.

    Args:
        ptq, qad: each int8 model's disagreement with fp32 (points per domain; ``holdout`` must be set).
        images: hold-out images behind the figures (for the reason only).
        pairs: the images only one file flips, and whether that is more than chance (for the reason only).
    """
    p, q = ptq.mean_holdout, qad.mean_holdout
    if p is None or q is None:
        raise ValueError("no hold-out disagreement to decide on")
    where = f"mean top-1 disagreement with fp32 on {images} hold-out images ({len(qad.holdout)} domains)"
    chance = "" if pairs is None else (
        f"; only PTQ flips {pairs.only_ptq} image(s), only QAD {pairs.only_qad}: McNemar p = {pairs.p:.2g}, "
        + ("more than chance" if pairs.significant else "within chance, the two files are as good"))
    if q < p - TIE_PTS:
        return "qad", f"{where}: QAD {q:.2f} < PTQ {p:.2f} pts{chance}"
    return "ptq", f"{where}: QAD {q:.2f} >= PTQ {p:.2f} pts, so QAD did not help{chance}"


def engine_script(out: Path, flavour: str, ship_file: str, input_size: tuple[int, int], calib: ImageSet,
                  batches: tuple[int, int, int], workspace_mib: int, say: Callable[[str], None]) -> QADTensorRT | None:
    """A tensorrt-flavour QAD folder's ``build_engine.sh``: ``model.int8-qad.engine`` (:data:`QAD_ENGINE`: not the
    export's ``model.int8.engine``, as a qad folder often sits inside its export) from ``ship_file`` (the int8 file
    the rule picked), built on the device as an export's script builds its own (TensorRT 10 or 11; the profile
    ``batches`` and builder workspace ``workspace_mib`` as the export's), then checked against ONNX Runtime on that
    file over QAD's calibration images (``tensorrt_check.py`` + its images). Returns what qad.json records of it
    (``config["tensorrt"]``: the report joins a bench record of the engine to ``ship_file``'s accuracy); None
    (nothing written) for other flavours."""
    if flavour != "tensorrt":
        return None
    engines = [{"onnx": ship_file, "onnx_strongly_typed": ship_file, "engine": QAD_ENGINE, "precision": "int8"}]
    write_check_files(out, calib, INPUT_NAME, batches)
    script = write_build_script(out, engines, INPUT_NAME, (3, *input_size), batches, workspace_mib,
                                reference=ship_file, check_images=check_image_count(len(calib)))
    say(f"wrote {script}: builds {QAD_ENGINE} from {ship_file} (the int8 file the rule picked; profile batches "
        f"{'/'.join(map(str, batches))}, workspace {workspace_mib} MiB) — run it on the target device")
    return QADTensorRT(build_script=script.name, engines=[QADEngine.model_validate(e) for e in engines],
                       batches=list(batches), workspace_mib=workspace_mib)
