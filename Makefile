# keel - the two commands a new machine needs:
#   make run     install what is missing, build, start keeld (dashboard on :8080)
#   make check   install what is missing, build, run every test through ctest
# Other targets: asan, tsan, clang, fuzz, bench, chaos, install, format, clean.

BUILD   ?= build
JOBS    ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE   ?= cmake
CTEST   ?= ctest
PREFIX  ?= /usr/local

.PHONY: all deps build run check asan tsan clang fuzz bench chaos install format clean

all: build

deps:
	@scripts/deps.sh

build: deps
	@$(CMAKE) -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@$(CMAKE) --build $(BUILD) -j $(JOBS)

# keeld with the sample jobs (etc/keeld/jobs.json) and the demo handlers;
# state in $(BUILD)/keeld-data. Ctrl-C stops it (it drains first).
KEELD_ARGS ?=
run: build
	@mkdir -p $(BUILD)/keeld-data
	./$(BUILD)/cmd/keeld/keeld --data-dir $(BUILD)/keeld-data --jobs etc/keeld/jobs.json --demo --log-format console $(KEELD_ARGS)

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

# Each libFuzzer harness of fuzz/ for FUZZ_SECONDS (Clang, ASan + UBSan),
# starting from its seed corpus; new inputs stay in build-fuzz/corpus/.
FUZZ_SECONDS ?= 60
fuzz: deps
	@CC=clang $(CMAKE) -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKEEL_SANITIZE=fuzz -DKEEL_BUILD_BENCH=OFF -DKEEL_BUILD_EXAMPLES=OFF -DBUILD_TESTING=OFF >/dev/null
	@$(CMAKE) --build build-fuzz -j $(JOBS)
	@for h in build-fuzz/fuzz/fuzz_*; do \
		name=$$(basename $$h | sed 's/^fuzz_//'); \
		mkdir -p build-fuzz/corpus/$$name; \
		echo "fuzz: $$name for $(FUZZ_SECONDS) s"; \
		dict=; test -f fuzz/$$name.dict && dict=-dict=fuzz/$$name.dict; \
		if ! $$h -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $$dict \
			build-fuzz/corpus/$$name fuzz/corpus/$$name >build-fuzz/$$name.log 2>&1; then \
			tail -n 40 build-fuzz/$$name.log; \
			echo "fuzz: $$name found a crash (build-fuzz/$$name.log)"; exit 1; \
		fi; \
		grep -E '^stat::number_of_executed_units' build-fuzz/$$name.log; \
	done

bench:
	@scripts/deps.sh bench
	bench/run.sh
	bench/run-policies.sh
	bench/run-pool.sh
	bench/run-obs.sh
	bench/run-store.sh
	bench/run-keeld.sh
	bench/run-cluster.sh
	bench/run-http.sh

# The chaos harness of keeld's cluster mode in full (docs/cluster.md):
# a throwaway PostgreSQL, 3 nodes, 300 jobs firing every second, 60 SIGKILLs,
# 5 database stops, about 8 minutes; then the checks from the database.
# CHAOS_ARGS adds options, e.g. CHAOS_ARGS="--seed 42 --keep".
CHAOS_ARGS ?=
chaos: build
	./$(BUILD)/tests/chaos/keel-chaos --nodes 3 --jobs 300 --kills 60 --pg-stops 5 $(CHAOS_ARGS)

install: build
	$(CMAKE) --install $(BUILD) --prefix $(PREFIX)

format:
	clang-format -i include/*.h include/keel/*.h src/*/*.[ch] tests/*.h tests/*/*.c examples/*.c bench/*.c

clean:
	rm -rf build build-asan build-tsan build-clang build-bench build-fuzz
