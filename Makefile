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

.PHONY: setup test serve lint lock toy-model bench clean

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

# make serve EAD_DEFAULTS='{"decay": 13.5}' makes EAD the default for every request;
# SERVE_ARGS passes further `ead-vllm serve` (= `vllm serve`) flags.
SERVE_ARGS ?=
EAD_DEFAULTS ?=
PORT ?= 8000
serve: setup
	VLLM_CPU_KVCACHE_SPACE=$${VLLM_CPU_KVCACHE_SPACE:-1} \
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

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
