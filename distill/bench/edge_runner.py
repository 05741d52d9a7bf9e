"""Latency runner for ONNX models and TensorRT engines: one file, numpy + onnxruntime or tensorrt.

This file is the single implementation of timing, statistics, memory and device-info code
used by ``distill bench`` (which imports it) and on edge devices (where it is copied as is:
it imports nothing from ``distill`` and never imports torch)::

    scp distill/bench/edge_runner.py jetson:~
    python3 edge_runner.py model.int8-tensorrt.onnx --runtime ort-trt --batch 1,8 --out bench.jsonl
    python3 edge_runner.py model.engine --runtime tensorrt --batch 1 --out bench.jsonl

Each (model, runtime, batch) gives one JSON line with the keys in :data:`RECORD_KEYS`:
latency percentiles (ms, host numpy in -> host numpy out, after ``--warmup`` untimed runs),
throughput (images/s), memory (peak RSS growth since before the model was loaded; GPU memory
where it can be read), the device (CPU model and flags, GPU and driver from ``nvidia-smi``,
Jetson L4T release and ``nvpmodel`` power mode) and library versions. ``--profile`` adds the
top operators by time from ONNX Runtime's profiler (a separate pass, so it never slows the
timed runs).

Runtimes: ``ort-cpu``, ``ort-cuda`` and ``ort-trt`` (onnxruntime execution providers) and
``tensorrt`` (a serialized engine; needs the TensorRT Python bindings and cuda-python). ``ort-trt`` keeps
onnxruntime's TensorRT engine and timing caches in ``trt_cache/`` beside the model and reuses them: delete that
folder when the model, onnxruntime, TensorRT or the board changes (onnxruntime's TensorRT EP docs); its engine has an
optimization profile covering the ``--batch`` sizes timed (:func:`trt_profile_shapes`: one engine, not one per batch
size built inside the warm-up). An int8 file
of the other flavour than the runtime's (``ort-cpu`` on ``ort-trt``, ``tensorrt`` on ``ort-cpu``), or any int8 file on
``ort-cuda`` (Q/DQ ops but no fused int8 convolution kernels there: :func:`flavour_warning`), is warned about.
An engine built
by build_engine.sh (its ``ENGINE.source.json`` beside it), or in a copied export folder (export.json beside it) or
``distill qad`` folder (qad.json beside it), gets ``engine_source``: the ONNX file it was built from and its sha256
(:func:`engine_source`), by which ``distill report`` joins it; one whose ``ENGINE.source.json`` records another
TensorRT version than the one loading it (``trt_version``, e.g. ``10.3.0``, compared up to the patch number; by
``trt_major`` alone in a record written before it had the full version) is named in one line with the rebuild
command: an error where the engine does not deserialize, a warning where it does.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import hashlib
import importlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

_fcntl: Any
try:  # POSIX (Linux, Jetson, macOS): appends to one bench file take turns (appending)
    import fcntl as _fcntl
except ImportError:  # Windows
    _fcntl = None

SCHEMA = "distill.bench/1"
RUNTIMES = ("torch", "ort-cpu", "ort-cuda", "ort-trt", "tensorrt")
RECORD_KEYS = (
    "schema", "model", "model_name", "model_sha256", "model_meta", "runtime", "providers", "batch",
    "input_shape", "threads", "threads_used", "threads_basis", "warmup", "iters", "latency_ms", "throughput_ips",
    "memory", "top_ops", "device", "versions", "timestamp", "wall_s",
)
# ``threads``: as asked (--threads; None: the runtime's default). ``threads_used``: the intra-op threads the run used,
# where known; ``threads_basis``: how that is known (records before them have neither: read as the runtime's default,
# its count not recorded)
ORT_POOL_COUNTED = "onnxruntime's default: its intra-op pool as created (threads counted in /proc/self/task)"
ORT_DEFAULT_DOCUMENTED = ("onnxruntime's default, not read here: documented as one intra-op thread per physical "
                          "core")
TENSORRT_NO_THREADS = "tensorrt: the engine runs on the GPU (no intra-op CPU threads)"
LATENCY_KEYS = ("mean", "std", "min", "p50", "p90", "p99", "max")
_ORT_PROVIDERS = {
    "ort-cpu": ["CPUExecutionProvider"],
    "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "ort-trt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
_INSTALL_HINT = {
    "ort-cuda": "onnxruntime-gpu (pip install onnxruntime-gpu; on a Jetson, NVIDIA's onnxruntime-gpu wheel for your JetPack) "
                "and a matching CUDA/cuDNN",
    "ort-trt": "onnxruntime-gpu built with TensorRT (pip install onnxruntime-gpu tensorrt; on a Jetson, NVIDIA's "
               "onnxruntime-gpu wheel for your JetPack) and TensorRT libraries on LD_LIBRARY_PATH",
    "tensorrt": "the TensorRT Python bindings (pip install tensorrt; on a Jetson they come with JetPack as "
                "python3-libnvinfer, which a venv sees only when made with python3 -m venv --system-site-packages) "
                "and cuda-python (pip install 'cuda-python>=12,<13' on CUDA 12, as JetPack 6 is)",
}


class RuntimeUnavailable(RuntimeError):
    """A runtime that cannot run here; the message is one line naming what to install."""


# --------------------------------------------------------------------------- statistics
def latency_stats(times_s: Sequence[float]) -> dict[str, float]:
    """Summary of per-run wall times (seconds) in milliseconds: mean, std, min, p50, p90, p99, max."""
    if len(times_s) == 0:
        raise ValueError("no timed runs")
    ms = np.asarray(times_s, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"mean": float(ms.mean()), "std": float(ms.std()), "min": float(ms.min()), "p50": float(p50),
            "p90": float(p90), "p99": float(p99), "max": float(ms.max())}


def time_callable(fn: Callable[[], Any], warmup: int, iters: int) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then ``iters`` times; return each timed call's seconds.

    ``fn`` must block until its result is ready (synchronize GPU work inside it).
    """
    for _ in range(max(0, warmup)):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def interleaved_times(fns: Mapping[str, Callable[[], Any]], warmup: int, iters: int) -> dict[str, list[float]]:
    """Time several callables round-robin (A B C A B C ...) so background load hits all alike.

    On a shared machine this is the only fair comparison: compare ratios measured this way.
    """
    for _ in range(max(0, warmup)):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(iters):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


