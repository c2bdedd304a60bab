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

.PHONY: all deps configure build test check sanitize lint format clean run stop conformance

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
SIM_SUMMARY = grep -hE '^(seeds|scenarios|simulated)|[0-9]+ passed' Testing/Temporary/LastTest.log || true

test: build
	@cd $(BUILD) && { ctest --output-on-failure -j$(JOBS); rc=$$?; $(SIM_SUMMARY); exit $$rc; }

# The markdown conformance scenarios alone (testcases/README.md); pass
# pytest options with ARGS, e.g. make conformance ARGS='-k ELECT --long'.
conformance: build
	@CRAFTD=$(BUILD)/src/craftd CRAFT_PROXY=$(BUILD)/harness/proxy/craft-proxy /usr/bin/python3 -m pytest -p no:cacheprovider testcases $(ARGS)

lint: build
	@bash ci/lint.sh $(BUILD)

sanitize: deps
	@cmake -S . -B $(SAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
	    -DCR_SANITIZE=address,undefined -DCR_SIM_SEEDS=$(SAN_SEEDS) \
	    $(CMAKE_ARGS) >/dev/null
	@cmake --build $(SAN_BUILD) -j$(JOBS)
	@cd $(SAN_BUILD) && { ctest --output-on-failure -j$(JOBS) -L 'unit|sim|storage'; rc=$$?; $(SIM_SUMMARY); exit $$rc; }

check: lint test sanitize

# Builds, starts a local 3-node cluster on 127.0.0.1:50051-50053 (data in a
# temporary directory), adds 5 and 3 through it and shows its status.
run: build
	@CRAFTD=$(BUILD)/src/craftd CRAFTCTL=$(BUILD)/src/craftctl bash ci/cluster.sh start 3
	@$(BUILD)/src/craftctl --endpoints 127.0.0.1:50051,127.0.0.1:50052,127.0.0.1:50053 add 5 3
	@$(BUILD)/src/craftctl --endpoints 127.0.0.1:50051,127.0.0.1:50052,127.0.0.1:50053 status
	@echo
	@echo "The cluster runs in the background. Talk to it with"
	@echo "  $(BUILD)/src/craftctl --endpoints 127.0.0.1:50051,127.0.0.1:50052,127.0.0.1:50053 add 10 -2"
	@echo "  export CRAFT_ENDPOINTS=127.0.0.1:50051,127.0.0.1:50052,127.0.0.1:50053; $(BUILD)/src/craftctl status"
	@echo "Stop it (and remove its data) with: make stop"

stop:
	@bash ci/cluster.sh stop

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(SAN_BUILD)
