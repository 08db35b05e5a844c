# Tuneforge: the two commands are `make demo` and `make test`. Each installs
# what is missing (Debian packages, via scripts/install-deps.sh) and builds first.
BUILD_DIR ?= build
# ccache keys its entries by paths relative to the checkout, so a clone in
# another folder (CI's) reuses what an earlier build on this machine compiled.
export CCACHE_BASEDIR := $(CURDIR)
export CCACHE_NOHASHDIR := 1
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)

.PHONY: all setup configure build test demo bench engine settings tsan asan asan-core fuzz fuzz-smoke clean

all: build

setup:
	./scripts/install-deps.sh

configure: setup
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

# Every test: unit tests, the end-to-end tests that start real servers,
# workers and CLI processes (marked RUN_SERIAL, so they run alone), and the
# scheduler core's tests under ThreadSanitizer.
test: build
	./scripts/test-oracles.sh $(BUILD_DIR)/npm
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 600
	$(MAKE) tsan
	$(MAKE) asan-core
	$(MAKE) fuzz-smoke

demo: build
	./scripts/demo.sh $(BUILD_DIR)/bin

bench: build
	./bench/engine_threads.sh $(BUILD_DIR)/bin
	./bench/lora.sh $(BUILD_DIR)/bin
	./bench/data_parallel.sh $(BUILD_DIR)/bin
	./bench/ops.sh $(BUILD_DIR)/bin
	./bench/train_speed.sh $(BUILD_DIR)/bin
	./bench/upload.sh $(BUILD_DIR)/bin 50 200
	./bench/tokenizer.sh $(BUILD_DIR)/bin 8
	./bench/engine_options.sh $(BUILD_DIR)/bin
	./bench/scheduler.sh $(BUILD_DIR)/bin

# Rewrites the training settings' generated blocks of job.proto and README.md
# from common/training_settings.def; settings_test fails until they match.
settings: configure
	cmake --build $(BUILD_DIR) --target tuneforge-settings-docs
	$(BUILD_DIR)/bin/tuneforge-settings-docs --write .

# The engine and tuneforge-train alone, with libtorch only (for GPU hosts).
engine: setup
	cmake -S . -B $(BUILD_DIR)-engine -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) \
	  -DTUNEFORGE_ENGINE_ONLY=ON
	cmake --build $(BUILD_DIR)-engine -j $(JOBS)

# The scheduler core's tests under ThreadSanitizer.
tsan: setup
	cmake -S . -B $(BUILD_DIR)-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTUNEFORGE_TSAN=ON
	cmake --build $(BUILD_DIR)-tsan -j $(JOBS) --target server_core_test
	TSAN_OPTIONS=halt_on_error=1 $(BUILD_DIR)-tsan/bin/server_core_test

# The whole suite (every binary, the end-to-end tests included) under
# AddressSanitizer and UndefinedBehaviorSanitizer; about half an hour here.
ASAN_ENV = ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1
asan: setup
	cmake -S . -B $(BUILD_DIR)-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTUNEFORGE_ASAN=ON
	cmake --build $(BUILD_DIR)-asan -j $(JOBS)
	./scripts/test-oracles.sh $(BUILD_DIR)-asan/npm
	cd $(BUILD_DIR)-asan && $(ASAN_ENV) ctest --output-on-failure -j $(JOBS) --timeout 1200

# What `make test` runs of it, in about a minute: the unit tests of the
# parsers and the blob store (the fuzz smokes add the parsers on hostile
# input; the scheduler core runs under TSan).
ASAN_CORE_TESTS = dataset_test safetensors_test model_config_test blob_store_test
asan-core: setup
	cmake -S . -B $(BUILD_DIR)-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTUNEFORGE_ASAN=ON
	cmake --build $(BUILD_DIR)-asan -j $(JOBS) --target $(ASAN_CORE_TESTS)
	for t in $(ASAN_CORE_TESTS); do \
	  $(ASAN_ENV) $(BUILD_DIR)-asan/bin/$$t --gtest_brief=1 || exit 1; done

# Fuzz targets (libFuzzer with AddressSanitizer and UBSan) for the parsers
# that read what clients send: dataset records, safetensors headers,
# config.json and tokenizer.json.
# `make fuzz` runs each for FUZZ_SECONDS; `make test` runs a short smoke.
FUZZ_SECONDS ?= 300
FUZZ_DIR = $(BUILD_DIR)-fuzz
FUZZ_TARGETS = dataset safetensors model_config tokenizer
FUZZ_FLAGS = -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -I.
FUZZ_ABSL = -labsl_statusor -labsl_status
$(FUZZ_DIR)/dataset_fuzzer: common/dataset.cc common/dataset_validator.cc \
    tests/fuzz/dataset_fuzzer.cc common/dataset.h common/dataset_validator.h common/json_view.h \
    common/utf8.h
	mkdir -p $(FUZZ_DIR)
	clang++-14 $(FUZZ_FLAGS) -DTUNEFORGE_HAVE_SIMDJSON=1 $(filter %.cc,$^) -lsimdjson -o $@
$(FUZZ_DIR)/safetensors_fuzzer: common/safetensors.cc common/file_util.cc \
    tests/fuzz/safetensors_fuzzer.cc common/safetensors.h
	mkdir -p $(FUZZ_DIR)
	clang++-14 $(FUZZ_FLAGS) $(filter %.cc,$^) $(FUZZ_ABSL) -o $@

$(FUZZ_DIR)/model_config_fuzzer: common/model_config.cc tests/fuzz/model_config_fuzzer.cc \
    common/model_config.h
	mkdir -p $(FUZZ_DIR)
	clang++-14 $(FUZZ_FLAGS) $(filter %.cc,$^) $(FUZZ_ABSL) -o $@
$(FUZZ_DIR)/tokenizer_fuzzer: text/bpe_tokenizer.cc common/file_util.cc \
    tests/fuzz/tokenizer_fuzzer.cc text/bpe_tokenizer.h
	mkdir -p $(FUZZ_DIR)
	clang++-14 $(FUZZ_FLAGS) $(filter %.cc,$^) -lpcre2-8 $(FUZZ_ABSL) -o $@

fuzz: setup $(FUZZ_TARGETS:%=$(FUZZ_DIR)/%_fuzzer)
	for t in $(FUZZ_TARGETS); do mkdir -p $(FUZZ_DIR)/corpus-$$t; \
	  $(FUZZ_DIR)/$${t}_fuzzer -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
	    $(FUZZ_DIR)/corpus-$$t tests/fuzz/corpus/$$t || exit 1; done

fuzz-smoke: setup $(FUZZ_TARGETS:%=$(FUZZ_DIR)/%_fuzzer)
	@for t in $(FUZZ_TARGETS); do mkdir -p $(FUZZ_DIR)/corpus-$$t; \
	  $(FUZZ_DIR)/$${t}_fuzzer -max_total_time=15 -max_len=4096 $(FUZZ_DIR)/corpus-$$t \
	    tests/fuzz/corpus/$$t >$(FUZZ_DIR)/smoke-$$t.log 2>&1 || \
	    { tail -60 $(FUZZ_DIR)/smoke-$$t.log; exit 1; }; \
	  echo "fuzz-smoke $$t: $$(grep -o 'Done [0-9]* runs in [0-9]* second(s)' \
	    $(FUZZ_DIR)/smoke-$$t.log), no crash"; done

clean:
	rm -rf $(BUILD_DIR) $(BUILD_DIR)-engine $(BUILD_DIR)-tsan $(BUILD_DIR)-asan $(BUILD_DIR)-fuzz .demo