# --------------------------------------------------------------------------- memory
def _status_kb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def rss_mb() -> float | None:
    """Current resident set size of this process in MiB (Linux), else None."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024.0


class PeakRSS:
    """Peak RSS while the ``with`` block runs, in MiB, and the RSS at its end (``end_mb``).

    Resets the kernel's high-water mark first (``/proc/self/clear_refs``); where that is not
    allowed, falls back to the lifetime peak and sets ``lifetime=True``. The peak is at least the
    end reading (read just after the high-water mark: a record never shows a current RSS above its peak).
    """

    def __enter__(self) -> PeakRSS:
        self.lifetime = False
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.lifetime = True
        self.peak_mb: float | None = None
        self.end_mb: float | None = None
        return self

    def __exit__(self, *exc: Any) -> None:
        kb = _status_kb("VmHWM")
        if kb is None:
            try:
                import resource  # lazy: POSIX only, and only when /proc is missing

                kb = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
                if sys.platform == "darwin":  # macOS gives bytes; Linux and the BSDs kilobytes
                    kb /= 1024.0
                self.lifetime = True
            except (ImportError, OSError):
                kb = None
        self.end_mb = rss_mb()
        seen = [v for v in (None if kb is None else kb / 1024.0, self.end_mb) if v is not None]
        self.peak_mb = max(seen) if seen else None


def gpu_process_memory_mb(pid: int | None = None) -> float | None:
    """GPU memory this process holds, from ``nvidia-smi`` (None where unavailable, e.g. Jetson)."""
    out = _run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])
    if not out:
        return None
    pid = os.getpid() if pid is None else pid
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(pid):
            with contextlib.suppress(ValueError):
                return float(parts[1])
    return None


# --------------------------------------------------------------------------- device info
def _run(cmd: list[str], timeout: float = 5.0) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


_INTERESTING_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni",
                      "amx_int8", "amx_bf16", "asimd", "asimddp", "asimdhp", "i8mm", "bf16", "sve")


# set by scripts/as_avx2.sh: CPUID features it hides from this process (/proc/cpuinfo still lists them)
HIDDEN_FLAGS_ENV = "DISTILL_HIDDEN_CPU_FLAGS"


def cpu_info() -> dict[str, Any]:
    """CPU model, logical cores, cores usable by this process and SIMD flags relevant to int8 (as the process sees
    them: without the flags :data:`HIDDEN_FLAGS_ENV` names, which go to ``hidden_flags``)."""
    model, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware") and val.strip():
                model = val.strip()
            elif key in ("flags", "features"):
                flags.update(val.split())
    if model in ("", platform.machine()):  # ARM boards: name the board (Jetson: "NVIDIA Jetson AGX Orin ...")
        with contextlib.suppress(OSError):
            model = Path("/proc/device-tree/model").read_text().strip("\x00\n ") or model
    usable = usable_cores()
    hidden = flags & set(os.environ.get(HIDDEN_FLAGS_ENV, "").split())
    info = {"model": model, "arch": platform.machine(), "logical_cores": os.cpu_count(), "usable_cores": usable,
            "flags": sorted(f for f in flags - hidden if f in _INTERESTING_FLAGS)}
    if hidden:
        info["hidden_flags"] = sorted(f for f in hidden if f in _INTERESTING_FLAGS)
    return info


def gpu_info() -> list[dict[str, str]]:
    """GPUs from ``nvidia-smi`` (name, driver, memory); empty where there is none or no nvidia-smi."""
    out = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap", "--format=csv,noheader"])
    gpus = []
    for line in (out or "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3:
            gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2],
                         "compute_capability": parts[3] if len(parts) > 3 else ""})
    return gpus


def jetson_info() -> dict[str, str] | None:
    """L4T release (``/etc/nv_tegra_release``), board and ``nvpmodel -q`` power mode; None off Jetson."""
    try:
        first = Path("/etc/nv_tegra_release").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    info = {"nv_tegra_release": first.strip("# ").strip()}
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", first)
    if m:
        info["l4t"] = f"{m.group(1)}.{m.group(2)}"
    with contextlib.suppress(OSError):
        info["board"] = Path("/proc/device-tree/model").read_text().strip("\x00\n ")
    mode = _run(["nvpmodel", "-q"])
    if mode:
        info.update(nvpmodel_fields(mode))
    return info


def nvpmodel_fields(out: str) -> dict[str, str]:
    """``nvpmodel -q``'s answer as fields: ``power_mode`` (the mode's name: ``MAXN``, ``15W``, ``MODE_30W_4CORE``),
    ``power_mode_id`` (the number on the line after it) and ``fan_mode`` where it prints one. Many boards print the fan
    line first (``NV Fan Mode:quiet`` / ``NV Power Mode: MAXN`` / ``0`` on JetPack 6, Orin NX): the fan mode is
    not part of the power mode, so a fan switched to ``cool`` is not another device in the report. An answer of
    another form is kept whole, on one line, as ``power_mode``."""
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    fields: dict[str, str] = {}
    for i, line in enumerate(lines):
        power, fan = re.search(r"NV Power Mode:\s*(\S+)", line), re.search(r"NV Fan Mode:\s*(\S+)", line)
        if power and "power_mode" not in fields:
            fields["power_mode"] = power.group(1)
            if i + 1 < len(lines) and lines[i + 1].isdigit():
                fields["power_mode_id"] = lines[i + 1]
        elif fan and "fan_mode" not in fields:
            fields["fan_mode"] = fan.group(1)
    if "power_mode" not in fields:
        fields["power_mode"] = " ".join(out.split())
    return fields


def library_versions(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Installed versions of the runtime libraries (from package metadata: imports nothing)."""

    out = {"python": platform.python_version()}
    for dist in ("numpy", "onnxruntime", "onnxruntime-gpu", "onnx", "tensorrt", "torch", "timm"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    trt = sys.modules.get("tensorrt")  # JetPack's bindings have no pip metadata
    if trt is not None and "tensorrt" not in out:
        out["tensorrt"] = str(getattr(trt, "__version__", "?"))
    out.update(extra or {})
    return out


def device_info() -> dict[str, Any]:
    """Where the numbers were measured: OS, CPU, GPUs and Jetson details."""
    info: dict[str, Any] = {"platform": platform.platform(), "cpu": cpu_info(), "gpus": gpu_info()}
    jet = jetson_info()
    if jet:
        info["jetson"] = jet
    return info


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    # the same as distill.utils.io.sha256_file, kept here on purpose: this file must run alone on a device

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- runners
def os_threads() -> frozenset[str] | None:
    """The ids of this process's OS threads now (Linux: the entries of /proc/self/task); None where that cannot be
    read."""
    try:
        return frozenset(os.listdir("/proc/self/task"))
    except OSError:
        return None


def ort_threads(threads: int | None, runtime: str, before: frozenset[str] | None,
                after: frozenset[str] | None) -> tuple[int | None, str]:
    """``(threads_used, threads_basis)`` of an onnxruntime session: ``threads`` when given; else, on ort-cpu, the
    intra-op pool onnxruntime made for the session (the OS threads whose ids are in ``after`` and not in ``before``
    appeared while it was created: the pool's workers, the calling thread being the pool's first. Ids, not a
    difference of totals: a thread that ended meanwhile, such as a thread pool's just shut down, whose entry can
    outlive its join, made the count one short. A thread that another thread of this process starts meanwhile is
    still counted. onnxruntime 1.32 made one per physical core of the machine, whatever the process's affinity, where
    this was written); else None, and the basis names the
    documented default instead (the CUDA and TensorRT providers start threads of their own: a count would not be the
    pool's)."""
    if threads:
        return int(threads), "--threads"
    if runtime == "ort-cpu" and before is not None and after is not None:
        return len(after - before) + 1, ORT_POOL_COUNTED
    return None, ORT_DEFAULT_DOCUMENTED


# threads_text(brief=True): a basis named in passing, without how it was found
# (a count given: "as asked", not the command's flag, for the recommendation an api.export(threads=N) caller reads too)
_BRIEF_BASIS = {ORT_POOL_COUNTED: "onnxruntime's default", ORT_DEFAULT_DOCUMENTED: "onnxruntime's default, not counted",
                "--threads": "as asked"}


def threads_text(record: Mapping[str, Any], brief: bool = False) -> str:
    """The threads a latency was timed with, in words, for a bench record or an export's latency check (the one
    formatter: this runner's lines, and distill's export log and recommendation): ``4 threads (--threads)``,
    ``2 threads (onnxruntime's default: ...)``, or the basis alone where the count is not known (``threads: the
    runtime's default (count not recorded)`` for a record written before it was). ``brief``: the basis without how
    it was found (``2 threads (onnxruntime's default)``, ``4 threads (as asked)``: no flag, which a Python caller
    did not pass; no parentheses inside parentheses), for a line that names the threads in passing. (The
    report's table cells have a shorter form: ``distill.records.ship.threads_label``.)"""
    used, basis, given = record.get("threads_used"), record.get("threads_basis"), record.get("threads")
    if brief and basis:
        basis = _BRIEF_BASIS.get(basis, basis)
    if used is not None:
        return f"{used} thread{'s' * (used != 1)}" + (f" ({basis})" if basis else "")
    if basis:
        return f"threads: {basis}"
    if given:
        return f"{given} thread{'s' * (given != 1)} ({_BRIEF_BASIS['--threads'] if brief else '--threads'})"
    return "threads: the runtime's default" + (", count not recorded" if brief else " (count not recorded)")


class OrtRunner:
    """An ONNX Runtime session for ``ort-cpu`` / ``ort-cuda`` / ``ort-trt``.

    Args:
        path: the ``.onnx`` file.
        runtime: one of ``ort-cpu``, ``ort-cuda``, ``ort-trt``.
        threads: intra-op threads (None: onnxruntime's default, one per physical core).
        profile: enable onnxruntime's profiler (see :meth:`top_ops`).
        cache_dir: where ``ort-trt`` keeps engine and timing caches (default: beside the model).
        spin: let idle intra-op threads spin-wait (onnxruntime's default). Turn it off when
            several sessions are timed in turn: a session's spinning workers would steal the
            cores from the next one.
        batches: the batch sizes to be timed: ``ort-trt`` builds one engine whose optimization profile covers
            them (:func:`trt_profile_shapes`); None: no explicit profile (TensorRT's EP then rebuilds its engine
            for each new batch size, inside the warm-up).
    """

    def __init__(self, path: str | Path, runtime: str = "ort-cpu", threads: int | None = None,
                 profile: bool = False, cache_dir: str | Path | None = None, spin: bool = True,
                 batches: Sequence[int] | None = None):
        try:
            import onnxruntime as ort  # lazy: optional runtime, absent on a TensorRT-only device
        except ImportError:
            raise RuntimeUnavailable(f"runtime '{runtime}' needs onnxruntime (pip install onnxruntime, or "
                                     "onnxruntime-gpu for CUDA/TensorRT)") from None
        if runtime not in _ORT_PROVIDERS:
            raise RuntimeUnavailable(f"runtime '{runtime}' is not an onnxruntime runtime (have: {', '.join(_ORT_PROVIDERS)})")
        self.path, self.runtime, self.threads, self.spin = Path(path), runtime, threads, spin
        self.batches = [int(b) for b in batches] if batches else None
        wanted = _ORT_PROVIDERS[runtime]
        if wanted[0] not in ort.get_available_providers():
            raise RuntimeUnavailable(f"runtime '{runtime}' needs {wanted[0]}, not in this onnxruntime "
                                     f"{ort.__version__} (has {', '.join(ort.get_available_providers())}): "
                                     f"install {_INSTALL_HINT[runtime]}")
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        if not spin:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if profile:
            so.enable_profiling = True

            so.profile_file_prefix = os.path.join(tempfile.gettempdir(), f"ort_profile_{self.path.stem}_{os.getpid()}")
        providers: list[Any] = list(wanted)
        self.provider_options: dict[str, Any] = {}
        if runtime == "ort-trt":
            self.provider_options = trt_provider_options(_onnx_precision(ort, self.path),
                                                         _cache_dir(Path(cache_dir) if cache_dir else self.path.parent / "trt_cache"))
            if self.batches:  # one engine for every batch timed, built once, not once per new batch in its warm-up
                self.provider_options.update(trt_profile_shapes(*onnx_input(self.path), self.batches))
            providers[0] = ("TensorrtExecutionProvider", self.provider_options)
        before = os_threads()
        try:
            try:
                self.session = ort.InferenceSession(str(self.path), so, providers=providers)
            except Exception as e:
                explicit = [k for k in self.provider_options if k.startswith("trt_profile_")]
                if not explicit or _PARTITIONED not in str(e):
                    raise
                # TensorRT's EP takes explicit profiles only where they name every dynamic input of every TensorRT
                # subgraph: a graph it partitions (an op TensorRT does not take runs on CUDA or the CPU) has others.
                # Timed as before the profile was given: the EP's own profiles, rebuilt per new batch size.
                print(f"warning: {self.path}: onnxruntime's TensorRT EP splits this graph into several TensorRT "
                      "subgraphs, so it takes no explicit optimization profile for its input; timed without one "
                      "(the EP rebuilds its engine for each new batch size, inside that batch's warm-up)",
                      file=sys.stderr)
                for k in explicit:  # the dict in providers[0] too: the retry and the record's note go without it
                    del self.provider_options[k]
                self.session = ort.InferenceSession(str(self.path), so, providers=providers)
        except Exception as e:  # onnxruntime's own InvalidProtobuf / InvalidGraph / Fail: a corrupt or non-ONNX file
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise RuntimeUnavailable(f"{self.path}: onnxruntime cannot load it: {first}") from None
        self.threads_used, self.threads_basis = ort_threads(threads, runtime, before, os_threads())
        self.providers = self.session.get_providers()
        if self.providers[0] != wanted[0]:
            raise RuntimeUnavailable(f"runtime '{runtime}': onnxruntime fell back to {self.providers[0]} "
                                     f"(the {wanted[0]} libraries did not load); install {_INSTALL_HINT[runtime]}")
        inp = only_input(self.path, self.session.get_inputs())
        self.input_name, self._shape = inp.name, list(inp.shape)
        self.meta = decode_metadata(self.session.get_modelmeta().custom_metadata_map)
        self._profiling = profile

    def input_shape(self, batch: int) -> list[int]:
        """The input shape for ``batch`` (non-batch dims from the model; they must be static; a fixed batch dim
        must equal ``batch``)."""
        return onnx_batch_shape(self.path, self.input_name, self._shape, batch)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: x})

    def profiled(self) -> OrtRunner:
        """A second session on the same model with the profiler on."""
        return OrtRunner(self.path, self.runtime, threads=self.threads, profile=True, spin=self.spin,
                         batches=self.batches)  # the same profile: ort-trt's cached engine serves it

    def top_ops(self, k: int = 10) -> list[dict[str, Any]]:
        """Stop profiling and return the ``k`` op types taking most kernel time, with their share."""
        if not self._profiling:
            return []
        prof = Path(self.session.end_profiling())
        self._profiling = False
        try:
            return top_ops_from_profile(json.loads(prof.read_text()), k)
        finally:
            with contextlib.suppress(OSError):
                prof.unlink()

    def close(self) -> None:
        """Stop profiling and release the session (a closed runner cannot run; :meth:`profiled` still works)."""
        if self._profiling:
            self.top_ops(0)
        self.__dict__.pop("session", None)


