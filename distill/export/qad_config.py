"""``distill qad``'s typed config (validated once, one-line errors); the record it writes (``qad.json``) is
:class:`distill.records.QADRecord`, re-exported here."""
from __future__ import annotations

from typing import Any, Literal, Mapping

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from distill.errors import DistillError
from distill.export.config import _batch_profile, _one_line, _path_str, _split_csv, _zero_is_all, constructor_line
from distill.records import Disagreement, QADRecord
from distill.validation import Checked

__all__ = ["DEFAULT_FLAVOUR", "Disagreement", "QADConfig", "QADRecord"]

DEFAULT_FLAVOUR = "ort-cpu"  # QAD's flavour with neither ``flavour`` nor an ``export_dir`` to follow


class QADConfig(Checked):
    """Quantization-aware distillation of a trained student (see docs/qad.md).

    Attributes:
        checkpoint: the student checkpoint folder (``RUN_DIR/checkpoints/best``).
        out_dir: where ``model.int8-<flavour>.onnx``, ``checkpoint/`` (the tuned fp32 student) and
            ``qad.json`` go.
        cache: a teacher cache of the same data: its view-0 soft labels join the targets. Without one
            the frozen fp32 student is the only teacher (self-distillation).
        cache_weight: share of the loss from the cached teacher (the rest: the fp32 student); with a cache only.
        flavour: the int8 recipe to fake-quantize for (ort-cpu | tensorrt, as ``distill export``). None (the
            default, as the CLI's without ``--flavour``): ``export_dir``'s, its only int8 flavour or, with both, the
            one its recommendation ships as int8 (:mod:`distill.export.qad_flavour`, said in one line); else ort-cpu.
        reduce_range: ort-cpu: 7-bit weights, as ``distill export --reduce-range`` (None: as ``export_dir``'s file,
            else ``distill export``'s default).
        data_root, calib_domains, target_domains, calib_count, eval_count: as ``distill export`` (unset: the
            domains of ``export_dir``'s calibration when given, so both int8 files are calibrated alike; else the
            run's data, source domains and unlabeled pool domains); QAD trains on the calibration images. With
            ``export_dir`` the calibration domains, ``calib_count`` and ``seed`` are the export's, and another value
            given is refused (:mod:`distill.export.qad_calibration`: the hold-out must hold no image the export's
            int8 file was calibrated on); ``calib_count`` unset otherwise: 256, or fewer where the train split cannot hold
            256 calibration and ``holdout_count`` hold-out images (:func:`distill.export.qad_calibration.count_fitter`).
        holdout_count: hold-out images (an even share per calibration domain, fewer where fewer are left):
            train-split images that are not calibration images, on which the no-harm rule picks the int8 file
            to ship (QAD's only when its mean disagreement with fp32 there is below plain PTQ's).
        epochs: passes over the calibration images with fake-quant on.
        observer_epochs: epochs whose activation ranges still follow the data (EMA); then they are frozen
            (default: all but the last epoch).
        optimizer: sgd (momentum 0.9, the default) or adamw. AdamW takes full-size normalized steps even when
            the loss is ~0, which moved a student PTQ already quantized well away from fp32 (resnet18:
            benchmarks/RESULTS.md, "Trained edge students"); SGD's steps shrink with the gradient.
        lr: learning rate (default: 1e-4 for both; :attr:`learning_rate`). SGD's was 1e-3 until session 15: it
            diverged on mobilenetv3_large_100 (benchmarks/RESULTS.md, "QAD keeps the export's float layers").
        ranges: ``learned`` (the default since session 18): each activation range is calibrated (MinMax), then
            trained at ``range_lr`` (:mod:`distill.export.learned_ranges`, LSQ); ``observed``: ranges follow the
            data (MinMax) for ``observer_epochs``, then freeze (before session 18). Learned: 0.48 points less test
            disagreement with fp32 over 9 students (benchmarks/RESULTS.md, "Learned activation ranges").
        range_lr: the learned ranges' rate (their own optimizer group; 1e-1 diverged on mobilenetv3_large_100).
        batch_size: images per step. temperature: KL softmax temperature.
        margin_weight: weight of a hinge term added to the loss, ``relu(margin - (z[y] - max_{j != y} z[j]))``
            with ``y`` the fp32 student's top-1: the int8 student must keep fp32's class by ``margin`` logits on
            every training image, near-ties included (0: off; measured no gain, and 6 epochs diverged on a run:
            benchmarks/RESULTS.md, "What QAD moves, and where int8's error comes from").
        margin: that hinge's margin, raw logits (the int8 move's p95 is 0.2-0.9 logits on the edge students).
        device: cpu | cuda | cuda:N.
        opset: ONNX opset of the QDQ file (>= 13: per-channel QuantizeLinear).
        seed: image picks and shuffling (unset: ``export_dir``'s, else 0).
        export_dir: a ``distill export`` folder of the same checkpoint: its int8 file of ``flavour`` (PTQ with
            the export's calibration and float fallback) is the arm QAD must beat, and the one that ships when QAD
            does not; None: plain PTQ computed here (MinMax, no fallback). QAD's fake-quant student keeps the
            layers that file keeps in float (its float fallback) in float too, so it starts from that file.
        trt_batches: ``flavour="tensorrt"``: (min, opt, max) batch of ``build_engine.sh``'s TensorRT optimization
            profile (None: ``export_dir``'s, as its engines are built, else ``distill export``'s default 1, 8, 32).
        trt_workspace_mib: ``flavour="tensorrt"``: ``build_engine.sh``'s TensorRT builder workspace in MiB (None:
            ``export_dir``'s, as :class:`~distill.export.config.ExportConfig`'s, else its default 1024).
        quantize_all: with ``export_dir`` (refused without it: QAD then quantizes every layer already): quantize
            every layer, also those the export's float fallback keeps in float (QAD instead of the fallback).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint: str
    out_dir: str
    cache: str | None = None
    cache_weight: float = Field(0.5, ge=0.0, le=1.0)
    flavour: Literal["ort-cpu", "tensorrt"] | None = None
    reduce_range: bool | None = None
    data_root: str | None = None
    calib_domains: tuple[str, ...] | None = None
    target_domains: tuple[str, ...] | None = None
    calib_count: int | None = Field(None, ge=1)
    eval_count: int | None = Field(200, ge=1)
    holdout_count: int = Field(256, ge=1)
    epochs: int = Field(3, ge=1, le=1000)
    observer_epochs: int | None = Field(None, ge=0)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float | None = Field(None, gt=0.0, lt=1.0)
    ranges: Literal["learned", "observed"] = "learned"
    range_lr: float = Field(1e-2, gt=0.0, lt=1.0)
    batch_size: int = Field(32, ge=1)
    temperature: float = Field(2.0, gt=0.0)
    margin_weight: float = Field(0.0, ge=0.0)
    margin: float = Field(0.5, ge=0.0)
    device: str = "cpu"
    opset: int = Field(18, ge=13)
    seed: int | None = None
    export_dir: str | None = None
    quantize_all: bool = False
    trt_batches: tuple[int, int, int] | None = None
    trt_workspace_mib: int | None = Field(None, ge=1)

    _csv = field_validator("calib_domains", "target_domains", mode="before")(_split_csv)
    _paths = field_validator("checkpoint", "out_dir", "cache", "data_root", "export_dir", mode="before")(_path_str)
    _all = field_validator("eval_count", mode="before")(_zero_is_all)
    _trt = field_validator("trt_batches", mode="before")(_batch_profile)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        head, _, index = value.partition(":")
        if head not in ("cpu", "cuda") or (index and not index.isdigit()) or (head == "cpu" and index):
            raise ValueError("must be cpu, cuda or cuda:N")
        return value

    @model_validator(mode="after")
    def _observer_epochs_fit(self) -> QADConfig:
        if self.observer_epochs is not None and self.observer_epochs > self.epochs:
            raise ValueError(f"observer_epochs ({self.observer_epochs}) must be <= epochs ({self.epochs})")
        if self.ranges == "learned" and self.observer_epochs:
            raise ValueError(f"observer_epochs ({self.observer_epochs}) applies to observed ranges: pass "
                             "ranges=observed (--ranges observed), or leave it unset to learn them")
        if self.quantize_all and not self.export_dir:
            raise ValueError("quantize_all applies with export_dir only (the layers its float fallback keeps): "
                             "without it QAD quantizes every layer already")
        return self

    @property
    def learning_rate(self) -> float:
        """``lr``, or the default: 1e-4 (sgd and adamw)."""
        return self.lr if self.lr is not None else 1e-4

    @property
    def int8_flavour(self) -> str:
        """``flavour``, or :data:`DEFAULT_FLAVOUR` (``qad`` resolves an unset one from ``export_dir`` first)."""
        return self.flavour or DEFAULT_FLAVOUR

    @property
    def random_seed(self) -> int:
        """``seed``, or 0 (``qad`` resolves an unset one to ``export_dir``'s first)."""
        return self.seed if self.seed is not None else 0

    @property
    def range_epochs(self) -> int:
        """Epochs whose activation ranges follow the data (none when they are learned)."""
        if self.ranges == "learned":
            return 0
        return self.observer_epochs if self.observer_epochs is not None else max(0, self.epochs - 1)

    @classmethod
    def from_options(cls, options: Mapping[str, Any], names: Mapping[str, str] | None = None) -> QADConfig:
        """Validate ``options``; a bad one is a :class:`DistillError` line naming it (its flag) and its value."""
        try:
            return cls.model_validate(dict(options))
        except ValidationError as e:
            line = _one_line(e, names or {}, list(cls.model_fields))
            raise DistillError(line.replace("export config:", "qad config:")) from None

    @classmethod
    def error_line(cls, e: ValidationError) -> str:
        """``QADConfig(epochs=0)``'s line: :meth:`from_options`' naming the class (``QADConfig: 'epochs': ...``)."""
        return constructor_line(cls.__name__, e, list(cls.model_fields))
