# craft: a thin driver around CMake. `make check` is the test command:
# it installs what is missing, builds with -Werror, checks formatting and
# the purity of the core, runs every test, then builds and runs the unit and
# simulation and storage tests again under AddressSanitizer +
# UndefinedBehaviorSanitizer.

BUILD      ?= build
SAN_BUILD  ?= build-san
BUILD_TYPE ?= RelWithDebInfo
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
# Seeds of the randomized simulation in the sanitizer build (the normal
# build runs CR_SIM_SEEDS, 6000 by default).
SAN_SEEDS  ?= 600
CMAKE_ARGS ?=

.PHONY: all deps configure build test check sanitize lint format clean

all: build

deps:
	@bash ci/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_ARGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j$(JOBS)

# Every test of the normal build (ctest -L unit, -L sim for a subset).
# ctest keeps a test's output to itself unless it fails; the simulator's
# summary lines are worth seeing either way.
SIM_SUMMARY = grep -hE '^(seeds|scenarios|simulated)' Testing/Temporary/LastTest.log || true

test: build
	@cd $(BUILD) && { ctest --output-on-failure -j$(JOBS); rc=$$?; $(SIM_SUMMARY); exit $$rc; }

lint: build
	@bash ci/lint.sh $(BUILD)

sanitize: deps
	@cmake -S . -B $(SAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
	    -DCR_SANITIZE=address,undefined -DCR_SIM_SEEDS=$(SAN_SEEDS) \
	    $(CMAKE_ARGS) >/dev/null
	@cmake --build $(SAN_BUILD) -j$(JOBS)
	@cd $(SAN_BUILD) && { ctest --output-on-failure -j$(JOBS) -L 'unit|sim|storage'; rc=$$?; $(SIM_SUMMARY); exit $$rc; }

check: lint test sanitize

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(SAN_BUILD)
