"""TensorRT engines from the exported ONNX: build here when ``import tensorrt`` works, else a script.

An engine is specific to the GPU and the TensorRT version that built it, so the portable
artifact is the ONNX files plus ``build_engine.sh`` (:mod:`distill.export.tensorrt_script`), run
on the target device (a Jetson has ``trtexec`` at ``/usr/src/tensorrt/bin/trtexec``).

Two TensorRT generations are supported, and the builder picks by the major version:

- **TensorRT 10** (JetPack 6.1 and 6.2 ship 10.3): weakly typed networks with precision flags, as
  before. fp16 engines come from the fp32 ONNX with ``FP16``; int8 engines from the
  ``tensorrt``-flavour QDQ ONNX (explicit quantization: the scales are in the graph, no
  calibrator) with ``INT8`` + ``FP16``, so layers left in float run in fp16.
- **TensorRT 11** removed ``BuilderFlag.INT8/FP16`` and trtexec's ``--int8/--fp16/--best/--calib``:
  every network is strongly typed, each tensor keeps the type the ONNX gives it. int8 comes only
  from the Q/DQ nodes of the QDQ ONNX (its float layers stay fp32, TF32 allowed), fp16 only from the fp16 ONNX.
  No precision flag is set, and no ``STRONGLY_TYPED`` creation flag nor trtexec ``--stronglyTyped``:
  11.0 deprecated both as no-ops (``NvInfer.h``: "Strongly typed mode is always enabled. This flag is
  retained for API compatibility but is ignored"; trtexec's help: "[Deprecated] ... This flag is a no-op").

Older TensorRT (8.x: JetPack 6.0 ships 8.6, JetPack 5.1.x 8.5, 5.0.x 8.4) is refused with one line.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import onnx

from distill.errors import DistillError
from distill.utils.io import sha256_file

TIMING_CACHE = "timing.cache"  # TensorRT's kernel timing cache, next to the engines
MIN_MAJOR = 10                 # oldest TensorRT supported (JetPack 6.1 and 6.2: 10.3)
JETPACK_NOTE = "on a Jetson: JetPack 6.1 and 6.2 ship 10.3; JetPack 6.0 ships 8.6"
STRONGLY_TYPED_MAJOR = 11      # from here on: no precision flags, types come from the ONNX
PRECISIONS = ("fp32", "fp16", "int8")
SOURCE_SUFFIX = ".source.json"  # ENGINE.source.json: the ONNX an engine was built from (the edge runner reads it)


def tensorrt_available() -> bool:
    try:
        import tensorrt  # noqa: F401  # lazy: optional dependency, present on TensorRT hosts only
    except ImportError:
        return False
    return True


def tensorrt_version() -> str:
    """The importable TensorRT's version (call after :func:`tensorrt_available`)."""
    import tensorrt as trt  # lazy: optional dependency, present on TensorRT hosts only

    return str(trt.__version__)


def tensorrt_major(version: str) -> int:
    """``"10.3.0.30"`` -> 10; a version that does not parse, or one older than TensorRT 10, raises."""
    m = re.match(r"\s*(\d+)\.", str(version))
    if m is None:
        raise DistillError(f"TensorRT version '{version}' does not parse: expected MAJOR.MINOR... (10.x or 11.x)")
    major = int(m.group(1))
    if major < MIN_MAJOR:
        raise DistillError(f"TensorRT {version} is too old: engines need TensorRT {MIN_MAJOR} or newer "
                           f"({JETPACK_NOTE}); upgrade, or run build_engine.sh on a newer device")
    return major


def strongly_typed(major: int) -> bool:
    """Whether TensorRT ``major`` builds only strongly typed networks (no precision flags)."""
    return major >= STRONGLY_TYPED_MAJOR


def engine_source(entry: dict[str, Any], major: int) -> str:
    """The ONNX file an engine ``{"onnx", "onnx_strongly_typed", ...}`` is built from on TensorRT ``major``."""
    return str(entry["onnx_strongly_typed"] if strongly_typed(major) else entry["onnx"])


def shape_spec(input_name: str, batch: int, chw: tuple[int, int, int]) -> str:
    """trtexec's shape spec (``--minShapes``, ``--shapes``): ``input:8x3x224x224``."""
    return f"{input_name}:{batch}x{'x'.join(str(d) for d in chw)}"


