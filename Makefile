# The README's commands. Each target installs what it needs first, through
# scripts/install-deps.sh (the same script .ci/run and the Dockerfile use).
#
#   make run    install, build, and start serving on the built-in defaults
#   make test   install, build, and run the whole test suite
#   make bench  ghostserve's GhostNet against eager PyTorch, and the service
#               against the raw model (each prints one JSON line)

BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
PYTHON := /usr/bin/python3

.PHONY: all deps configure build test run bench format clean

all: build

deps:
	scripts/install-deps.sh

configure: deps
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 900

run: build
	$(BUILD_DIR)/bin/ghostserve $(ARGS)

bench: build
	$(PYTHON) scripts/bench_model.py --build $(BUILD_DIR)
	$(PYTHON) scripts/bench_service.py --build $(BUILD_DIR)

format:
	clang-format -i $$(git ls-files '*.cc' '*.h')

clean:
	rm -rf $(BUILD_DIR)
