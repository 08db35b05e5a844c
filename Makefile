# Tuneforge: the two commands are `make demo` and `make test`. Each installs
# what is missing (Debian packages, via scripts/install-deps.sh) and builds first.
BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)

.PHONY: all setup configure build test demo bench engine clean

all: build

setup:
	./scripts/install-deps.sh

configure: setup
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

# Every test: unit tests, then the end-to-end tests that start real servers,
# workers and CLI processes (marked RUN_SERIAL, so they run alone).
test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 600

demo: build
	./scripts/demo.sh $(BUILD_DIR)/bin

bench: build
	./bench/engine_threads.sh $(BUILD_DIR)/bin

# The engine and tuneforge-train alone, with libtorch only (for GPU hosts).
engine: setup
	cmake -S . -B $(BUILD_DIR)-engine -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) \
	  -DTUNEFORGE_ENGINE_ONLY=ON
	cmake --build $(BUILD_DIR)-engine -j $(JOBS)

clean:
	rm -rf $(BUILD_DIR) $(BUILD_DIR)-engine .demo
