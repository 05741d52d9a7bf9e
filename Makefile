# Two entry points (see README): `make demo` and `make test`. Both install into ./.venv first, with the
# cpu ONNX Runtime and the demo data extras (scripts/install.sh; `scripts/install.sh gpu,dev` for onnxruntime-gpu).
PY := .venv/bin/python
.PHONY: install install-dev demo lint test

install:
	bash scripts/install.sh

install-dev:
	bash scripts/install.sh dev

demo: install
	.venv/bin/distill demo --out demo_out
# lint: ruff on the whole tree, mypy on the files [tool.mypy] lists (the whole distill package and two benchmarks)
lint: install-dev
	$(PY) -m ruff check .
	$(PY) -m mypy

# lint first: a lint or type error fails `make test` before pytest starts. The suite runs on TEST_WORKERS processes
# (pytest-xdist; each test uses one thread, so 2 fills CI's 2 cores: ~13 minutes of tests in about half that);
# `make test TEST_WORKERS=0` runs it in one process. worksteal: the minute-long tests do not leave one core idle.
TEST_WORKERS ?= 2
test: lint
	$(PY) -m pytest -q -ra -n $(TEST_WORKERS) --dist worksteal
