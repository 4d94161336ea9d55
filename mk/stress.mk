# wrk stress test of POST /predict; included from the Makefile (uses $(BIN), $(SCL_DATA), $(DEV_STAMP),
# $(REPORTS_DIR)). Bodies are drawn from the real data into a git-ignored directory: never commit them.

# $(SCL_DATA), the Makefile's real-data setting.
BODIES_DATA ?= $(SCL_DATA)
WRK_DIR ?= build/wrk
WRK ?= wrk
STRESS_DIR ?= $(REPORTS_DIR)/stress
STRESS_DURATION ?= 45
STRESS_CONNECTIONS ?= 64
STRESS_THREADS ?= 2
STRESS_MIN_REQUESTS ?= 50000
STRESS_BODIES ?= $(WRK_DIR)/minimal.jsonl
STRESS_ARGS = --connections $(STRESS_CONNECTIONS) --threads $(STRESS_THREADS) \
	--bodies $(STRESS_BODIES) --wrk $(WRK)

.PHONY: bodies stress stress-smoke
bodies: $(WRK_DIR)/minimal.jsonl ## generate wrk bodies from the data

# One run writes every body file (benchmarks.bodies.FILES); minimal.jsonl stands for them all.
$(WRK_DIR)/minimal.jsonl: $(BODIES_DATA) benchmarks/bodies.py | $(DEV_STAMP)
	$(BIN)/python -m benchmarks.bodies --data $(BODIES_DATA) --out $(WRK_DIR)

stress: bodies ## 45-second wrk stress of the served API; fails under 50,000 requests or on any error
	$(BIN)/python -m benchmarks.stress --duration $(STRESS_DURATION) $(STRESS_ARGS) \
		--out $(STRESS_DIR) --min-requests $(STRESS_MIN_REQUESTS)

stress-smoke: bodies ## a 5-second stress run
	$(BIN)/python -m benchmarks.stress --duration 5 $(STRESS_ARGS) \
		--out build/stress-smoke --min-requests 1000