def cli_flag(key: str, *value: Any) -> str:
    """How this runner's messages name an option: its flag (``--memory-format``), with ``value`` (``--threads 4``).
    A caller that spells options otherwise passes its own (``distill.api.bench``: ``distill.spelling.option``, the
    Python keyword there)."""
    flag = "--" + key.replace("_", "-")
    return f"{flag} {value[0]}" if value else flag


def onnx_batch_shape(path: str | Path, name: str, shape: Sequence[Any], batch: int,
                     flag: Callable[..., str] = cli_flag) -> list[int]:
    """The shape of ONNX input ``name`` (``shape``: ints, or a name/None for a dynamic dim) at ``batch``; a fixed
    batch dim other than ``batch``, or a dynamic non-batch dim, is one line naming the file (and the option as
    ``flag`` spells it: :func:`cli_flag`)."""
    fixed = shape[0] if shape else None
    if isinstance(fixed, int) and fixed > 0 and fixed != batch:
        raise RuntimeUnavailable(f"{path}: input '{name}' has a fixed batch of {fixed}; "
                                 f"{flag('batch', batch)} cannot run (export with a dynamic batch, or use {flag('batch', fixed)})")
    dims = list(shape[1:])
    if not all(isinstance(d, int) and d > 0 for d in dims):
        raise RuntimeUnavailable(f"{path}: input '{name}' has non-static dims {list(shape)}")
    return [batch, *dims]


def onnx_input(path: str | Path) -> tuple[str, list[Any]]:
    """The name and shape (as :meth:`OrtRunner.input_shape` sees them) of an ONNX file's first input, read from the
    file with the ``onnx`` package (no weights to any device; external data not read), else, where ``onnx`` is not
    installed (a Jetson with onnxruntime only) or cannot parse it, from a CPU session with graph optimization off,
    released at once (a corrupt file is then onnxruntime's one line)."""
    try:
        import onnx  # lazy: optional here (a device may have onnxruntime only); the cheap way to read the input

        graph = onnx.load(str(path), load_external_data=False).graph
        weights = {t.name for t in graph.initializer}  # IR < 4 lists initializers among the inputs
        inputs = [i for i in graph.input if i.name not in weights]
    except Exception:  # ImportError, a DecodeError: onnxruntime reads it (and names what is wrong)
        inputs = []
    if inputs:
        first = only_input(path, inputs)
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in first.type.tensor_type.shape.dim]
        return first.name, dims
    try:
        import onnxruntime as ort  # lazy: optional runtime, absent on a TensorRT-only device
    except ImportError:
        raise RuntimeUnavailable("reading an ONNX model's input needs onnxruntime (pip install onnxruntime, or "
                                 "onnxruntime-gpu for CUDA/TensorRT) or onnx") from None
    inp = only_input(path, _cpu_session(ort, path).get_inputs())
    return inp.name, list(inp.shape)


def only_input(path: str | Path, inputs: Sequence[Any]) -> Any:
    """The one input of a model the runner feeds (an image batch); several required inputs (or none) is one line
    naming them: the runner would time nothing, failing at the first run."""
    if len(inputs) != 1:
        names = ", ".join(repr(i.name) for i in inputs) or "none"
        raise RuntimeUnavailable(f"{path}: {len(inputs)} required inputs ({names}); the runner feeds one, the image "
                                 "batch")
    return inputs[0]


def check_batches(models: Sequence[str | Path], runtime: str, batches: Iterable[int],
                  flag: Callable[..., str] = cli_flag) -> None:
    """Raise :class:`RuntimeUnavailable` (one line) for the first of ``models`` that cannot run one of ``batches`` on
    ``runtime``: an ONNX input with another fixed batch or a dynamic non-batch dim (:func:`onnx_input`: read from
    the file, no session on ``runtime``), an engine's fixed batch or optimization profile (each engine deserialized
    once and released), an ONNX file given to ``tensorrt``. For several models timed one after another, before
    timing any: a bad second model is not found after the first one's timing (each runner checks again when
    opened; round-robin timing opens every runner before timing any, so it needs none). ``flag`` spells the option
    (:func:`cli_flag`)."""
    batches = [int(b) for b in batches]
    for model in models:
        if runtime in _ORT_PROVIDERS:
            name, shape = onnx_input(model)
            for b in batches:
                onnx_batch_shape(model, name, shape, b, flag)
        elif runtime == "tensorrt":
            trt = _import_tensorrt()
            engine = _deserialize_engine(trt, Path(model))
            name, shape, profile = _engine_input(trt, engine)
            del engine  # released before the next one is read: engines are not kept for the whole check
            for b in batches:
                engine_batch_shape(model, name, shape, profile, b, flag)


