# Tuneforge: the two commands are `make demo` and `make test`. Each installs
# what is missing (Debian packages, via scripts/install-deps.sh) and builds first.
BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)

.PHONY: all setup configure build test demo bench engine tsan clean

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
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 600
	$(MAKE) tsan

demo: build
	./scripts/demo.sh $(BUILD_DIR)/bin

bench: build
	./bench/engine_threads.sh $(BUILD_DIR)/bin

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

clean:
	rm -rf $(BUILD_DIR) $(BUILD_DIR)-engine $(BUILD_DIR)-tsan .demo
