# The README's commands. Each target installs what it needs first, through
# scripts/install-deps.sh (the same script .ci/run and the Dockerfile use).
#
#   make run    install, build, and start serving on the built-in defaults
#   make test   install, build, and run the whole test suite
#   make bench  ghostserve's GhostNet against ONNX Runtime, TorchScript and
#               eager PyTorch (BENCH_ARGS=--quick for a smoke run), against
#               eager PyTorch, the service against the raw model, and each
#               precision the CPU offers in process (natively and as an
#               AVX2-only CPU) and through the service (each prints one
#               JSON line)
#
# Hardening (each in its own build directory; the sanitizer ones also install
# clang and the sanitizer runtimes: scripts/install-deps.sh --sanitizers):
#   make fuzz   libFuzzer + ASan/UBSan on the image preprocessing, the pickle
#               reader and the safetensors reader, FUZZ_SECONDS (60) each;
#               prints executions and findings per fuzzer
#   make asan   unit + integration tests and a quick soak under ASan + UBSan
#   make tsan   the batcher, serving-core and HTTP-server tests under
#               ThreadSanitizer
#   make soak   SOAK_SECONDS (60) of mixed and hostile load on a real server,
#               refusal times, and a shed-rate run; one JSON line

BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
PYTHON := /usr/bin/python3

.PHONY: all deps configure build test run bench format clean fuzz asan tsan soak sanitizer-deps

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
	scripts/install-deps.sh --bench
	$(PYTHON) scripts/bench_ort.py --build $(BUILD_DIR) $(BENCH_ARGS)
	$(PYTHON) scripts/bench_model.py --build $(BUILD_DIR)
	$(PYTHON) scripts/bench_service.py --build $(BUILD_DIR)
	$(PYTHON) scripts/bench_model_precision.py --build $(BUILD_DIR)
	$(PYTHON) scripts/bench_model_precision.py --build $(BUILD_DIR) --max-isa AVX2
	$(PYTHON) scripts/bench_precision.py --build $(BUILD_DIR)

sanitizer-deps:
	scripts/install-deps.sh --sanitizers

FUZZ_SECONDS ?= 60
FUZZ_BUILD_DIR ?= build-fuzz
fuzz: sanitizer-deps
	cmake -S tests/fuzz -B $(FUZZ_BUILD_DIR) -DCMAKE_CXX_COMPILER=clang++-14
	cmake --build $(FUZZ_BUILD_DIR) -j $(JOBS)
	rc=0; \
	tests/fuzz/run.sh $(FUZZ_BUILD_DIR)/preprocess_fuzzer $(FUZZ_SECONDS) $(FUZZ_BUILD_DIR) || rc=1; \
	tests/fuzz/run.sh $(FUZZ_BUILD_DIR)/pickle_fuzzer $(FUZZ_SECONDS) $(FUZZ_BUILD_DIR)/pickle \
	  tests/fuzz/pickle || rc=1; \
	tests/fuzz/run.sh $(FUZZ_BUILD_DIR)/safetensors_fuzzer $(FUZZ_SECONDS) \
	  $(FUZZ_BUILD_DIR)/safetensors tests/fuzz/safetensors || rc=1; \
	exit $$rc

# GCC's ASan + UBSan on our code; LibTorch, OpenCV, gRPC stay uninstrumented.
# Suppressions and why: tests/sanitizers/. A 64 MB quarantine keeps the soak's
# memory bound meaningful.
ASAN_BUILD_DIR ?= build-asan
ASAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
ASAN_TARGETS := ghostnet_test state_dict_test inference_test batcher_test image_test \
  fuzz_corpus_test status_map_test config_test model_config_test train_dataset_test \
  server_test ghostserve
ASAN_ENV := ASAN_OPTIONS=quarantine_size_mb=64:detect_leaks=1:suppressions=$(CURDIR)/tests/sanitizers/asan.supp \
  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/sanitizers/lsan.supp:print_suppressions=0 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:suppressions=$(CURDIR)/tests/sanitizers/ubsan.supp
asan: sanitizer-deps
	cmake -S . -B $(ASAN_BUILD_DIR) -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-g -O1" \
	  -DCMAKE_CXX_FLAGS="$(ASAN_FLAGS)" -DCMAKE_EXE_LINKER_FLAGS="$(ASAN_FLAGS)" \
	  -DCMAKE_SHARED_LINKER_FLAGS="$(ASAN_FLAGS)"
	$(ASAN_ENV) cmake --build $(ASAN_BUILD_DIR) -j $(JOBS) --target $(ASAN_TARGETS)
	cd $(ASAN_BUILD_DIR) && $(ASAN_ENV) ctest --output-on-failure -j $(JOBS) --timeout 1800 \
	  -E '_NOT_BUILT$$|^parity|^deploy_|^fashion_e2e$$'

# ThreadSanitizer on the batcher and its tests only (they do not link
# LibTorch, whose uninstrumented OpenMP would report false races). The
# concurrency stress test runs 20 more times on its own.
TSAN_BUILD_DIR ?= build-tsan
TSAN_FLAGS := -fsanitize=thread -fno-omit-frame-pointer
TSAN_ENV := TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$(CURDIR)/tests/tsan.supp
tsan: sanitizer-deps
	cmake -S . -B $(TSAN_BUILD_DIR) -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-g -O1" \
	  -DCMAKE_CXX_FLAGS="$(TSAN_FLAGS)" -DCMAKE_EXE_LINKER_FLAGS="$(TSAN_FLAGS)"
	$(TSAN_ENV) cmake --build $(TSAN_BUILD_DIR) -j $(JOBS) --target batcher_test inference_core_test \
	  inference_executor_test http_server_test model_repository_test
	cd $(TSAN_BUILD_DIR) && $(TSAN_ENV) ctest --output-on-failure -j $(JOBS) \
	  -R '^(BatcherTest|InferenceCoreTest|InferenceCoreOptionsTest|InferenceExecutorTest|HttpServerTest|ModelRepositoryTest|VersionPolicyTest)\.'
	$(TSAN_ENV) $(TSAN_BUILD_DIR)/bin/inference_core_test --gtest_repeat=20
	$(TSAN_ENV) $(TSAN_BUILD_DIR)/bin/http_server_test --gtest_repeat=10
	$(TSAN_ENV) $(TSAN_BUILD_DIR)/bin/inference_executor_test --gtest_repeat=10
	$(TSAN_ENV) $(TSAN_BUILD_DIR)/bin/model_repository_test --gtest_repeat=5
	$(TSAN_ENV) $(TSAN_BUILD_DIR)/bin/batcher_test --gtest_repeat=20 \
	  --gtest_filter='BatcherTest.ConcurrentSubmitCancelAndDrainAnswerEveryAcceptedTaskOnce'

SOAK_SECONDS ?= 60
soak: build
	$(PYTHON) scripts/soak.py --ghostserve $(BUILD_DIR)/bin/ghostserve --duration $(SOAK_SECONDS) \
	  --refusal 50 --overload 15

format:
	clang-format -i $$(git ls-files '*.cc' '*.h')

clean:
	rm -rf $(BUILD_DIR)
