"""Fake ``polygraphy run`` (tests only): records its argv, feeds the data loader script's batches to a
stand-in model and saves its "logits" where --save-outputs says, in the fake comparator's format.

The stand-in logits are the per-channel means of each image plus a constant (4 classes); a ``--trt``
run flips the prediction of the first image of each batch, so engine-vs-ORT agreement is below 100 %.
A model named in ``POLYGRAPHY_FAIL`` (comma-separated: an engine, or an ONNX file for the ``--onnxrt`` run) fails
as a real run that cannot execute it does: an error line, exit 1, no outputs saved. A model named in
``POLYGRAPHY_SHORT`` saves one batch fewer, so comparing its outputs fails (shapes differ). A model named in
``POLYGRAPHY_HANG`` waits (``POLYGRAPHY_LOG.hang`` says it is waiting) until Ctrl-C, which it turns into SIGTERM as
polygraphy's TensorRT logger does (``polygraphy/backend/trt/util.py``).
"""
import importlib.util
import json
import os
import signal
import sys
import time

import numpy as np

args = sys.argv[1:]
with open(os.environ["POLYGRAPHY_LOG"], "a") as f:
    f.write(" ".join(args) + "\n")
assert args[0] == "run", args
if args[1] in os.environ.get("POLYGRAPHY_FAIL", "").split(","):
    print(f"[E] fake polygraphy: cannot run {args[1]}")
    sys.exit(1)
if args[1] in os.environ.get("POLYGRAPHY_HANG", "").split(","):
    signal.signal(signal.SIGINT, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
    open(os.environ["POLYGRAPHY_LOG"] + ".hang", "w").close()
    time.sleep(60)
script, func = args[args.index("--data-loader-script") + 1].split(":")
spec = importlib.util.spec_from_file_location("loader", script)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
iterations = []
for feed in getattr(mod, func)():
    (x,) = feed.values()
    logits = np.concatenate([x.mean(axis=(2, 3)), np.zeros((len(x), 1), np.float32)], axis=1)
    if "--trt" in args:
        top = int(logits[0].argmax())
        logits[0, (top + 1) % logits.shape[1]] = logits[0].max() + 1.0  # another class wins
    iterations.append(logits.tolist())
if args[1] in os.environ.get("POLYGRAPHY_SHORT", "").split(","):
    iterations = iterations[:-1]
out = args[args.index("--save-outputs") + 1]
with open(out, "w") as f:
    json.dump({"runner": "trt-runner" if "--trt" in args else "onnxrt-runner", "iterations": iterations,
               "batches": [len(i) for i in iterations]}, f)
