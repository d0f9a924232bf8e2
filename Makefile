# noiseprop: set-up, main job, tests. Everything runs in a local .venv; torch is pinned to the
# CPU build 2.13.0 (constraints.txt), so no CUDA build is pulled in.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

.PHONY: install run compare test test-slow docs clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

## The main job: the study (report in results/study/report.html).
run: install
	$(BIN)/noiseprop study --output results/study --resume

## The first result of the README: theory against simulation on a deep symmetric sigmoid network.
compare: install
	$(BIN)/noiseprop compare --width 100 --depth 20 --activation sigmoid --input 0.659046 \
	    --noise AU=1e-3,AC=1e-3 --repeats 20000 --method symmetric --method covariance --method meanfield

## The test suite: lint, unit and statistical tests, doctests (slow tier excluded).
test: install
	$(BIN)/ruff check src tests scripts
	$(BIN)/python -m pytest

## Long statistical runs, many seeds: NOISEPROP_TEST_SEEDS=0-19 make test-slow
test-slow: install
	$(BIN)/python -m pytest -m slow

## The README's quoted outputs and numbers, rewritten from the code (scripts/readme.py; --check: diff only).
docs: install
	$(BIN)/python scripts/readme.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache .hypothesis

## Benchmarks (issue 6): prints every ratio and rewrites BENCHMARKS.md; `make bench BENCH_ARGS=--quick`
## for a smoke run. The aihwkit comparison needs `bash benchmarks/setup_aihwkit.sh` first (optional).
.PHONY: bench
bench: install
	$(BIN)/python -m benchmarks $(BENCH_ARGS)
