# The two commands a newcomer needs:  `make demo`  and  `make test`.
# Each creates the virtual environment in .venv if it is missing, then does its job.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is installed first, pinned, so pip does not pick a multi-GB CUDA build on a CPU-only
# machine (this one keeps the 2.13.0 CPU wheel on disk). Elsewhere: `make TORCH=torch test`.
TORCH  ?= torch==2.13.0
OUT    ?= out/demo

.PHONY: demo test test-fast lint venv browser notebooks clean

demo: $(VENV)/.installed
	$(VENV)/bin/mechlab report --model smollm2-135m --out $(OUT)

# One pytest worker per core, each test file whole on one worker (a module's JupyterLab, kernel or
# Ray cluster starts once) and one torch thread per worker: most tests use one core at a time
# (imports, subprocesses, browsers, kernels), and two threads per worker on two cores would fight.
# Measured on this 2-core machine: see docs/architecture.md.
PYTEST := OMP_NUM_THREADS=1 $(PY) -m pytest -n auto --dist loadfile

test: lint browser
	$(PYTEST)

# For contributors: every test that needs no real model, browser, notebook or Ray cluster.
test-fast: lint
	$(PYTEST) -m "not slow and not browser and not notebook"

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

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test,sae]"
	touch $@

# The attention-view tests render pages in a real headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium not found: install it (Debian: apt-get install chromium) for the browser tests" >&2; fi; }

clean:
	rm -rf $(VENV) out
