"""A TensorRT engine against ONNX Runtime on the export's calibration images: top-1 agreement.

Standalone (numpy, and polygraphy where the engine is checked): ``distill export`` copies this
file next to ``build_engine.sh`` as ``tensorrt_check.py``, with the calibration images in
``tensorrt_check_images.npz``. The script then runs, for each engine::

    polygraphy run SOURCE.onnx --onnxrt --data-loader-script tensorrt_check.py:load_data --save-outputs ort.json
    polygraphy run ENGINE --model-type engine --trt --data-loader-script tensorrt_check.py:load_data --save-outputs trt.json
    python3 tensorrt_check.py ort.json trt.json --name "ENGINE vs ORT on SOURCE.onnx"

Polygraphy's own comparison checks tolerances per output, not how often the predicted class
agrees, so the last step reads both saved outputs (polygraphy's ``RunResults``) and prints the
top-1 agreement over all images.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

IMAGES_FILE = "tensorrt_check_images.npz"  # next to this file in an export folder


def normalize(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """[n, H, W, 3] uint8 -> [n, 3, H, W] float32, ``(x / 255 - mean) / std`` (the export's arithmetic)."""
    x = images.astype(np.float32).transpose(0, 3, 1, 2) / np.float32(255.0)
    m = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((x - m) / s)


def load_data(path: str | Path | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Polygraphy data loader: ``{input_name: [b, 3, H, W] float32}`` batches of the calibration images.

    Batches have the optimization profile's opt size; a last batch smaller than its min is left out.
    """
    with np.load(Path(path) if path else Path(__file__).with_name(IMAGES_FILE)) as z:
        images, mean, std = z["images"], z["mean"], z["std"]
        name, batch, min_batch = str(z["input_name"]), int(z["batch"]), int(z["min_batch"])
    for i, size in zip(range(0, len(images), batch), batch_sizes(len(images), batch, min_batch)):
        yield {name: normalize(images[i:i + size], mean, std)}


def batch_sizes(n: int, batch: int, min_batch: int) -> list[int]:
    """The sizes of the batches :func:`load_data` makes of ``n`` images: full ``batch`` ones, then the rest of them
    unless it is smaller than ``min_batch`` (the batches polygraphy runs each engine at)."""
    return [s for s in (min(batch, n - i) for i in range(0, n, batch)) if s >= min_batch]


def saved_outputs(path: str | Path, output: str = "logits") -> np.ndarray:
    """``output`` of every iteration of the one runner in polygraphy's ``--save-outputs`` file, [N, ...]."""
    from polygraphy.comparator import RunResults  # lazy: present where engines are checked, not needed to import this

    runs = list(RunResults.load(str(path)).items())
    if len(runs) != 1:
        raise SystemExit(f"{path}: expected the outputs of one runner, found {[name for name, _ in runs]}")
    iterations = runs[0][1]
    if not iterations or any(output not in it for it in iterations):
        raise SystemExit(f"{path}: no output '{output}' in its iterations")
    return np.concatenate([np.asarray(it[output], dtype=np.float32) for it in iterations])


def agreement(reference: np.ndarray, test: np.ndarray) -> tuple[int, int, float]:
    """(images whose top-1 class agrees, images, max |logit difference|) of two [N, C] logit arrays."""
    if reference.shape != test.shape:
        raise SystemExit(f"outputs differ in shape: {reference.shape} vs {test.shape}")
    same = int((reference.argmax(-1) == test.argmax(-1)).sum())
    return same, int(reference.shape[0]), float(np.abs(reference - test).max()) if reference.size else 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Top-1 agreement of two polygraphy --save-outputs files "
                                            "(e.g. ONNX Runtime and a TensorRT engine) on the same inputs.")
    p.add_argument("reference", help="polygraphy --save-outputs JSON of the reference (ONNX Runtime)")
    p.add_argument("test", help="polygraphy --save-outputs JSON of the engine")
    p.add_argument("--name", default="engine vs reference", help="label of the printed line")
    p.add_argument("--output", default="logits", help="output tensor compared (default: logits)")
    args = p.parse_args(argv)
    same, n, diff = agreement(saved_outputs(args.reference, args.output), saved_outputs(args.test, args.output))
    print(f"{args.name}: top-1 agreement {100.0 * same / max(n, 1):.2f} % ({same}/{n} calibration images), "
          f"max |logit diff| {diff:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