def _cpu_session(ort: Any, path: str | Path) -> Any:
    """A CPU session of ``path`` with graph optimization off, to read its inputs or metadata (released by the
    caller's reference going); a corrupt or non-ONNX file is one line."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own InvalidProtobuf / InvalidGraph / Fail: a corrupt or non-ONNX file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RuntimeUnavailable(f"{path}: onnxruntime cannot load it: {first}") from None


def _onnx_precision(ort: Any, path: Path) -> str | None:
    """The ``precision`` in a distill ONNX file's metadata (read with a CPU session, no graph optimization),
    else None."""
    meta = _cpu_session(ort, path).get_modelmeta()
    precision = decode_metadata(meta.custom_metadata_map).get("precision")
    return str(precision) if precision else None


_FLAVOUR_NAME = re.compile(r"\.int8-(ort-cpu|tensorrt)\b")  # model.int8-ort-cpu.onnx, model.int8-tensorrt.ptq.onnx


def int8_flavour(path: str | Path) -> str | None:
    """The int8 flavour of a distill ONNX file: its ``distill.int8_flavour`` metadata (``distill export`` and
    ``distill qad`` stamp it), else the file name's ``.int8-FLAVOUR`` (``model.int8-ort-cpu.onnx``); None for
    any other file, or where onnxruntime is not importable and the name says nothing."""
    try:
        import onnxruntime as ort  # lazy: optional runtime, absent on a TensorRT-only device
    except ImportError:
        meta: dict[str, Any] = {}
    else:
        meta = decode_metadata(_cpu_session(ort, path).get_modelmeta().custom_metadata_map)
    quantization = meta.get("quantization")
    flavour = meta.get("int8_flavour") or (quantization.get("flavour") if isinstance(quantization, dict) else None)
    if flavour:
        return str(flavour)
    named = _FLAVOUR_NAME.search(Path(path).name)
    return named.group(1) if named else None


def flavour_warning(path: str | Path, runtime: str) -> str | None:
    """One line when ``path`` is an int8 file made for another runtime than ``runtime`` (None: nothing to say).
    ``ort-trt`` with the ``ort-cpu`` flavour: uint8 asymmetric activations, which TensorRT's explicit quantization
    (int8, zero point 0) does not take, so the time is not TensorRT's int8; ``ort-cpu`` with the ``tensorrt``
    flavour: symmetric int8 activations, slower on onnxruntime's CPU kernels than the ``ort-cpu`` flavour;
    ``ort-cuda`` with either flavour (none is made for it): onnxruntime fuses Q/DQ around a Conv or MatMul into an
    int8 kernel (QLinearConv, QLinearMatMul) on its CPU EP (and DirectML, ACL), not on the CUDA EP
    (``qdq_selector_action_transformer.cc``: the Conv/MatMul rules list no CUDA provider), where the Q/DQ ops run
    around float kernels: the time is not int8 latency. A ``tensorrt`` engine has no flavour of its own (built from
    the tensorrt-flavour file): nothing to say."""
    if runtime not in ("ort-trt", "ort-cpu", "ort-cuda"):
        return None
    flavour = int8_flavour(path)
    if runtime == "ort-cuda" and flavour:
        return (f"{path}: an int8 file (the {flavour} flavour) on ort-cuda: onnxruntime's CUDA EP runs the Q/DQ ops "
                "but does not fuse them into int8 convolution/MatMul kernels (the convolutions run in float between "
                "them), so this is not int8 latency on the GPU; time "
                "the tensorrt-flavour file on ort-trt, or its engine (build_engine.sh) with --runtime tensorrt")
    if runtime == "ort-trt" and flavour == "ort-cpu":
        return (f"{path}: an int8 file of the ort-cpu flavour (uint8 asymmetric activations, for onnxruntime's CPU "
                "kernels) on ort-trt: TensorRT takes int8 Q/DQ with zero point 0, so this is not TensorRT's int8 "
                "latency; time the tensorrt-flavour file (model.int8-tensorrt.onnx: distill export --int8-flavour "
                "tensorrt or both)")
    if runtime == "ort-cpu" and flavour == "tensorrt":
        return (f"{path}: an int8 file of the tensorrt flavour (symmetric int8 activations, for TensorRT) on ort-cpu: "
                "onnxruntime's CPU kernels run it slower than the ort-cpu flavour, so this is not the CPU int8 "
                "latency to ship; time model.int8-ort-cpu.onnx for that")
    return None


def _cache_dir(wanted: Path) -> Path:
    """``wanted`` for ort-trt's engine and timing caches, or a temporary folder where it cannot be made (a read-only
    model folder), with a warning."""
    try:
        wanted.mkdir(parents=True, exist_ok=True)
        if os.access(wanted, os.W_OK):
            return wanted
    except OSError:
        pass
    fallback = Path(tempfile.gettempdir()) / f"distill_trt_cache_{os.getuid() if hasattr(os, 'getuid') else 0}"
    fallback.mkdir(parents=True, exist_ok=True)
    print(f"warning: cannot write the TensorRT cache folder {wanted}: using {fallback}", file=sys.stderr)
    return fallback


def trt_provider_options(precision: str | None, cache: Path) -> dict[str, Any]:
    """TensorrtExecutionProvider options for a model of ``precision`` (its metadata): fp16 kernels only for an fp16
    or int8 file, int8 only for an int8 (QDQ, explicit quantization) file, so an fp32 file is timed at fp32."""
    return {"trt_fp16_enable": precision in ("fp16", "int8"), "trt_int8_enable": precision == "int8",
            "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache)}


#: onnxruntime's TensorRT EP refusing explicit profiles that do not cover a TensorRT subgraph's dynamic inputs
#: (``tensorrt_execution_provider.cc``: "User needs to provide all the dynamic shape inputs with associated profiles")
_PARTITIONED = "dynamic shape inputs with associated profiles"


def trt_profile_shapes(name: str, shape: Sequence[Any], batches: Sequence[int]) -> dict[str, str]:
    """TensorrtExecutionProvider's explicit optimization profile for input ``name`` (``shape`` as
    :func:`onnx_input` reads it) covering ``batches``: min the smallest batch, opt and max the largest, in
    onnxruntime's format (``trt_profile_min_shapes``: ``"input:1x3x224x224"``, as trtexec's ``--minShapes``).
    Without one, the EP builds an engine for the first shape it sees and rebuilds it for each new batch size,
    inside the timed batch's warm-up; with one, a single engine serves every batch, and the engine cache keeps it
    (onnxruntime compares the profile with its cached ``.profile`` file and rebuilds only when they differ). The
    opt batch is the one TensorRT tunes its kernels for: time ``--batch 1`` alone for an engine tuned at batch 1.
    Empty (no profile) where the batch dim is fixed or another dim is not static: the EP needs no profile for a
    static input, and such a model is refused at its batch (:func:`onnx_batch_shape`)."""
    if not batches or not shape or (isinstance(shape[0], int) and shape[0] > 0):
        return {}
    if ":" in name or "," in name:  # onnxruntime splits the option at "," and a pair at its first ":" (input:0 of a
        return {}  # converted TensorFlow graph): such a name cannot be given a profile
    dims = list(shape[1:])
    if not all(isinstance(d, int) and d > 0 for d in dims):
        return {}
    lo, hi = min(batches), max(batches)
    chw = "x".join(str(d) for d in dims)
    return {"trt_profile_min_shapes": f"{name}:{lo}x{chw}", "trt_profile_opt_shapes": f"{name}:{hi}x{chw}",
            "trt_profile_max_shapes": f"{name}:{hi}x{chw}"}


def decode_metadata(props: dict[str, str]) -> dict[str, Any]:
    """distill's ONNX metadata for a record: ``distill.`` prefix dropped, JSON values decoded,
    the class list replaced by its length (records stay small)."""
    out: dict[str, Any] = {}
    for k, v in props.items():
        key = k[len("distill."):] if k.startswith("distill.") else k
        if isinstance(v, str) and v[:1] in "[{":
            with contextlib.suppress(json.JSONDecodeError):
                v = json.loads(v)
        out[key] = v
    if isinstance(out.get("class_names"), list):
        out["num_classes"] = len(out.pop("class_names"))
    return out


def top_ops_from_profile(events: list[dict[str, Any]], k: int = 10) -> list[dict[str, Any]]:
    """Aggregate onnxruntime profiler ``Node`` events by op type: total ms, calls, share of total."""
    per_op: dict[str, dict[str, Any]] = {}
    total = 0.0
    for ev in events:
        if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        args = ev.get("args", {})
        op = args.get("op_name", "?")
        d = per_op.setdefault(op, {"op": op, "total_ms": 0.0, "calls": 0, "provider": args.get("provider", "")})
        d["total_ms"] += float(ev.get("dur", 0)) / 1e3
        d["calls"] += 1
        total += float(ev.get("dur", 0)) / 1e3
    ops = sorted(per_op.values(), key=lambda d: -d["total_ms"])[:k]
    for d in ops:
        d["pct"] = 100.0 * d["total_ms"] / total if total else 0.0
    return ops


class TensorRTRunner:
    """A serialized TensorRT engine (TensorRT 10 or 11: the tensor API, bound alike in both, see
    :func:`_engine_input`; cuda-python for memory).

    Latency covers host->device copy, execution and device->host copy, like onnxruntime's.
    Not exercised where this project is tested (no GPU); keep it thin.
    """

    def __init__(self, path: str | Path, runtime: str = "tensorrt", threads: int | None = None,
                 profile: bool = False, cache_dir: str | Path | None = None):
        trt = _import_tensorrt()
        try:
            from cuda.bindings import runtime as cudart  # lazy: with tensorrt only; cuda-python >= 12.8
        except ImportError:
            try:
                from cuda import cudart  # lazy: older cuda-python
            except ImportError:
                raise RuntimeUnavailable(f"runtime 'tensorrt' needs {_INSTALL_HINT['tensorrt']}") from None
        self.trt, self.cudart, self.path, self.runtime, self.threads = trt, cudart, Path(path), runtime, threads
        self.threads_used, self.threads_basis = None, TENSORRT_NO_THREADS
        self.meta: dict[str, str] = {}
        self.engine = _deserialize_engine(trt, self.path)
        self.source = engine_source(self.path, _major(trt.__version__))  # what the report joins it by
        self.context = self.engine.create_execution_context()
        self.input_name, self._shape, self._profile = _engine_input(trt, self.engine)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.providers = [f"TensorRT {trt.__version__}"]
        self._buffers: dict[tuple[int, ...], dict[str, tuple[Any, np.ndarray]]] = {}  # shape -> name -> (device, host)
        err, self.stream = cudart.cudaStreamCreate()
        self._check(err, "cudaStreamCreate")

    def _check(self, err: Any, call: str) -> None:
        """A CUDA runtime call's status (cuda-python returns it, never raises): not 0 is one line naming it."""
        if int(err) != 0:
            raise RuntimeUnavailable(f"{self.path}: CUDA error {int(err)} ({err}) in {call}")

    def input_shape(self, batch: int) -> list[int]:
        """The input shape for ``batch``; a batch the engine cannot run (fixed batch, or outside its optimization
        profile) is refused in one line naming both."""
        return engine_batch_shape(self.path, self.input_name, self._shape, self._profile, batch)

    def _set_shape(self, shape: tuple[int, ...]) -> None:
        if self.context.set_input_shape(self.input_name, shape) is False:
            raise RuntimeUnavailable(f"{self.path}: TensorRT refused input shape {list(shape)} for "
                                     f"'{self.input_name}' (--batch {shape[0]}; outside the engine's profile?)")

    def _alloc(self, shape: tuple[int, ...]) -> dict[str, tuple[Any, np.ndarray]]:
        if shape not in self._buffers:
            self._set_shape(shape)
            bufs = {}
            for n in self.inputs + self.outputs:
                dtype = self.trt.nptype(self.engine.get_tensor_dtype(n))
                host = np.empty(tuple(self.context.get_tensor_shape(n)), dtype=dtype)
                err, dev = self.cudart.cudaMalloc(host.nbytes)
                self._check(err, "cudaMalloc")
                bufs[n] = (dev, host)
            self._buffers[shape] = bufs
        return self._buffers[shape]

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        cudart, kind = self.cudart, self.cudart.cudaMemcpyKind
        bufs = self._alloc(tuple(x.shape))
        self.context.set_input_shape(self.input_name, tuple(x.shape))
        dev_in, host_in = bufs[self.input_name]
        np.copyto(host_in, x.astype(host_in.dtype, copy=False))
        self._check(cudart.cudaMemcpyAsync(dev_in, host_in.ctypes.data, host_in.nbytes, kind.cudaMemcpyHostToDevice,
                                           self.stream)[0], "cudaMemcpyAsync (to the GPU)")
        for n, (dev, _) in bufs.items():
            self.context.set_tensor_address(n, int(dev))
        if self.context.execute_async_v3(self.stream) is False:
            raise RuntimeUnavailable(f"{self.path}: TensorRT's execute_async_v3 failed (its log above says why)")
        for n in self.outputs:
            dev, host = bufs[n]
            self._check(cudart.cudaMemcpyAsync(host.ctypes.data, dev, host.nbytes, kind.cudaMemcpyDeviceToHost,
                                               self.stream)[0], "cudaMemcpyAsync (from the GPU)")
        self._check(cudart.cudaStreamSynchronize(self.stream)[0], "cudaStreamSynchronize")
        return [bufs[n][1] for n in self.outputs]

    def profiled(self) -> None:
        return None  # per-layer times on the device: trtexec --loadEngine=... --dumpProfile

    def top_ops(self, k: int = 10) -> list[dict[str, Any]]:
        return []

    def close(self) -> None:
        for bufs in self._buffers.values():
            for dev, _ in bufs.values():
                self.cudart.cudaFree(dev)
        self._buffers.clear()


