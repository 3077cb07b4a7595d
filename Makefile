# The README's two commands: `make demo` (end to end on a built-in example) and `make test`.
# Both create .venv/ and install what they need, starting with the pinned CPU build of torch so that
# no requirement lets pip fetch a newer, multi-GB build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test bench install clean

# The native sources are prerequisites too: the editable install builds the custom-op library once and
# does not rebuild it on import, so a changed source re-runs the install (incremental in build/).
NATIVE_SOURCES := $(wildcard runtime/*.cc runtime/*.map runtime/cmake/*.cmake runtime/*/*.h runtime/*/*.cc \
	runtime/*/*.inc runtime/*/*.cu runtime/*/*.cuh)

$(STAMP): pyproject.toml CMakeLists.txt $(NATIVE_SOURCES)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q "scikit-build-core>=0.10" cmake ninja
	$(PY) -m pip install -q --no-build-isolation -e ".[torch,export,test,examples]"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/digits_demo.py

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) benchmarks/layer.py

clean:
	rm -rf $(VENV) build
