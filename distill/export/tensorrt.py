"""TensorRT engines from the exported ONNX: build here when ``import tensorrt`` works, else a script.

An engine is specific to the GPU and the TensorRT version that built it, so the portable
artifact is the ONNX file plus ``build_engine.sh``, run on the target device (a Jetson has
``trtexec`` at ``/usr/src/tensorrt/bin/trtexec``). fp16 engines are built from the fp32 ONNX
with ``--fp16``; int8 engines from the ``tensorrt``-flavour QDQ ONNX (explicit quantization:
the scales are in the graph, no calibrator) with ``--int8 --fp16`` so layers left in float run
in fp16.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from distill.errors import DistillError

BUILD_SCRIPT = "build_engine.sh"  # in the export folder: builds the engines on the device
TIMING_CACHE = "timing.cache"     # TensorRT's kernel timing cache, next to the engines


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


def _shape(input_name: str, batch: int, chw: tuple[int, int, int]) -> str:
    return f"{input_name}:{batch}x{'x'.join(str(d) for d in chw)}"


def trtexec_command(onnx_path: str | Path, engine_path: str | Path, precision: str, input_name: str,
                    chw: tuple[int, int, int], batches: tuple[int, int, int] = (1, 8, 32),
                    timing_cache: str = TIMING_CACHE, workspace_mib: int = 1024,
                    trtexec: str = "${TRTEXEC}") -> list[str]:
    """The ``trtexec`` argv building one engine.

    Args:
        precision: ``fp32`` | ``fp16`` | ``int8`` (int8 expects a QDQ model).
        batches: (min, opt, max) batch of the optimization profile.
        workspace_mib: builder workspace memory pool limit in MiB.
    """
    lo, opt, hi = batches
    if not lo <= opt <= hi:
        raise DistillError(f"TensorRT batch profile must be min <= opt <= max, got {batches}")
    cmd = [trtexec, f"--onnx={onnx_path}", f"--saveEngine={engine_path}",
           f"--minShapes={_shape(input_name, lo, chw)}", f"--optShapes={_shape(input_name, opt, chw)}",
           f"--maxShapes={_shape(input_name, hi, chw)}", f"--timingCacheFile={timing_cache}",
           f"--memPoolSize=workspace:{workspace_mib}"]
    if precision == "fp16":
        cmd.append("--fp16")
    elif precision == "int8":
        cmd += ["--int8", "--fp16"]
    elif precision != "fp32":
        raise DistillError(f"TensorRT precision must be fp32, fp16 or int8; got '{precision}'")
    return cmd


def write_build_script(out_dir: str | Path, engines: list[dict[str, Any]], input_name: str,
                       chw: tuple[int, int, int], batches: tuple[int, int, int] = (1, 8, 32),
                       workspace_mib: int = 1024) -> Path:
    """Write ``out_dir/build_engine.sh`` building each ``{"onnx", "engine", "precision"}`` entry.

    Paths in the script are relative to the export folder (the script ``cd``s there), so the
    folder can be copied to the device as is.
    """
    out_dir = Path(out_dir)
    lines = [
        "#!/usr/bin/env bash",
        "# Build TensorRT engines for this export. Run it ON THE TARGET DEVICE: an engine only runs on",
        "# the GPU model and TensorRT version that built it (copy this folder, then ./build_engine.sh).",
        f"# Optimization profile for '{input_name}': batch min/opt/max = {batches[0]}/{batches[1]}/{batches[2]}.",
        "# int8 engines come from the tensorrt-flavour QDQ model (explicit quantization, scales inside the",
        "# ONNX; no calibration cache needed). On TensorRT >= 10 '--stronglyTyped' may replace '--int8 --fp16'.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        'TRTEXEC="${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}"',
        'if [ ! -x "$TRTEXEC" ]; then echo "trtexec not found: install TensorRT (on a Jetson: JetPack) or set TRTEXEC=" >&2; exit 1; fi',
        '"$TRTEXEC" --version 2>/dev/null | head -n 1 || true',
    ]
    for e in engines:
        cmd = trtexec_command(e["onnx"], e["engine"], e["precision"], input_name, chw, batches,
                              workspace_mib=workspace_mib, trtexec="$TRTEXEC")
        lines.append(f"echo 'building {e['engine']} ({e['precision']})'")
        lines.append('"$TRTEXEC" ' + " ".join(shlex.quote(a) for a in cmd[1:]))
    path = out_dir / BUILD_SCRIPT
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o755)
    return path


def build_engine(onnx_path: str | Path, engine_path: str | Path, precision: str, input_name: str,
                 chw: tuple[int, int, int], batches: tuple[int, int, int] = (1, 8, 32),
                 timing_cache: str | Path = TIMING_CACHE, workspace_mib: int = 1024) -> Path:
    """Build a serialized engine with the TensorRT Python API (TensorRT 8.6 / 10.x).

    Builder -> network from ``OnnxParser`` -> config (FP16/INT8 flags, workspace, an
    optimization profile for the dynamic batch, a timing cache read and written at
    ``timing_cache``) -> ``build_serialized_network``.
    """
    try:
        import tensorrt as trt  # lazy: optional dependency, present on TensorRT hosts only
    except ImportError:
        raise DistillError("building a TensorRT engine needs TensorRT (pip install tensorrt, or JetPack on a "
                           "Jetson); otherwise run build_engine.sh on the device") from None
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # TensorRT 8.x; default in 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise DistillError(f"{onnx_path}: TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
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
    return engine_path