SOURCE_SUFFIX = ".source.json"  # ENGINE.source.json: what build_engine.sh (or distill export) built ENGINE from


def engine_source(engine: str | Path, trt_major: int | None = None) -> dict[str, str] | None:
    """The ONNX file an engine of an export was built from, ``{"onnx": NAME, "sha256": ...}``, as the record's
    ``engine_source``, by which ``distill report`` joins the record to the export (or qad folder) holding those ONNX
    bytes, wherever the .jsonl is put.

    First the sidecar ``ENGINE.source.json`` that build_engine.sh (and ``distill export``'s builder) writes when it
    builds the engine: the ONNX it was built from and its sha256 *at build time*, and the engine's sha256, which must
    be the engine timed now (else the engine was replaced since: no source is claimed, with a warning). An ONNX beside
    the engine with other bytes now (an export re-copied over the folder, the engine not rebuilt) is warned about;
    the record keeps the bytes the engine was built from (review 3 finding 2).

    Without a sidecar (a build_engine.sh written before it): the export.json beside the engine (a copied export
    folder) lists it under ``tensorrt.engines`` with the file it is built from (``onnx_strongly_typed`` on TensorRT
    11+, ``onnx`` before), hashed here; a ``distill qad`` folder's qad.json lists its ``model.int8-qad.engine`` alike,
    under ``config.tensorrt.engines``. That file is what sits there now, not necessarily what the engine was built
    from: one newer than the engine (re-copied since) is not claimed, with a warning. None: no source claimed."""
    path = Path(engine)
    sidecar = path.with_name(path.name + SOURCE_SUFFIX)
    if sidecar.is_file():
        found = _sidecar_source(path, sidecar)
        if found is not _NOT_A_RECORD:
            return found
    entries: list[dict[str, Any]] = []
    for record, keys in (("export.json", ("tensorrt",)), ("qad.json", ("config", "tensorrt"))):
        try:
            listed = json.loads((path.parent / record).read_text())
            for key in keys:
                listed = listed.get(key) or {}
            entries += [e for e in listed.get("engines") or [] if isinstance(e, dict) and e.get("engine") == path.name]
        except (OSError, ValueError, AttributeError, TypeError):  # none, unreadable, not distill's
            continue
    for e in entries:
        name = e.get("onnx_strongly_typed") if (trt_major or 0) >= 11 and e.get("onnx_strongly_typed") else e.get("onnx")
        if isinstance(name, str) and name and (path.parent / name).is_file():
            onnx = path.parent / name
            if path.is_file() and onnx.stat().st_mtime > path.stat().st_mtime:
                print(f"warning: {path}: {name} beside it is newer than the engine (an export copied over the folder "
                      "since the build?): the engine may be stale, its record names no source; rebuild: "
                      "./build_engine.sh", file=sys.stderr)
                return None
            return {"onnx": name, "sha256": sha256_file(onnx)}
    return None


_NOT_A_RECORD: dict[str, str] = {}  # a sidecar without hashes: engine_source falls back to export.json


def _sidecar_source(path: Path, sidecar: Path) -> dict[str, str] | None:
    """:func:`engine_source` from ``ENGINE.source.json``; None (with a warning) when it is unreadable or names another
    engine's bytes; ``_NOT_A_RECORD`` (with a warning) when its hashes are not sha256 hex (empty: written by a
    build_engine.sh on a device without sha256sum)."""
    try:
        side = json.loads(sidecar.read_text())
        name, onnx_sha, engine_sha = (str(side[k]) for k in ("onnx", "onnx_sha256", "engine_sha256"))
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"warning: {sidecar}: not a build record ({e}): the record of {path.name} names no source",
              file=sys.stderr)
        return None
    if not all(re.fullmatch(r"[0-9a-f]{64}", h) for h in (onnx_sha, engine_sha)):
        print(f"warning: {sidecar}: not a build record (its sha256 fields are not hashes: a device without "
              "sha256sum?): the export's own record is used for its source", file=sys.stderr)
        return _NOT_A_RECORD
    if engine_sha != sha256_file(path):
        print(f"warning: {path}: not the engine {sidecar.name} records (replaced since the build): its record names "
              "no source; rebuild: ./build_engine.sh", file=sys.stderr)
        return None
    onnx = path.parent / name
    if onnx.is_file() and sha256_file(onnx) != onnx_sha:
        print(f"warning: {path}: built from other bytes of {name} than the file beside it now (an export copied over "
              "the folder since the build?): recorded as built from the old bytes; rebuild: ./build_engine.sh",
              file=sys.stderr)
    return {"onnx": name, "sha256": onnx_sha}


def _major(version: Any) -> int | None:
    """The major number of a version string (``10.3.0``: 10); None if it has none."""
    m = re.match(r"\d+", str(version))
    return int(m.group()) if m else None


def _import_tensorrt() -> Any:
    try:
        import tensorrt as trt  # lazy: optional runtime, present on Jetson/GPU devices only
    except ImportError:
        raise RuntimeUnavailable(f"runtime 'tensorrt' needs {_INSTALL_HINT['tensorrt']}") from None
    return trt


def _deserialize_engine(trt: Any, path: Path) -> Any:
    """The engine in ``path`` (an ``.onnx`` file, or one this TensorRT cannot read, is one line)."""
    if path.suffix == ".onnx":
        raise RuntimeUnavailable(f"{path}: runtime 'tensorrt' runs a built engine: run the export's "
                                 "build_engine.sh on this device first, or use --runtime ort-trt")
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
    other = _other_version(path, str(trt.__version__))
    if engine is None:
        raise RuntimeUnavailable(other or f"{path}: TensorRT could not deserialize the engine (built with another "
                                 f"TensorRT version or GPU? this is {trt.__version__}): rebuild it here")
    if other and other not in _SAID:  # deserialized all the same (a version-compatible engine?): said once per run
        _SAID.add(other)
        print(f"warning: {other}", file=sys.stderr)
    return engine


_SAID: set[str] = set()  # warnings already given (an engine is deserialized for the batch check, then to be timed)


def _version_parts(version: Any) -> tuple[int, ...]:
    """The leading dotted numbers of a version string (``10.3.0.30``: ``(10, 3, 0, 30)``); ``()`` if it has none."""
    m = re.match(r"\d+(?:\.\d+)*", str(version).strip())
    return tuple(int(p) for p in m.group().split(".")) if m else ()


def _other_version(engine: Path, version: str) -> str | None:
    """One line when ``ENGINE.source.json`` says ``engine`` was built by another TensorRT than ``version``, the one
    loading it: engines are not portable across TensorRT versions, minor and patch ones included (unless built
    version-compatible). The record's full version (``trt_version``, written at build time: ``10.3.0`` from trtexec's
    banner, ``10.3.0.30`` from the Python bindings) is compared up to the patch number, as far as both name it; a
    record written before it had one is compared by its major (``trt_major``). None when they agree, or there is no
    such record, or it records other bytes than ``engine`` (replaced since the build: :func:`engine_source` says so)."""
    sidecar = engine.with_name(engine.name + SOURCE_SUFFIX)
    try:
        side = json.loads(sidecar.read_text())
        recorded = side.get("trt_version")
        full = _version_parts(recorded) if isinstance(recorded, str) else ()
        built = str(recorded).strip() if len(full) > 1 else str(int(side["trt_major"]))
        engine_sha = str(side.get("engine_sha256", ""))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    loaded = _version_parts(version)
    if not loaded:
        return None
    n = min(len(full), len(loaded), 3) if len(full) > 1 else 1
    if _version_parts(built)[:n] == loaded[:n]:
        return None
    if re.fullmatch(r"[0-9a-f]{64}", engine_sha) and engine_sha != sha256_file(engine):
        return None
    return (f"{engine}: built with TensorRT {built} (its {sidecar.name}), loaded by TensorRT {version}: TensorRT "
            f"engines are not portable across versions (minor ones included); rebuild it with this TensorRT: "
            f"cd {shlex.quote(str(engine.parent))} && ./build_engine.sh")


def _engine_input(trt: Any, engine: Any) -> tuple[str, list[int], tuple[int, int] | None]:
    """An engine's first input: name, shape (-1 for a dynamic dim) and the batch range of optimization profile 0
    (the one an execution context runs; None when the engine reports none).

    The tensor API used here (``num_io_tensors``, ``get_tensor_name``, ``get_tensor_mode``, ``get_tensor_shape``,
    ``get_tensor_profile_shape(name, profile)`` -> [min, opt, max]) is the same in TensorRT 10 and 11: 11's Python
    bindings (NVIDIA/TensorRT python/src/infer/pyCore.cpp, v11.1) bind them as 10.3's do; what 11 removed
    (weakly typed builder flags, calibrators, ``device_memory_size``, the implicit-batch remnants) is not used."""
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    name = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
    shape = [int(d) for d in engine.get_tensor_shape(name)]
    profile = None
    with contextlib.suppress(AttributeError, TypeError, IndexError, ValueError):
        lo, _, hi = engine.get_tensor_profile_shape(name, 0)
        profile = (int(lo[0]), int(hi[0]))
    return name, shape, profile


