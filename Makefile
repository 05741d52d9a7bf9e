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
# lint: ruff on the whole tree, mypy on the files [tool.mypy] lists (configs, records, report, bench, cli, utils, data, student, robust, export, teacher, train, strategies, top level)
lint: install-dev
	$(PY) -m ruff check .
	$(PY) -m mypy

# lint first: a lint or type error fails `make test` before pytest starts
test: lint
	$(PY) -m pytest -q -ra
