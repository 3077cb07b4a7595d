# The README's two commands: `make demo` (end to end on a built-in example) and `make test`.
# Both create .venv/ and install what they need, starting with the pinned CPU build of torch so that
# no requirement lets pip fetch a newer, multi-GB build.
#
# Two more for the custom-op library's robustness:
#   make fuzz      long randomized run of the property-based fuzz test (tests/runtime/test_fuzz.py):
#                  FUZZ_EXAMPLES valid cases (default 3000; the other kinds scale with it) of the library on
#                  every CPU backend and of the fallback function, against the float64 reference, plus
#                  malformed attributes, other opset versions and resource bombs. The hypothesis seed is
#                  printed; NCNN_ONNX_FUZZ_SEED=<seed> replays a run. (`make test` runs a fixed,
#                  derandomized set of the same properties.)
#   make sanitize  builds the library with AddressSanitizer + UndefinedBehaviorSanitizer (CMake option
#                  NCNN_ONNX_SANITIZE, CPU kernels only) in build/sanitize, with the onnxruntime headers
#                  the normal install fetched, and runs tests/runtime and the layer's native-kernel tests
#                  against it (NCNN_ONNX_LIBRARY) with the ASan and UBSan runtimes preloaded into
#                  Python. Any finding aborts the process that hit it (halt_on_error; UBSan is built
#                  without recovery), and the test running the case fails with the report. Leaks:
#                  detect_leaks=0 for the run (Python and onnxruntime leave thousands of allocations at
#                  exit); test_fuzz.py's leak test reruns a share of the cases in a child with
#                  LeakSanitizer on and fails only on leaks allocated through the library.
#
# Packaging:
#   make compat    the oldest supported onnxruntime (COMPAT_ORT, default 1.18.0, with onnx 1.19.0, the oldest
#                  onnx pyproject allows) in its own venv, .venv-compat/, with the package installed from this
#                  tree, then tests/runtime against it. CI's `make test` covers the newest onnxruntime.
#   make headers   fetches onnxruntime's headers into build/onnxruntime-headers/ (what a wheel build in a
#                  container without network or apt can reuse through NCNN_ORT_WORK_DIR; docs/packaging.md)
#   make wheel     a CPU-only wheel into dist/ (NCNN_ONNX_CUDA=ON make wheel: the CUDA variant, +cuXY)
#   make smoke     CI's packaging check (.ci/test_wheel_smoke.py): the wheel built from a clean export of
#                  HEAD, installed into a fresh venv without torch, serving with the library and the fallback
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test fuzz sanitize bench install clean compat headers wheel smoke

# The native sources are prerequisites too: the editable install builds the custom-op library once and
# does not rebuild it on import, so a changed source re-runs the install (incremental in build/).
NATIVE_SOURCES := $(wildcard runtime/*.cc runtime/*.map runtime/cmake/*.cmake runtime/*/*.h runtime/*/*.cc \
	runtime/*/*.inc runtime/*/*.cu runtime/*/*.cuh)

$(STAMP): pyproject.toml CMakeLists.txt $(NATIVE_SOURCES)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q "scikit-build-core>=0.10" cmake ninja
	$(PY) -m pip install -q --no-build-isolation -e ".[torch,export,test,examples,bench]"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/digits_demo.py

test: $(STAMP)
	$(PY) -m pytest -q tests

FUZZ_EXAMPLES ?= 3000

fuzz: $(STAMP)
	NCNN_ONNX_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q -s tests/runtime/test_fuzz.py

SAN_DIR := build/sanitize
SAN_CXX ?= g++
# Python is not instrumented: leaks off (see above), a crash report at the first finding, and no single
# allocation over 3 GiB (a bomb the library failed to refuse fails its case instead of taking the machine's
# memory; the child processes of the fuzz test are not address-space capped under ASan).
SAN_ASAN_OPTIONS := detect_leaks=0:halt_on_error=1:allocator_may_return_null=1:max_allocation_size_mb=3072
SAN_UBSAN_OPTIONS := halt_on_error=1:print_stacktrace=1

sanitize: $(STAMP)
	@inc="$${ONNXRUNTIME_INCLUDE_DIR:-$$(ls -d $(CURDIR)/build/*/onnxruntime-headers/libonnxruntime-dev_*/usr/include/onnxruntime \
		2>/dev/null | grep -v '/sanitize/' | head -n 1)}"; \
	set -x; $(VENV)/bin/cmake -S . -B $(SAN_DIR) -G Ninja -DCMAKE_MAKE_PROGRAM=$(CURDIR)/$(VENV)/bin/ninja \
		-DCMAKE_CXX_COMPILER=$(SAN_CXX) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNCNN_ONNX_SANITIZE=ON \
		-DNCNN_ONNX_CUDA=OFF $${inc:+-DONNXRUNTIME_INCLUDE_DIR=$$inc}
	$(VENV)/bin/cmake --build $(SAN_DIR)
	NCNN_ONNX_LIBRARY=$(CURDIR)/$(SAN_DIR)/libncnn_onnx_ops.so \
	LD_PRELOAD="$$($(SAN_CXX) -print-file-name=libasan.so) $$($(SAN_CXX) -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=$(SAN_ASAN_OPTIONS) UBSAN_OPTIONS=$(SAN_UBSAN_OPTIONS) NCNN_ONNX_FUZZ_TIME_SCALE=5 \
		$(PY) -m pytest -q tests/runtime tests/test_native_depthwise.py tests/test_native_channels.py tests/test_native_conv.py tests/test_pointwise.py

COMPAT_VENV := .venv-compat
COMPAT_ORT ?= 1.18.0
COMPAT_ONNX ?= 1.19.0

# numpy<2: onnxruntime 1.18 was built against numpy 1.x. The package is installed with its
# dependencies pinned to the old versions, so pip also checks that its metadata admits them.
compat: $(STAMP)
	rm -rf $(COMPAT_VENV)
	$(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -m pip install -q --upgrade pip
	$(COMPAT_VENV)/bin/python -m pip install -q $(TORCH_PIN)
	$(COMPAT_VENV)/bin/python -m pip install -q "scikit-build-core>=0.10" cmake ninja
	$(COMPAT_VENV)/bin/python -m pip install -q --no-build-isolation -e ".[test,export]" "onnxruntime==$(COMPAT_ORT)" \
		"onnx==$(COMPAT_ONNX)" "numpy<2"
	$(COMPAT_VENV)/bin/python -c "import onnxruntime as o, onnx; print('compat: onnxruntime', o.__version__, \
		'onnx', onnx.__version__)"
	$(COMPAT_VENV)/bin/python -m pytest -q tests/runtime

headers:
	@cmake="$$(command -v cmake || echo $(VENV)/bin/cmake)"; \
	"$$cmake" -DNCNN_ORT_WORK_DIR=$(CURDIR)/build/onnxruntime-headers -P runtime/cmake/onnxruntime_headers.cmake

wheel: $(STAMP)
	cuda=$${NCNN_ONNX_CUDA:-OFF}; NCNN_ONNX_CUDA=$$cuda $(PY) -m pip wheel -q --no-deps --no-build-isolation \
		-C build-dir=build/wheel-cuda-$$cuda -w dist .
	@ls -l dist/*.whl

smoke: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider .ci/test_wheel_smoke.py

bench: $(STAMP)
	$(PY) benchmarks/layer.py

clean:
	rm -rf $(VENV) $(COMPAT_VENV) build dist
