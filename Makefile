# The two commands of the README; each creates the project-local virtual environment on first use.
#   make demo   the main job on the embedded default: train, evaluate, predict
#   make test   install what the tests and the docs need and run the whole suite
VENV  ?= .venv
PY    := $(VENV)/bin/python
# torch and torchvision pinned to the builds these machines serve from a local wheel store; elsewhere
# pick yours, e.g. `make test TORCH="torch torchvision"`.
TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test,docs]'
	touch $@

# Train a CIFAR-style ResNet-20 on the embedded digits, evaluate it on held-out digits, predict one image.
demo: $(VENV)/.installed
	$(VENV)/bin/resnetkit train --out runs/digits
	$(VENV)/bin/resnetkit eval runs/digits/best.safetensors
	$(VENV)/bin/resnetkit predict runs/digits/best.safetensors examples/digit_1.png

# One single-threaded pytest worker per core: 1.8x faster than one process using both cores for torch's kernels
# (2-core CPU, 11 min against 20; docs/development.md).
test: $(VENV)/.installed-test
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto
