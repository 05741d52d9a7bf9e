"""The record ``distill qad`` writes (``qad.json``): PTQ vs QAD int8 against fp32, per domain.

It lives here, not beside :class:`~distill.export.qad_config.QADConfig`, because the report reads it
too, and importing :mod:`distill.export` would load torch and onnxruntime into ``distill report``.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationError, field_validator

from distill.records.base import Accuracy, RelativeRecord, _Closed, _Open
from distill.records.names import QAD_REPORT


class Disagreement(_Closed):
    """Top-1 disagreement with the original fp32 student's ONNX, in points per domain."""

    calibration: dict[str, float]  # the train-split images QAD calibrated and trained on
    test: dict[str, float]         # held-out test-split images (never trained on)
    # other train-split images of the calibration domains (neither calibration nor test): what the no-harm rule
    # decides on; absent ({}) in qad.json files written before the rule
    holdout: dict[str, float] = Field(default_factory=dict)

    @property
    def worst_calibration(self) -> float:
        return max(self.calibration.values(), default=0.0)

    @property
    def mean_holdout(self) -> float | None:
        """Mean over domains (each domain counts once) of the hold-out disagreement; None when not measured."""
        return sum(self.holdout.values()) / len(self.holdout) if self.holdout else None


class HoldoutPairs(_Closed):
    """The hold-out images where exactly one int8 file's top-1 differs from fp32's, and McNemar's exact p-value of
    "the two files flip as often" on them: whether the no-harm rule's pick is more than chance."""

    only_ptq: int  # images the PTQ arm flips and QAD's file does not
    only_qad: int  # images QAD's file flips and the PTQ arm does not
    p: float

    @property
    def significant(self) -> bool:
        return self.p < 0.05


class QADAccuracy(_Closed):
    """Top-1 accuracy (fractions) per domain on the held-out test images, each model scored on the same images."""

    fp32: Accuracy  # the original fp32 student's ONNX
    ptq: Accuracy   # the PTQ arm (QADRecord.ptq_origin): plain PTQ, or the export's int8 file with --export
    qad: Accuracy   # the QAD int8 file
    count: dict[str, int]  # test images per domain


class QADEngine(_Open):
    """An engine a qad folder's ``build_engine.sh`` builds on the device (as export.json's ``tensorrt.engines``)."""

    engine: str  # the engine's file name in the qad folder (names.QAD_ENGINE)
    onnx: str    # the int8 file it is built from: the one the no-harm rule picked
    precision: str = "int8"


class QADTensorRT(_Open):
    """A tensorrt-flavour qad folder's engine: the script that builds it and how. Recorded in ``config["tensorrt"]``
    (an open dict: the release before reads the file); qad.json files written before it have none."""

    build_script: str
    engines: list[QADEngine]
    batches: list[int] | None = None  # the optimization profile's min, opt, max batch
    workspace_mib: int | None = None  # the builder's workspace


class QADSettings(_Open):
    """The keys of ``qad.json``'s ``config`` (a :class:`~distill.export.qad_config.QADConfig` dump) the report
    names; the other keys are kept as they are."""

    seed: int = 0
    epochs: int | None = None
    ranges: str = "observed"  # learned (LSQ) or observed activation ranges; records before session 18 have no key
    tensorrt: QADTensorRT | None = None  # this record's own key (not a QADConfig field): the engine, if any