def engine_batch_shape(path: str | Path, name: str, shape: Sequence[int], profile: tuple[int, int] | None,
                       batch: int, flag: Callable[..., str] = cli_flag) -> list[int]:
    """The shape of engine input ``name`` at ``batch``; a fixed batch other than ``batch``, or a batch outside the
    optimization profile's ``(min, max)``, is one line naming both (the option as ``flag`` spells it)."""
    fixed = int(shape[0]) if shape else -1
    if fixed > 0 and fixed != batch:
        raise RuntimeUnavailable(f"{path}: engine input '{name}' has a fixed batch of {fixed}; "
                                 f"{flag('batch', batch)} cannot run")
    if not all(int(d) > 0 for d in shape[1:]):
        raise RuntimeUnavailable(f"{path}: engine input '{name}' has dynamic dims {list(shape)}; the runner needs "
                                 "static channels, height and width (build the engine with them fixed)")
    if profile is not None and not profile[0] <= batch <= profile[1]:
        raise RuntimeUnavailable(f"{path}: {flag('batch', batch)} is outside the engine's optimization profile "
                                 f"(batch {profile[0]}..{profile[1]}); rebuild the engine for it")
    return [batch, *[int(d) for d in shape[1:]]]


def preload_runtime(runtime: str) -> None:
    """Import ``runtime``'s library (onnxruntime and its native module, or tensorrt) so that the RSS baseline read
    before a model is loaded does not charge the library itself (~40 MiB for onnxruntime) to the first model."""
    names = {"tensorrt": ("tensorrt",)}.get(runtime, ("onnxruntime", "onnxruntime.capi._pybind_state"))
    if runtime not in _ORT_PROVIDERS and runtime != "tensorrt":
        return
    for name in names:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def open_runner(model: str | Path, runtime: str, threads: int | None = None, profile: bool = False,
                batches: Sequence[int] | None = None) -> Any:
    """A runner for ``model`` on ``runtime`` (``torch`` is handled by ``distill bench``, not here); ``batches``: the
    sizes it will time (``ort-trt``'s engine profile)."""
    if runtime in _ORT_PROVIDERS:
        return OrtRunner(model, runtime, threads=threads, profile=profile, batches=batches)
    if runtime == "tensorrt":
        return TensorRTRunner(model, runtime, threads=threads)
    if runtime == "torch":
        raise RuntimeUnavailable("runtime 'torch' needs the distill package: use `distill bench CHECKPOINT_DIR --runtime torch`")
    raise RuntimeUnavailable(f"unknown runtime '{runtime}' (have: {', '.join(RUNTIMES)})")


