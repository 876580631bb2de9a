# keel - the two commands a new machine needs:
#   make run     install what is missing, build, run the main job
#   make check   install what is missing, build, run every test through ctest
# Other targets: asan, tsan, clang, bench, install, format, clean.

BUILD   ?= build
JOBS    ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE   ?= cmake
CTEST   ?= ctest
PREFIX  ?= /usr/local

.PHONY: all deps build run check asan tsan clang bench install format clean

all: build

deps:
	@scripts/deps.sh

build: deps
	@$(CMAKE) -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@$(CMAKE) --build $(BUILD) -j $(JOBS)

run: build
	./$(BUILD)/examples/keel_demo

check: build
	$(CTEST) --test-dir $(BUILD) --output-on-failure -j $(JOBS)

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer (Clang).
asan: deps
	@CC=clang $(CMAKE) -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DKEEL_SANITIZE=address -DKEEL_BUILD_BENCH=OFF >/dev/null
	@$(CMAKE) --build build-asan -j $(JOBS)
	$(CTEST) --test-dir build-asan --output-on-failure -j $(JOBS)

# The threaded tests (label "threads") under ThreadSanitizer (Clang).
tsan: deps
	@CC=clang $(CMAKE) -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKEEL_SANITIZE=thread -DKEEL_BUILD_BENCH=OFF >/dev/null
	@$(CMAKE) --build build-tsan -j $(JOBS)
	$(CTEST) --test-dir build-tsan --output-on-failure -j $(JOBS) -L threads

# The whole suite built by Clang (the default build uses GCC).
clang: deps
	@CC=clang $(CMAKE) -S . -B build-clang -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@$(CMAKE) --build build-clang -j $(JOBS)
	$(CTEST) --test-dir build-clang --output-on-failure -j $(JOBS)

bench:
	@scripts/deps.sh bench
	bench/run.sh
	bench/run-policies.sh
	bench/run-pool.sh
	bench/run-obs.sh
	bench/run-http.sh

install: build
	$(CMAKE) --install $(BUILD) --prefix $(PREFIX)

format:
	clang-format -i include/*.h include/keel/*.h src/*/*.[ch] tests/*.h tests/*/*.c examples/*.c bench/*.c

clean:
	rm -rf build build-asan build-tsan build-clang build-bench
