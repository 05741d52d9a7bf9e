"""What ``distill export`` writes and how it checks it: one pydantic model, validated once.

The CLI maps its flags onto :class:`ExportConfig` keys and calls :meth:`ExportConfig.from_options`
with the flag names, so a bad value is one line naming the flag and the value
(``--calib-method: must be one of minmax, entropy, percentile (got 'kl')``); Python callers get
the key instead (``calib_method: ...``). Below this, only the validated object flows.
"""
from __future__ import annotations

import os
import re
from typing import Any, Literal, Mapping, Sequence

from pydantic import ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from distill.data.split import SplitKeys
from distill.errors import DistillError
from distill.export.quantize import CALIBRATION_METHODS, INT8_FLAVOUR_CHOICES
from distill.records import RUN_CONFIG
from distill.spelling import option
from distill.validation import close_key, first_error

PRECISIONS = ("fp32", "fp16", "int8")


def _split_csv(value: Any) -> Any:
    """``"a,b"``, ``["a", "b"]`` and ``["a,b"]`` all give ``("a", "b")`` (``--x a b`` and ``--x a,b``)."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        return value  # let the type check name it
    return tuple(v.strip() for item in items for v in str(item).split(",") if v.strip())


def _zero_is_all(value: Any) -> Any:
    """``eval_count`` 0 means every test image, as ``--eval-count 0`` does: the same as None."""
    return None if value == 0 and not isinstance(value, bool) else value


def _batch_profile(value: Any) -> Any:
    """A TensorRT (min, opt, max) batch profile from ``"1,8,32"`` or a sequence; checked min <= opt <= max."""
    if isinstance(value, str):
        try:
            value = tuple(int(v) for v in value.split(","))
        except ValueError:
            raise ValueError("must be MIN,OPT,MAX integers") from None
    if isinstance(value, (list, tuple)):
        if len(value) != 3:
            raise ValueError("must be MIN,OPT,MAX integers")
        if not all(isinstance(v, int) for v in value) or not 1 <= value[0] <= value[1] <= value[2]:
            raise ValueError("TensorRT batches must be min <= opt <= max (>= 1)")
    return value


def _path_str(value: Any) -> Any:
    """Paths are kept as strings (export.json's ``config`` shows them as given)."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


class ExportConfig(SplitKeys):
    """What to export and how to check it.

    Attributes:
        precisions: any of fp32, fp16, int8 (fp32 is always written: it is the parent of the others).
        data_root: ``ROOT/DOMAIN/CLASS/image`` data for parity, accuracy and calibration.
        eval_domains: domains whose test split is evaluated (default: all under ROOT).
        calib_domains: labeled domains whose train split calibrates int8 (default: the run's
            source domains when known, else all).
        target_domains: domains where the model will run; their train images are added to the
            calibration set, unlabeled. None (unset): inside a training run, the run's unlabeled pool domains
            (``data.unlabeled``: it trained on their images and is meant for them; benchmarks/RESULTS.md,
            "Calibrating on the target domains too") that the data root holds (a root given with ``--data``, even
            the run's own, too: the pool domains it lacks are dropped with a warning), else none; ``()``: none.
        calib_method: minmax | entropy | percentile.
        calib_count: calibration images in total, spread evenly over the calibration domains.
        eval_count: at most this many test images per domain (None or 0: all).
        int8_flavour: ort-cpu | tensorrt | both.
        max_drop: largest accepted int8 top-1 disagreement with the fp32 ONNX on any domain's
            calibration images, in points (label-free; bounds the accuracy drop). Test accuracy is
            reported, never used to decide. (Negative values force the fallback; tests use that.)
        max_fallback_layers: at most this many layers kept in float by the fallback.
        fallback_outputs: the fallback also ranks each layer that feeds hardswish / SiLU with its output kept
            float (the activation in float too; :mod:`distill.export.float_outputs`). Off by default: on 9 trained
            students it changed nothing beyond chance overall (benchmarks/RESULTS.md, "Float outputs").
        sensitivity_count: calibration images used to rank layer sensitivity.
        fp32_rtol: fp32 parity tolerance, relative to max(1, max |logit|).
        latency_batch, latency_iters, threads: the export-time int8 vs fp32 latency check (1 thread by default:
            at onnxruntime's own count a busy 2-core machine moved the ratio of the same two files 0.42-1.14 between
            reruns, at 1 thread 1.15-1.59 over 20 runs and 1.21-1.37 over 100, every rerun agreeing;
            benchmarks/RESULTS.md, "When is int8 faster").
        trt_batches: (min, opt, max) batch of the TensorRT optimization profile (``"1,8,32"`` too).
        build_engines: build TensorRT engines here when ``import tensorrt`` works.
        reduce_range: 7-bit weights in the ort-cpu flavour (the default): every x86 CPU computes the file alike.
            8-bit weights (False) are exact only on CPUs with VNNI and on ARM: x86 CPUs without VNNI (AVX2) add u8 x s8
            products in saturating int16 pairs and run another model (9 trained students on an emulated Haswell:
            +4.9 points of disagreement with fp32; 7-bit: the same predictions on both kinds, 0.9 points more than
            8-bit on a VNNI CPU; benchmarks/RESULTS.md, "int8 on x86 CPUs without VNNI").
        test_fraction, split_seed, val_fraction, pretrain_fraction, class_map: the split rule's keys
            (:class:`~distill.data.split.SplitKeys`; must match training's; unset: the run's config, else
            :class:`~distill.data.split.SplitRule`'s defaults).
        classes: a class file (one name per line, or a YAML list): re-target a text-head student to
            these names with the teacher's text tower before exporting (:mod:`distill.export.retarget`).
        teacher_arch, teacher_pretrained: that text tower (default: the student's provenance).
        caches: teacher caches whose ``skipped`` lists name undecodable images to leave out
            (default: the run's); other undecodable images are skipped as they are met. All
            are listed once, in one warning and in export.json's ``data.skipped``.

    When the checkpoint sits in a training run (``RUN_DIR/checkpoints/best`` next to the run's
    config), ``data_root``, the split, the class map and the calibration domains default to the
    run's (:func:`distill.export.training_run.with_run_defaults`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    precisions: tuple[str, ...] = ("fp32",)
    data_root: str | None = None
    eval_domains: tuple[str, ...] | None = None
    calib_domains: tuple[str, ...] | None = None
    target_domains: tuple[str, ...] | None = None
    calib_method: str = "minmax"
    calib_count: int = Field(256, ge=1)
    eval_count: int | None = Field(500, ge=1)
    int8_flavour: str = "ort-cpu"
    max_drop: float = 1.0
    max_fallback_layers: int = Field(10, ge=0)
    fallback_outputs: bool = False
    sensitivity_count: int = Field(128, ge=1)
    opset: int = Field(18, ge=17)
    exporter: Literal["dynamo", "torchscript"] = "dynamo"
    with_embedding: bool = False
    fp32_rtol: float = Field(1e-3, gt=0)
    latency_batch: int = Field(1, ge=1)
    latency_iters: int = Field(100, ge=1)
    threads: int | None = Field(1, ge=1)  # None: onnxruntime's own count (API only; a shared machine's noise)
    trt_batches: tuple[int, int, int] = (1, 8, 32)
    trt_workspace_mib: int = Field(1024, ge=1)
    build_engines: bool = True
    reduce_range: bool = True
    caches: tuple[str, ...] | None = None
    seed: int = 0
    classes: str | None = None
    teacher_arch: str | None = None
    teacher_pretrained: str | None = None

    _csv = field_validator("precisions", "eval_domains", "calib_domains", "target_domains",
                           mode="before")(_split_csv)
    _paths = field_validator("data_root", "classes", "teacher_pretrained", mode="before")(_path_str)
    _all = field_validator("eval_count", mode="before")(_zero_is_all)

    @field_validator("caches", mode="before")
    @classmethod
    def _cache_paths(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, (str, os.PathLike)):
            return (os.fspath(value),)
        return tuple(_path_str(v) for v in value) if isinstance(value, (list, tuple)) else value

    @field_validator("precisions")
    @classmethod
    def _known_precisions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        value = tuple(dict.fromkeys(p.lower() for p in value))
        bad = [p for p in value if p not in PRECISIONS]
        if bad or not value:
            raise ValueError(f"unknown precision(s) {', '.join(bad) or '(none)'}; choose from {', '.join(PRECISIONS)}")
        return value

    @field_validator("calib_method", "int8_flavour")
    @classmethod
    def _one_of_the_choices(cls, value: str, info: ValidationInfo) -> str:
        choices = {"calib_method": CALIBRATION_METHODS, "int8_flavour": INT8_FLAVOUR_CHOICES}[str(info.field_name)]
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    _batch_profile = field_validator("trt_batches", mode="before")(_batch_profile)

    @classmethod
    def from_options(cls, options: Mapping[str, Any], names: Mapping[str, str] | None = None) -> ExportConfig:
        """Validate ``options``; a bad one is a :class:`DistillError` line naming it and its value.

        Args:
            options: ExportConfig keys -> values as the user gave them (``"fp32,int8"``, ``"1,8,32"``).
            names: key -> how the user spelled it (the CLI's flags); default: the key.
        """
        try:
            return cls.model_validate(dict(options))
        except ValidationError as e:
            raise DistillError(_one_line(e, names or {}, list(cls.model_fields))) from None

    @classmethod
    def error_line(cls, e: ValidationError) -> str:
        """``ExportConfig(precisions="fp8")``'s line: :meth:`from_options`' naming the class, as the other typed
        configs do (``ExportConfig: 'precisions': ...``)."""
        return constructor_line(cls.__name__, e, list(cls.model_fields))

    def with_updates(self, **updates: Any) -> ExportConfig:
        """A validated copy with ``updates`` applied (``model_copy`` would not validate them)."""
        return type(self).from_options({**self.model_dump(), **updates}) if updates else self

    def check_data(self, who: str | None = None) -> None:
        """int8 needs images to calibrate on (checked once the run's defaults are in). ``who``: the subject of the
        refusal when the caller, not the user, asked for int8 (qad: "QAD"); else the ``precisions`` option."""
        if "int8" in self.precisions and not self.data_root:
            raise DistillError(f"{who or option('precisions', 'int8')} needs calibration images: pass "
                               f"{option('data_root', 'ROOT')} (or use a checkpoint "
                               f"inside its training run, whose {RUN_CONFIG} names the data)")


def _one_line(e: ValidationError, names: Mapping[str, str], keys: Sequence[str] = ()) -> str:
    """The first problem (an unknown key first: :func:`~distill.validation.first_error`) as ``<key or flag>: <problem>
    (got <value>)``, an unknown key with the closest of ``keys``; a problem of several keys (a model validator's:
    no key of its own, its input the whole config) as its message alone, each ``key (value)`` and each key with an
    underscore in it written as the user spelled it (``--observer-epochs 5 must be <= --epochs 2``)."""
    err = first_error(e)
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    name = names.get(str(err["loc"][0]), key) if err["loc"] else key
    if err["type"] == "extra_forbidden":
        return f"export config: unknown key '{key}'{close_key(key, keys)}"
    message = err["msg"].removeprefix("Value error, ")
    if not err["loc"]:
        return _as_flags(message, names)
    value = err.get("input")
    shown = ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else value
    return f"{name}: {message} (got {shown!r})"


def constructor_line(owner: str, e: ValidationError, keys: Sequence[str] = ()) -> str:
    """:func:`_one_line` of a constructor's bad keyword, named as :class:`~distill.validation.Checked` names it:
    ``OWNER: 'key': problem (got value)``, ``OWNER: unknown keyword argument 'key' (did you mean ...)`` (the closest
    of ``keys``), ``OWNER: <a check of several keys>``."""
    err, line = first_error(e), _one_line(e, {})
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"{owner}: unknown keyword argument '{key}'{close_key(key, keys)}"
    return f"{owner}: '{key}': {line.removeprefix(f'{key}: ')}" if err["loc"] else f"{owner}: {line}"


def _as_flags(message: str, names: Mapping[str, str]) -> str:
    """``message`` with ``key (value)`` as ``flag value`` (``flag`` alone for True) and each bare ``key`` that holds an
    underscore as ``flag``, for the keys ``names`` spells (other words are left alone: ``epochs`` is English too)."""
    def spelled(m: re.Match[str]) -> str:
        key, value = m.group(1), m.group(2)
        if key not in names or (value is None and "_" not in key):
            return m.group(0)
        return names[key] if value in (None, "True") else f"{names[key]} {value}"
    return re.sub(r"\b([a-z][a-z0-9_]*)(?: \(([^()]*)\))?", spelled, message) if names else message