def trtexec_command(onnx_path: str | Path, engine_path: str | Path, precision: str, input_name: str,
                    chw: tuple[int, int, int], batches: tuple[int, int, int] = (1, 8, 32),
                    timing_cache: str = TIMING_CACHE, workspace_mib: int = 1024,
                    trtexec: str = "${TRTEXEC}", typed: bool = False) -> list[str]:
    """The ``trtexec`` argv building one engine (``--skipInference``: only the build, without trtexec's
    default inference timing run after it).

    Args:
        precision: ``fp32`` | ``fp16`` | ``int8`` (int8 expects a QDQ model). fp32 gets ``--noTF32``
            (10 and 11): TensorRT lets fp32 layers use TF32 by default on Ampere and newer (Orin).
        batches: (min, opt, max) batch of the optimization profile.
        workspace_mib: builder workspace memory pool limit in MiB.
        typed: TensorRT >= 11: no precision flag (and no ``--stronglyTyped``, a deprecated no-op
            there: every network is strongly typed), so ``onnx_path`` must carry the precision (the
            fp16 ONNX for fp16, the QDQ ONNX for int8). Otherwise TensorRT 10's ``--fp16`` /
            ``--int8 --fp16``.
    """
    lo, opt, hi = batches
    if not lo <= opt <= hi:
        raise DistillError(f"TensorRT batch profile must be min <= opt <= max, got {batches}")
    if precision not in PRECISIONS:
        raise DistillError(f"TensorRT precision must be fp32, fp16 or int8; got '{precision}'")
    cmd = [trtexec, f"--onnx={onnx_path}", f"--saveEngine={engine_path}",
           f"--minShapes={shape_spec(input_name, lo, chw)}", f"--optShapes={shape_spec(input_name, opt, chw)}",
           f"--maxShapes={shape_spec(input_name, hi, chw)}", f"--timingCacheFile={timing_cache}",
           f"--memPoolSize=workspace:{workspace_mib}",
           "--skipInference"]  # build only: no timing run after the build. The engine first runs in the script's
    # polygraphy check; without one (no polygraphy, an export without calibration images) in one trtexec
    # --loadEngine run (build_engine.sh's smoke); with SKIP_CHECK=1 nothing runs it before the edge runner times it
    if precision == "fp32":  # TF32 is on by default (Ampere and newer, Orin): fp32 means fp32
        cmd.append("--noTF32")
    elif not typed and precision == "fp16":  # 11: no flag, the types come from the ONNX
        cmd.append("--fp16")
    elif not typed and precision == "int8":
        cmd += ["--int8", "--fp16"]
    return cmd


def check_engine_source(onnx_path: str | Path, precision: str, typed: bool) -> None:
    """Refuse an ONNX that cannot give ``precision``: int8 needs Q/DQ nodes (no calibrator is used);
    a strongly typed fp16 engine needs float16 tensors in the graph."""
    if precision == "int8" or (typed and precision == "fp16"):
        model = onnx.load(str(onnx_path), load_external_data=False)
        if precision == "int8" and not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
            raise DistillError(f"{onnx_path}: an int8 engine needs a QDQ model (export with --int8-flavour "
                               "tensorrt); this one has no QuantizeLinear/DequantizeLinear node")
        if precision == "fp16" and not any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
            raise DistillError(f"{onnx_path}: TensorRT >= {STRONGLY_TYPED_MAJOR} builds fp16 only from an fp16 "
                               "ONNX (model.fp16.onnx); this one has no float16 weights")


def build_engine(onnx_path: str | Path, engine_path: str | Path, precision: str, input_name: str,
                 chw: tuple[int, int, int], batches: tuple[int, int, int] = (1, 8, 32),
                 timing_cache: str | Path = TIMING_CACHE, workspace_mib: int = 1024) -> Path:
    """Build a serialized engine with the TensorRT Python API (TensorRT 10.x or 11.x).

    Builder -> network from ``OnnxParser`` (always strongly typed on 11) -> config (TensorRT 10: the
    FP16/INT8 flags; 11: none; fp32: TF32 cleared), workspace, an optimization profile for the dynamic batch, a
    timing cache read and written at ``timing_cache`` -> ``build_serialized_network``. On 11,
    ``onnx_path`` must carry the precision: pick it with :func:`engine_source`.
    """
    try:
        import tensorrt as trt  # lazy: optional dependency, present on TensorRT hosts only
    except ImportError:
        raise DistillError("building a TensorRT engine needs TensorRT (pip install tensorrt, or JetPack on a "
                           "Jetson); otherwise run build_engine.sh on the device") from None
    if precision not in PRECISIONS:
        raise DistillError(f"TensorRT precision must be fp32, fp16 or int8; got '{precision}'")
    typed = strongly_typed(tensorrt_major(trt.__version__))
    check_engine_source(onnx_path, precision, typed)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # 10: weakly typed; 11: always strongly typed (its flag is ignored)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise DistillError(f"{onnx_path}: TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if precision == "fp32":  # BuilderFlag.TF32 is on by default (10 and 11): an fp32 engine stays fp32
        config.clear_flag(trt.BuilderFlag.TF32)
    if not typed and precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if not typed and precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # QDQ model: explicit quantization, no calibrator
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, *[(b, *chw) for b in batches])
    config.add_optimization_profile(profile)
    cache_path = Path(timing_cache)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise DistillError(f"{onnx_path}: TensorRT engine build failed (see the TensorRT log above)")
    engine_path = Path(engine_path)
    engine_path.write_bytes(bytes(serialized))
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    write_source_record(engine_path, onnx_path, tensorrt_major(trt.__version__), str(trt.__version__))
    return engine_path


def write_source_record(engine_path: str | Path, onnx_path: str | Path, major: int,
                        version: str | None = None) -> Path:
    """``ENGINE.source.json``, as build_engine.sh writes it: the ONNX file the engine was just built from (its name,
    relative to the engine's folder, and sha256) and the engine's sha256, so the edge runner's ``engine_source`` names
    the bytes the engine was built from, not an ONNX copied beside it later; and the TensorRT that built it: its major
    (``trt_major``, which older runners read) and full ``version`` (``trt_version``, e.g. ``10.3.0.30``: engines are
    not portable across minor versions either, and the edge runner names both versions when they differ)."""
    engine_path, onnx_path = Path(engine_path), Path(onnx_path)
    record = {"engine": engine_path.name, "engine_sha256": sha256_file(engine_path),
              "onnx": os.path.relpath(onnx_path, engine_path.parent), "onnx_sha256": sha256_file(onnx_path),
              "trt_major": major, **({"trt_version": version} if version else {})}
    out = engine_path.with_name(engine_path.name + SOURCE_SUFFIX)
    out.write_text(json.dumps(record) + "\n")
    return out