# --------------------------------------------------------------------------- records
def bench_runner(runner: Any, batches: Iterable[int], warmup: int = 10, iters: int = 50, profile: bool = False,
                 topk: int = 10, model_path: str | Path | None = None, model_meta: dict[str, Any] | None = None,
                 rss_before_load_mb: float | None = None, extra_versions: dict[str, str] | None = None,
                 gpu_peak_mb: Callable[[], float | None] | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Time ``runner`` at each batch size and return one record per batch (see :data:`RECORD_KEYS`).

    Args:
        runner: an object with ``input_shape(batch)``, ``run(x)``, ``top_ops(k)``, ``runtime``,
            ``providers`` and ``threads`` (the runners in this file, or distill's torch runner).
        batches: batch sizes.
        warmup, iters: untimed and timed runs per batch.
        profile: after timing, run ``iters`` more with the profiler on and report ``topk`` ops.
        model_path: file recorded in the record (default ``runner.path``).
        model_meta: ONNX metadata or checkpoint description (default ``runner.meta``).
        rss_before_load_mb: RSS before the model was loaded, for the memory delta.
        gpu_peak_mb: callable giving peak GPU memory (MiB) after the runs, if the runtime has one.
        seed: input data seed (inputs are standard normal, the distribution after normalization).
    """
    return bench_runners([runner], batches, warmup, iters, profile, topk, [model_path], [model_meta],
                         rss_before_load_mb, extra_versions, gpu_peak_mb, seed)


def bench_runners(runners: Sequence[Any], batches: Iterable[int], warmup: int = 10, iters: int = 50,
                  profile: bool = False, topk: int = 10, model_paths: Sequence[str | Path | None] | None = None,
                  model_metas: Sequence[dict[str, Any] | None] | None = None, rss_before_load_mb: float | None = None,
                  extra_versions: dict[str, str] | None = None, gpu_peak_mb: Callable[[], float | None] | None = None,
                  seed: int = 0, reopen: Callable[[list[int]], Sequence[Any]] | None = None) -> list[dict[str, Any]]:
    """:func:`bench_runner` for several runners timed round-robin at each batch size (:func:`interleaved_times`:
    A B A B ...), so a shared machine's background load hits them alike; one record per runner and batch. The
    memory figures are the whole pass's (all runners loaded).

    ``reopen`` splits ``iters`` over one pass per runner: before pass ``i > 0`` it is called with the creation order
    (``[i, ..., n-1, 0, ..., i-1]``) and returns new runners of the same files, created in that order and listed as
    ``runners`` are (it owns them: closing the previous pass's is its job). The ONNX Runtime session created last
    runs 1-2.5 % faster than the same file's created earlier, whatever order they are timed in (RESULTS.md,
    "onnxruntime sessions created later run faster"); rotating the creation order gives every file that edge
    equally often. Without ``reopen`` the runners are timed in one pass as given."""
    n = len(runners)
    paths = [Path(p or r.path) for p, r in zip(model_paths or [None] * n, runners)]
    metas = [dict(m if m is not None else getattr(r, "meta", {})) for m, r in zip(model_metas or [None] * n, runners)]
    shas = [sha256_file(p) if p.is_file() else None for p in paths]
    device, versions = device_info(), library_versions(extra_versions)
    rng = np.random.default_rng(seed)
    batches = [int(b) for b in batches]
    # distill exports take fp32 input at every precision (fp16/int8 convert inside the graph)
    xs = {b: [rng.standard_normal(r.input_shape(b)).astype(np.float32) for r in runners] for b in batches}
    times: dict[int, dict[str, list[float]]] = {b: {str(i): [] for i in range(n)} for b in batches}
    peaks: dict[int, list[PeakRSS]] = {b: [] for b in batches}
    walls = dict.fromkeys(batches, 0.0)
    n_pass = n if reopen is not None else 1
    live = list(runners)
    for p in range(n_pass):
        runs = iters // n_pass + (1 if p < iters % n_pass else 0)
        if runs == 0:
            continue
        if p > 0 and reopen is not None:
            live = list(reopen(list(range(p, n)) + list(range(p))))
        for b in batches:
            calls = {str(i): functools.partial(r.run, x) for i, (r, x) in enumerate(zip(live, xs[b]))}
            with PeakRSS() as peak:
                t0 = time.perf_counter()
                for k, t in interleaved_times(calls, warmup, runs).items():
                    times[b][k] += t
                walls[b] += time.perf_counter() - t0
            peaks[b].append(peak)
    records: list[tuple[Any, dict[str, Any]]] = []
    for b in batches:
        known = [pk.peak_mb for pk in peaks[b] if pk.peak_mb is not None]
        peak_mb = max(known) if known else None
        base = rss_before_load_mb
        # rss_mb: at the end of this batch's timed runs (not after every batch: a later, larger batch's memory
        # made it exceed this batch's peak)
        mem = {"rss_mb": peaks[b][-1].end_mb if peaks[b] else rss_mb(), "peak_rss_mb": peak_mb,
               "peak_rss_delta_mb": (peak_mb - base) if (peak_mb is not None and base is not None) else None,
               "peak_is_lifetime": any(pk.lifetime for pk in peaks[b]),
               "gpu_peak_mb": gpu_peak_mb() if gpu_peak_mb else None}
        for i, (runner, x) in enumerate(zip(runners, xs[b])):
            t = times[b][str(i)]
            records.append((runner, {
                "schema": SCHEMA, "model": os.path.abspath(paths[i]), "model_name": paths[i].name,  # read elsewhere
                "model_sha256": shas[i], "model_meta": metas[i], "runtime": runner.runtime,
                "providers": list(runner.providers), "batch": b, "input_shape": list(x.shape),
                "threads": runner.threads, "threads_used": getattr(runner, "threads_used", runner.threads),
                "threads_basis": getattr(runner, "threads_basis", "--threads" if runner.threads else None),
                "warmup": warmup, "iters": iters, "latency_ms": latency_stats(t),
                "throughput_ips": b * iters / sum(t), "memory": mem, "top_ops": None, "device": device,
                "versions": versions, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "wall_s": walls[b],
            }))
            if hasattr(runner, "source"):  # an engine: the ONNX bytes it was built from; null: none found (the report
                records[-1][1]["engine_source"] = runner.source  # tells this from an older runner's record, no key)
            opts = getattr(runner, "provider_options", None)
            if opts:  # what TensorRT was allowed to pick (fp16/int8 kernels); the schema has no field of its own
                records[-1][1]["note"] = "TensorrtExecutionProvider " + ", ".join(
                    f"{k}={v}" for k, v in opts.items() if k in ("trt_fp16_enable", "trt_int8_enable")
                    or k.startswith("trt_profile_"))
    if profile:
        # Profile in a separate pass so the profiler's overhead never enters the timed runs.
        for runner, rec in records:
            prof_runner = runner.profiled()
            if prof_runner is None:
                continue
            x = rng.standard_normal(rec["input_shape"]).astype(np.float32)
            time_callable(lambda: prof_runner.run(x), 1, max(5, min(iters, 20)))
            rec["top_ops"] = prof_runner.top_ops(topk)
            prof_runner.close()
    return [rec for _, rec in records]


def write_jsonl(records: Iterable[dict[str, Any]], path: str | Path) -> None:
    """Append records to a JSON-lines file (one record per line, each one write() of its whole line: :func:`appending`,
    which other processes appending to the file wait for). Each gets ``model_relative``: its ``model`` relative to the
    file's folder, so that the file copied back beside the models it timed (or a tree of results moved whole) still
    names them, wherever ``distill report`` runs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(with_model_relative(r, path), sort_keys=False) for r in records]  # made before the lock
    with appending(path) as write:
        for line in lines:
            write(line)


@contextlib.contextmanager
def appending(path: str | Path) -> Iterator[Callable[[str], None]]:
    """Append lines to the JSON-lines file ``path`` (made where missing): yields ``write(line)``, which writes ``line``
    (no newline in it) and its newline in ONE write() call of the whole line. The file's last line is ended first
    (:func:`end_last_line`), and both are done holding an exclusive advisory lock on the file (``flock``, POSIX), so
    that two processes appending at once (two ``distill bench`` or edge runners, ``BenchRecord.append_to``) neither
    both end a cut-off line nor take another's record half written for one. Windows has no such lock here
    (``msvcrt.locking`` locks bytes against reads too, so :func:`end_last_line` could not read the file's end):
    there, concurrent appends to one file rest on each line being one write() call, as they do (with one warning per
    process and file) where ``flock`` fails (an NFS mount without its lock service). The one way every bench file
    is appended to (:func:`write_jsonl`, ``distill.utils.io.append_line``)."""
    path = Path(path)
    with open(path, "ab", buffering=0) as f:
        if _fcntl is not None:  # released when the file is closed. A file system without locks (an NFS mount with
            try:  # no lock service: ENOLCK; some macOS network shares: ENOTSUP) goes on unlocked, one write() a line
                _fcntl.flock(f.fileno(), _fcntl.LOCK_EX)
            except OSError as e:
                _warn_unlocked(path, e)

        def write(line: str) -> None:
            write_all(f, (line + "\n").encode("utf-8"), path)

        end_last_line(path, f)
        yield write


_UNLOCKED: set[str] = set()  # files appended to without the lock, already warned about in this process


def _warn_unlocked(path: Path, err: OSError) -> None:
    """One warning per process and file that :func:`appending` cannot lock ``path`` and appends without the lock."""
    key = os.path.abspath(path)
    if key in _UNLOCKED:
        return
    _UNLOCKED.add(key)
    print(f"warning: {path}: cannot lock it ({err.strerror or err}: a file system without locks, such as an NFS mount "
          "without its lock service?): appending without the lock; two processes appending to it at once may "
          "garble a line", file=sys.stderr)


def write_all(f: BinaryIO, data: bytes, path: Path) -> None:
    """All of ``data`` written to the unbuffered ``f`` (of the file ``path``): a regular file takes it whole; a short
    write (a signal, a full disk) goes on after it; a write that takes nothing (0, or None) raises ENOSPC rather than
    trying again forever (holding :func:`appending`'s lock), as ``distill.data.extsort``'s ``_append`` does."""
    view = memoryview(data)
    while view:
        took = f.write(view)
        if not took:
            raise OSError(errno.ENOSPC, f"{path}: the file took no more bytes (disk full?)")
        view = view[took:]


def end_last_line(path: Path, out: BinaryIO | None = None) -> None:
    """Give the JSON-lines file at ``path`` a newline at its end where it has none (written to ``out``, the file open
    for appending, where given), so that what is appended next is not glued to its last line; a warning where that
    line is cut off (power loss, kill -9 mid-write; readers skip it, naming it): it is not JSON; and one where it is
    longer than :data:`LONGEST_LINE` (no bench record is near it: such a line is not read whole, let alone parsed,
    so the warning does not say whether it is cut off: readers keep it if it is whole JSON). A whole record merely
    without its newline (echo -n, another tool) gets none. Called by :func:`appending`, under its lock."""
    tail = _unended_last_line(path) if path.is_file() else None
    if tail is None:
        return
    if len(tail) > LONGEST_LINE:
        print(f"warning: {path}: its last line (over {LONGEST_LINE >> 20} MiB, not checked) has no newline at the end; "
              "appending on a new line (readers keep it if it is whole JSON, else skip it, naming it)", file=sys.stderr)
    elif not _parses(tail):
        print(f"warning: {path}: its last line is cut off (not JSON, no newline at the end: an interrupted "
              "write?); appending on a new line (readers skip the cut-off one)", file=sys.stderr)
    if out is not None:
        write_all(out, b"\n", path)
        return
    with open(path, "ab") as f:
        f.write(b"\n")


#: A last line without its newline longer than this (bytes) is not checked (:func:`end_last_line` warns about it
#: unread): a bench record is a few KB (its device, versions and top operators), so such a line is never read whole
LONGEST_LINE = 1 << 20
_BLOCK = 65536


def _unended_last_line(path: Path) -> bytes | None:
    """The last line of the file at ``path`` where the file does not end in a newline (else None): read back from
    the end a block at a time, each byte once and each block searched once, so a long file is not read whole. Of a
    line longer than :data:`LONGEST_LINE`, only its last ``LONGEST_LINE`` bytes and up to one block more are read
    and returned (longer than ``LONGEST_LINE``: not checked, :func:`end_last_line`)."""
    with open(path, "rb") as f:
        blocks: list[bytes] = []
        at = end = f.seek(0, os.SEEK_END)
        while at > 0 and end - at <= LONGEST_LINE:
            step = min(_BLOCK, at)
            at -= step
            f.seek(at)
            block = f.read(step)
            if not blocks and block.endswith(b"\n"):
                return None
            cut = block.rfind(b"\n")
            blocks.append(block[cut + 1:])
            if cut >= 0:
                break
        return b"".join(reversed(blocks)) or None


def _parses(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def with_model_relative(record: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """``record`` as :func:`write_jsonl` writes it to the JSON-lines file ``path``: with ``model_relative``."""
    if record.get("model") and not record.get("model_relative"):
        with contextlib.suppress(ValueError):  # Windows: another drive
            return {**record, "model_relative": os.path.relpath(os.path.abspath(record["model"]),  # as laid out: links
                                                                os.path.abspath(Path(path).parent))}  # kept (symlinks)
    return record


def check_out_path(path: str | Path, flag: str = "--out") -> None:
    """Raise ValueError (one line naming ``flag`` and the path) unless ``path`` can be written: checked before any
    timing, so an unwritable ``--out`` never costs a whole benchmark's results. Creates missing parent folders."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path}: is a folder; name a file")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise ValueError(f"{flag} {path}: {parent} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.exists()
        with open(path, "a"):
            pass
        if not existed:
            path.unlink()
    except OSError as e:
        raise ValueError(f"{flag} {path}: cannot write it ({e.strerror or type(e).__name__})") from None


def check_bench_out(path: str | Path, flag: str = "--out") -> None:
    """:func:`check_out_path`, and ``path`` is a ``.jsonl`` file that, when it exists, holds bench records (its first
    line one of this schema, or its only line the cut-off start of one, as a write killed mid-record leaves it: the
    new records start on a new line, :func:`write_jsonl`): records are appended, so another file (an export's ``export.json``, a run's
    ``summary.json``) would be broken by them. Raises ValueError, one line naming ``flag``, the path and what it is."""
    path = Path(path)
    if path.suffix != ".jsonl" and not path.is_dir():  # a folder: check_out_path says so
        raise ValueError(f"{flag} {path}: not a .jsonl file; bench appends JSON lines to a .jsonl file "
                         "(e.g. bench.jsonl), never to a record such as export.json")
    check_out_path(path, flag)
    if not path.is_file():
        return
    with open(path, "rb") as f:
        first = next((raw for raw in f if raw.strip()), b"")
    if not first:
        return
    try:
        rec, parsed = json.loads(first), True
    except ValueError:
        rec, parsed = None, False
    kind = SCHEMA.split("/")[0] + "/"
    if isinstance(rec, dict) and str(rec.get("schema", "")).startswith(kind):
        return
    if not first.endswith(b"\n") and not parsed:  # the only line, cut off (whole JSON: below), as write_jsonl
        if first.strip().startswith(f'{{"schema": "{kind}'.encode()):  # a bench record's start (a kill -9 mid-write)
            return
        raise ValueError(f"{flag} {path}: its only line is cut off (no newline at the end: an interrupted write?) "
                         "and is not the start of a bench record; delete it or give another .jsonl file")
    raise ValueError(f"{flag} {path}: exists and does not hold bench records (its first line is not one); "
                     "bench would append to it: give another .jsonl file")


ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def check_model_file(model: str | Path, runtime: str | None = None) -> None:
    """Raise :class:`RuntimeUnavailable` (one line) unless ``model`` is an existing file (and, for an onnxruntime
    ``runtime``, not a TensorRT engine by its suffix: onnxruntime would call it an invalid protobuf)."""
    path = Path(model)
    if path.is_dir():
        raise RuntimeUnavailable(f"{model}: is a folder; pass .onnx files (or TensorRT engines)")
    if not path.is_file():
        raise RuntimeUnavailable(f"{model}: model file not found")
    if runtime in _ORT_PROVIDERS and path.suffix in ENGINE_SUFFIXES:
        raise RuntimeUnavailable(f"{model}: a TensorRT engine ({path.suffix}): pass --runtime tensorrt "
                                 f"(--runtime {runtime} runs .onnx files)")


def usable_cores() -> int | None:
    """The cores this process may run on (its affinity mask: a container's or ``taskset``'s share), else the
    machine's; None where neither is known."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows: no affinity mask
        return os.cpu_count()


def threads_warning(threads: int | None, runtime: str, flag: Callable[..., str] = cli_flag) -> str | None:
    """The one-line warning for ``--threads`` above the usable cores (None: nothing to say). The threads then take
    turns on the cores, and the latency tail measures the waiting: p90 came out 40x p50 with 4 threads on 2 cores.
    A TensorRT engine runs on the GPU (its runner starts no intra-op threads): nothing to say. ``flag`` names the
    option (:func:`cli_flag`)."""
    cores = usable_cores()
    if threads is None or cores is None or threads <= cores or runtime == "tensorrt":
        return None
    return (f"{flag('threads', threads)} is more than the {cores} core(s) this process may use: the threads take "
            f"turns, so the latency tail (p90, p99) measures the waiting, not the model; pass {flag('threads', cores)} "
            "or fewer")


def check_timing_args(warmup: int, iters: int, topk: int, flag: Callable[..., str] = cli_flag) -> None:
    """Raise ValueError (one line naming the option, as ``flag`` spells it: :func:`cli_flag`) for ``--warmup`` < 0,
    ``--iters`` < 1 or ``--topk`` < 1."""
    if warmup < 0:
        raise ValueError(f"{flag('warmup')} must be >= 0 (got {warmup})")
    if iters < 1:
        raise ValueError(f"{flag('iters')} must be >= 1 (got {iters})")
    if topk < 1:
        raise ValueError(f"{flag('topk')} must be >= 1 (got {topk})")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read bench records; lines that are not JSON objects of this schema are skipped (one that is not JSON at all,
    such as a line cut off by an interrupted write, with a warning naming it)."""
    out = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            print(f"warning: {path}:{n}: not JSON ({e.msg} at column {e.colno}; cut off by an interrupted write?); "
                  "skipped that line", file=sys.stderr)
            continue
        if isinstance(rec, dict) and rec.get("schema") == SCHEMA:
            out.append(rec)
    return out


def bench_file(model: str | Path, runtime: str = "ort-cpu", batches: Iterable[int] = (1,), threads: int | None = None,
               warmup: int = 10, iters: int = 50, profile: bool = False, topk: int = 10) -> list[dict[str, Any]]:
    """Load ``model`` (``.onnx`` or TensorRT engine) on ``runtime`` and benchmark it."""
    check_model_file(model, runtime)
    batches = [int(b) for b in batches]
    preload_runtime(runtime)
    before = rss_mb()
    runner = open_runner(model, runtime, threads=threads, batches=batches)
    gpu = gpu_process_memory_mb if runtime in ("ort-cuda", "ort-trt", "tensorrt") else None
    try:
        return bench_runner(runner, batches, warmup, iters, profile, topk, rss_before_load_mb=before, gpu_peak_mb=gpu)
    finally:
        runner.close()


def bench_files(models: Sequence[str | Path], runtime: str = "ort-cpu", batches: Iterable[int] = (1,),
                threads: int | None = None, warmup: int = 10, iters: int = 50, profile: bool = False,
                topk: int = 10) -> list[dict[str, Any]]:
    """Several ``models`` on ``runtime``, timed round-robin (:func:`bench_runners`): their ratios are fair on a
    shared machine, where one model timed after another can come out faster or slower by chance. The runs are
    split over one pass per model with the ONNX Runtime sessions created in a rotated order (``reopen`` in
    :func:`bench_runners`: the session created last runs faster); TensorRT engines (``tensorrt``) are timed in one
    pass (the effect was measured on ONNX Runtime sessions, and deserializing every engine once per file costs on a
    Jetson). ONNX Runtime sessions do not spin-wait here (a session's spinning workers would steal the cores from
    the next one)."""
    for model in models:
        check_model_file(model, runtime)
    batches = [int(b) for b in batches]

    def open_one(m: str | Path) -> Any:
        if runtime in _ORT_PROVIDERS:
            return OrtRunner(m, runtime, threads=threads, spin=False, batches=batches)
        return open_runner(m, runtime, threads=threads)

    def reopen(order: list[int]) -> list[Any]:
        for runner in live:
            runner.close()
        live.clear()
        created = {i: open_one(models[i]) for i in order}
        live.extend(created[i] for i in range(len(models)))
        return list(live)

    preload_runtime(runtime)
    before = rss_mb()
    live: list[Any] = [open_one(m) for m in models]
    gpu = gpu_process_memory_mb if runtime in ("ort-cuda", "ort-trt", "tensorrt") else None
    try:
        return bench_runners(list(live), batches, warmup, iters, profile, topk, rss_before_load_mb=before,
                             gpu_peak_mb=gpu, reopen=reopen if runtime in _ORT_PROVIDERS else None)
    finally:
        for runner in live:
            runner.close()


# --------------------------------------------------------------------------- CLI
def parse_batches(text: str, flag: str = "--batch") -> list[int]:
    """``--batch 1,8`` as ``[1, 8]``. A size given twice is refused, not merged: it is a typo (``8,1,8`` for
    ``8,1,16``?) that merging would hide, and timed twice it pooled both passes into one record at half the
    throughput."""
    try:
        out = [int(b) for b in str(text).split(",") if b.strip()]
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated positive integers, got '{text}'") from None
    if not out or any(b <= 0 for b in out):
        raise ValueError(f"{flag} must be comma-separated positive integers, got '{text}'")
    twice = next((b for i, b in enumerate(out) if b in out[:i]), None)
    if twice is not None:
        raise ValueError(f"{flag} '{text}' gives batch size {twice} more than once; give each size once")
    return out


def add_bench_arguments(p: argparse.ArgumentParser, runtimes: Sequence[str] = RUNTIMES[1:],
                        default_runtime: str | None = "ort-cpu") -> None:
    """The flags shared by this runner and ``distill bench``."""
    p.add_argument("--runtime", default=default_runtime, choices=list(runtimes),
                   help=f"where to run (default: {default_runtime or 'from the model type'})")
    p.add_argument("--batch", default="1", help="comma-separated batch sizes, each once (default: 1)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: runtime's choice)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs per batch (default: 10)")
    p.add_argument("--iters", type=int, default=50, help="timed runs per batch (default: 50)")
    p.add_argument("--out", default=None, help="append JSON lines to this .jsonl file (a new one, or one holding bench "
                   "records; default: print them)")
    p.add_argument("--profile", action="store_true", help="add onnxruntime's top ops by time to each record")
    p.add_argument("--topk", type=int, default=10, help="ops listed with --profile (default: 10)")
    p.add_argument("--interleave", action="store_true",
                   help="time several models round-robin (A B A B ...), so a shared machine's background load hits "
                        "them alike and their ratios are fair; memory figures are then the whole pass's "
                        "(default: one model after another)")


def format_record(r: dict[str, Any]) -> str:
    """One human line per record."""
    lat = r["latency_ms"]
    return (f"{r['model_name']} {r['runtime']} batch={r['batch']}: p50 {lat['p50']:.2f} ms, p90 {lat['p90']:.2f}, "
            f"p99 {lat['p99']:.2f}, {r['throughput_ips']:.1f} img/s; {threads_text(r)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="edge_runner.py", description="Latency of an ONNX model or TensorRT engine "
                                "(numpy + onnxruntime or tensorrt only), as distill bench JSON lines.")
    p.add_argument("model", nargs="+",
                   help=".onnx file(s), or TensorRT engine(s) (.engine/.plan) with --runtime tensorrt")
    add_bench_arguments(p)
    args = p.parse_args(argv)
    written: list[dict[str, Any]] = []

    def emit(records: list[dict[str, Any]]) -> None:  # as each model finishes: an interrupt keeps these
        for r in records:
            print(format_record(r), file=sys.stderr)
        if args.out:
            write_jsonl(records, args.out)
        else:
            for r in records:
                print(json.dumps(r), flush=True)
        written.extend(records)

    try:
        batches = parse_batches(args.batch)
        if args.threads is not None and args.threads < 1:
            raise ValueError(f"--threads must be >= 1, or left out for the runtime's choice (got {args.threads})")
        check_timing_args(args.warmup, args.iters, args.topk)
        oversubscribed = threads_warning(args.threads, args.runtime)
        if oversubscribed:
            print(f"warning: {oversubscribed}", file=sys.stderr)
        for m in args.model:  # every file before timing any
            check_model_file(m, args.runtime)
        for m in args.model:
            mismatch = flavour_warning(m, args.runtime)
            if mismatch:
                print(f"warning: {mismatch}", file=sys.stderr)
        if args.out:
            check_bench_out(args.out)
        if args.profile and args.runtime == "tensorrt":
            print("warning: --profile: runtime tensorrt has no op profiler here, records get no top_ops "
                  "(per-layer times: trtexec --loadEngine=ENGINE --dumpProfile)", file=sys.stderr)
        timing = (args.warmup, args.iters, args.profile, args.topk)
        if args.interleave:
            emit(bench_files(args.model, args.runtime, batches, args.threads, *timing))
        else:
            if len(args.model) > 1:  # one at a time: every model's batches before the first one's timing
                check_batches(args.model, args.runtime, batches)
            for m in args.model:
                emit(bench_file(m, args.runtime, batches, args.threads, *timing))
    except (RuntimeUnavailable, ValueError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1  # the distill CLI's convention: 1 for a runtime error, 2 (argparse) for bad usage
    except KeyboardInterrupt:
        where = f" in {args.out}" if args.out else " (printed above)"
        print(f"interrupted: kept the {len(written)} record(s) of the models that finished{where}" if written else
              "interrupted before any model finished: no record was written", file=sys.stderr)
        return 130
    if args.out:
        print(f"wrote {len(written)} record(s) to {args.out}", file=sys.stderr)
    return 0

if __name__ == "__main__":
    sys.exit(main())
