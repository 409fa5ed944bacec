# The two commands a newcomer needs:  `make demo`  and  `make test`.
# Each creates the virtual environment in .venv if it is missing, then does its job.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is installed first, pinned, so pip does not pick a multi-GB CUDA build on a CPU-only
# machine (this one keeps the 2.13.0 CPU wheel on disk). Elsewhere: `make TORCH=torch test`.
TORCH  ?= torch==2.13.0
OUT    ?= out/demo

.PHONY: demo test test-fast test-kernels lint venv browser notebooks clean

demo: $(VENV)/.installed
	$(VENV)/bin/mechlab report --model smollm2-135m --out $(OUT)

# One pytest worker per core, each test file whole on one worker (a module's JupyterLab, kernel or
# Ray cluster starts once) and one torch thread per worker: most tests use one core at a time
# (imports, subprocesses, browsers, kernels), and two threads per worker on two cores would fight.
# Measured on this 2-core machine: see docs/architecture.md.
PYTEST := OMP_NUM_THREADS=1 $(PY) -m pytest -n auto --dist loadfile

# The fast numerics-sensitive tests (marked numerics) of the modules that compare bits, train or
# rank also run once under another kernel path (MKL's most portable, MKL_CBWR=COMPATIBLE): a test
# that holds only for this CPU's rounding fails here, not on a user's machine. About a minute; the
# parity tests' tolerances and the slow tests are left to `make test-kernels`.
KERNEL_CHECKED := tests/test_lens.py tests/test_features.py tests/test_loading.py \
  tests/test_training.py tests/test_tuned_lens.py tests/test_heads.py tests/test_circuits.py \
  tests/test_grokking.py
test: lint browser
	$(PYTEST) -m "not seeds"
	MKL_CBWR=COMPATIBLE $(PYTEST) -m "numerics and not slow and not seeds" $(KERNEL_CHECKED)

# For contributors: every test that needs no real model, browser, notebook or Ray cluster.
test-fast: lint
	$(PYTEST) -m "not slow and not browser and not notebook and not seeds"

# Every numerics-sensitive test (bits compared, training, an argmax pinned; the extra seeds of the
# training tests too) under each kernel path this machine can show: the native one, MKL's
# conditional-numerical-reproducibility modes, and ATen's unvectorized kernels; then the fast tier
# with one and two threads per worker (a reduction's order changes with the threads).
# See "Tests that hold on every CPU" in docs/architecture.md.
KERNEL_PATHS := native MKL_CBWR=COMPATIBLE MKL_CBWR=AVX2 ATEN_CPU_CAPABILITY=default
test-kernels: lint
	@failed=""; \
	for setting in $(KERNEL_PATHS); do \
	  echo "== $$setting"; start=$$(date +%s); \
	  env $$([ "$$setting" = native ] || echo "$$setting") OMP_NUM_THREADS=1 \
	    $(PY) -m pytest -n auto --dist load -m numerics -q || failed="$$failed $$setting"; \
	  echo "== $$setting: $$(( $$(date +%s) - start )) s"; done; \
	for threads in 1 2; do \
	  echo "== OMP_NUM_THREADS=$$threads, fast tier"; start=$$(date +%s); \
	  OMP_NUM_THREADS=$$threads $(PY) -m pytest -n auto --dist loadfile -q \
	    -m "not slow and not browser and not notebook and not seeds" || failed="$$failed threads=$$threads"; \
	  echo "== OMP_NUM_THREADS=$$threads: $$(( $$(date +%s) - start )) s"; done; \
	if [ -n "$$failed" ]; then echo "== failed under:$$failed"; exit 1; fi; echo "== every kernel path passed"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy

venv: $(VENV)/.installed

# The experiment scripts are the source (# %% cells); this makes .ipynb files of them beside them,
# for Jupyter users (git ignores them).
notebooks: $(VENV)/.installed
	for script in experiments/[0-9]*.py; do \
	  $(VENV)/bin/jupytext --quiet --to ipynb "$$script" -o "$${script%.py}.ipynb"; done

# torch (and uv) by pip, which honours this machine's pip configuration (its wheel on disk, its
# constraints); the rest by uv, which keeps the torch it finds and resolves the same versions as pip
# in a tenth of the time (measured here: 8 s against 83 s; the set of packages is identical).
# With pip only: `make INSTALL="$(PY) -m pip install" test`.
INSTALL ?= $(VENV)/bin/uv pip install --python $(PY)
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH)" uv
	$(INSTALL) --quiet -e ".[test,sae,text]"
	touch $@

# The attention-view tests render pages in a real headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium not found: install it (Debian: apt-get install chromium) for the browser tests" >&2; fi; }

clean:
	rm -rf $(VENV) out