class QADRecord(RelativeRecord):
    """``qad.json``: what QAD did and how far its int8 model is from fp32, next to plain PTQ's."""

    FILE: ClassVar[str] = QAD_REPORT
    checkpoint: str  # an absolute path (older files: as typed, relative to the cwd qad ran in)
    # the sha256 of its weights (export.json's provenance.checkpoint_sha256); None in files written before it
    checkpoint_sha256: str | None = None
    student: str
    flavour: str
    library: str
    teacher: Literal["fp32", "fp32+cache"]
    config: dict[str, Any]
    calibration_images: int
    test_images: int
    ptq: Disagreement
    qad: Disagreement
    qad_file: str
    tuned_checkpoint: str
    qdq_check: dict[str, Any]
    torch_vs_onnx: dict[str, Any]  # the fake-quant model vs the exported file on the calibration images
    losses: list[float] = Field(default_factory=list)  # mean loss per epoch
    # percent of the int8 weight values QAD's training changed (None: written before it was recorded)
    weights_changed_pct: float | None = None
    elapsed_s: float
    target_pts: float = 1.0
    within_target: bool
    accuracy: QADAccuracy | None = None  # absent in qad.json files written before it existed
    # the no-harm rule (docs/qad.md): which int8 file to ship, and why. Files written before the rule have
    # neither (ship None: no decision recorded; their int8 file is the QAD one)
    holdout_images: int = 0
    ship: Literal["qad", "ptq"] | None = None
    ship_reason: str = ""
    ptq_file: str | None = None  # the PTQ arm's int8 file in the same folder, written when PTQ ships
    holdout_pairs: HoldoutPairs | None = None  # absent in files written before it
    # what the "PTQ" arm is: plain PTQ made by distill qad, or a distill export folder's int8 file (--export)
    ptq_origin: str = "plain PTQ (MinMax, no float fallback)"
    # student layers QAD's fake-quant model left in float: the ones the --export file keeps in float
    kept_float: list[str] = Field(default_factory=list)
    float_outputs: list[str] = Field(default_factory=list)  # those of them whose output (and activation) stays float
    # ``checkpoint`` and ``config.export_dir`` relative to the qad folder, so that a tree of results copied or moved
    # whole still finds them (distill/report/locate.py): written in ``config["relative"]`` (an open dict, so that an
    # older distill reads the file); the top-level ``relative`` (RelativeRecord) only in files of the release before. Files
    # before either have neither, and their ``config.export_dir`` is as typed (relative to the folder qad ran in)

    @property
    def qad_config(self) -> dict[str, Any]:
        """``config`` as :class:`~distill.export.qad_config.QADConfig` takes it: without ``relative`` and ``tensorrt``
        (this record's own keys in that open dict)."""
        return {k: v for k, v in self.config.items() if k not in ("relative", "tensorrt")}

    @property
    def tensorrt(self) -> QADTensorRT | None:
        """The engine ``build_engine.sh`` builds here (``--flavour tensorrt``); None for other flavours and older
        files."""
        return self.settings.tensorrt

    @property
    def relative_paths(self) -> dict[str, str]:
        """``checkpoint`` and ``export_dir`` relative to the qad folder, from either layout; {} in older files."""
        inside = (self.config or {}).get("relative")
        return self.relative or (dict(inside) if isinstance(inside, dict) else {})

    @property
    def ship_file(self) -> str:
        """The int8 file the rule picked (the QAD file when no decision is recorded)."""
        return self.ptq_file if self.ship == "ptq" and self.ptq_file else self.qad_file

    @property
    def ship_arm(self) -> Literal["QAD", "PTQ"]:
        """Whose int8 :attr:`ship_file` is: ``"PTQ"`` when the rule picked plain PTQ's file, else ``"QAD"``."""
        return "PTQ" if self.ship_file != self.qad_file else "QAD"

    @property
    def ship_accuracy(self) -> Accuracy | None:
        """Test accuracy per domain (fractions) of :attr:`ship_file` (``accuracy.ptq`` or ``accuracy.qad``);
        None in qad.json files written before accuracies were recorded."""
        if self.accuracy is None:
            return None
        return self.accuracy.ptq if self.ship_arm == "PTQ" else self.accuracy.qad

    @field_validator("config")
    @classmethod
    def _typed_settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            QADSettings.model_validate(value)
        except ValidationError as e:
            err = e.errors()[0]
            raise ValueError(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None
        return value

    @property
    def settings(self) -> QADSettings:
        """The typed view of ``config`` (seed, epochs)."""
        return QADSettings.model_validate(self.config)
