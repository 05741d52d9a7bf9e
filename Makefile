# Two entry points (see README): `make demo` and `make test`. Both install into ./.venv first, with the
# cpu ONNX Runtime and the demo data extras (scripts/install.sh; `scripts/install.sh gpu,dev` for onnxruntime-gpu).
PY := .venv/bin/python
.PHONY: install install-dev demo test

install:
	bash scripts/install.sh

install-dev:
	bash scripts/install.sh dev

demo: install
	.venv/bin/distill demo --out demo_out

test: install-dev
	$(PY) -m pytest -q -ra
