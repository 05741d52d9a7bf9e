#!/usr/bin/env bash
# Create ./.venv with a working PyTorch + torchvision stack and install distill into it.
#
# Why not a plain `pip install -e .`: torchvision's wheels on PyPI are built against PyPI's
# (CUDA) torch; a CPU-only torch wheel (as some machines carry in pip's find-links) lacks the
# torchvision ops ("operator torchvision::nms does not exist"). PyPI's CUDA build of torch
# runs fine on CPU, so we pin the matching pair from PyPI and check it imports.
#
# Usage: scripts/install.sh [EXTRAS]      e.g. scripts/install.sh dev, scripts/install.sh gpu,dev
#
# Always installs the `demo` extra (the built-in digits suite: `make demo`, `make test`) and one
# ONNX Runtime: the `cpu` extra (onnxruntime) unless EXTRAS names `gpu` or `tensorrt`
# (onnxruntime-gpu). Never both: they install the same module, and the CUDA provider can vanish.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
EXTRAS=${1:-}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.13.0 torchvision==0.28.0"}

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"

stack_ok() {
  "$PY" - <<'PY' 2>/dev/null
import torch, torchvision
torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
PY
}

if ! stack_ok; then
  echo "[install] installing $TORCH_SPEC from PyPI (ignoring local find-links wheels)"
  # An empty find-links and no config file: take torch from the index, not a local CPU wheel.
  PIP_FIND_LINKS= PIP_CONFIG_FILE=/dev/null "$PY" -m pip install -q --disable-pip-version-check $TORCH_SPEC
  stack_ok || { echo "[install] torch/torchvision still broken after install" >&2; exit 1; }
fi

case ",$EXTRAS," in
  *,gpu,*|*,tensorrt,*) RUNTIME="" ;;  # they bring onnxruntime-gpu
  *) RUNTIME="cpu," ;;
esac
target=".[${RUNTIME}demo${EXTRAS:+,$EXTRAS}]"
"$PY" -m pip install -q --disable-pip-version-check -e "$target"
echo "[install] ok: $("$PY" -c 'import torch, torchvision, open_clip, timm; print("torch", torch.__version__, "torchvision", torchvision.__version__, "open_clip", open_clip.__version__, "timm", timm.__version__)')"
