# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
# Headless rendering through Mesa's EGL (llvmpipe on a CPU-only machine).
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: venv demo test bench reproduce images

$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

demo: venv
	$(PY) demo.py

test: venv
	$(PY) -m pytest -q tests

# The paper's pipeline, Table I and the learning curves (about 4-6 h on 2 cores); run it again
# after an interruption and it continues. The default backbone is tiny16ctx; the earlier tiny16
# run's archive is results/reproduce (add --backbone tiny16 to continue or rebuild it).
RUN_DIR ?= $(HOME)/goal-push-grasp-reproduce-tiny16ctx
reproduce: venv
	$(PY) reproduce.py --run_dir $(RUN_DIR) --archive results/reproduce-tiny16ctx

# The README's pictures (images/), from the archived stage-1 snapshot and logs when present.
images: venv
	$(PY) images/make_images.py

bench: venv
	$(PY) bench/sim.py
	$(PY) bench/models.py
