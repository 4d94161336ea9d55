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
# One 45-s run per body mix: minimal flights (the table path, as served by default), then
# full-schedule flights (onnxruntime full); each writes $(STRESS_DIR)/<mix>/README.md.
STRESS_MIXES ?= minimal full
STRESS_ARGS = --connections $(STRESS_CONNECTIONS) --threads $(STRESS_THREADS) --wrk $(WRK)

.PHONY: bodies stress stress-smoke open-loop hpa-signal
bodies: $(WRK_DIR)/minimal.jsonl ## generate wrk bodies from the data

# One run writes every body file (benchmarks.bodies.FILES); minimal.jsonl stands for them all.
$(WRK_DIR)/minimal.jsonl: $(BODIES_DATA) benchmarks/bodies.py | $(DEV_STAMP)
	$(BIN)/python -m benchmarks.bodies --data $(BODIES_DATA) --out $(WRK_DIR)

# The revision is taken once, before the first run: the first mix's fresh report would otherwise
# make the tree look changed to the second.
stress: bodies ## 45-second wrk stress of the served API, minimal then full-schedule bodies; fails under 50,000 requests or on any error in either
	@status=0; revision="$$($(BIN)/python -c 'from benchmarks.stress import revision; print(revision())')"; \
	for mix in $(STRESS_MIXES); do \
		$(BIN)/python -m benchmarks.stress --duration $(STRESS_DURATION) $(STRESS_ARGS) \
			--bodies $(WRK_DIR)/$$mix.jsonl --out $(STRESS_DIR)/$$mix --revision "$$revision" \
			--min-requests $(STRESS_MIN_REQUESTS) || status=1; \
	done; exit $$status

stress-smoke: bodies ## a 5-second stress run of each body mix
	@status=0; for mix in $(STRESS_MIXES); do \
		$(BIN)/python -m benchmarks.stress --duration 5 $(STRESS_ARGS) \
			--bodies $(WRK_DIR)/$$mix.jsonl --out build/stress-smoke/$$mix \
			--min-requests 1000 || status=1; \
	done; exit $$status

# Open-loop latency below saturation (benchmarks/open_loop.py): one worker on the first CPU, the
# client and wrk on the other, the no-op ceiling served beside the service at the same rates.
OPEN_LOOP_LOADS ?= 0.2 0.35 0.5 0.65 0.8
OPEN_LOOP_SECONDS ?= 12
OPEN_LOOP_ROUNDS ?= 3
open-loop: bodies ## latency at fixed Poisson arrival rates (fractions of wrk's saturation), service and no-op ceiling alternated: reports/open-loop.md (about 13 minutes)
	$(BIN)/python -m benchmarks.open_loop --bodies $(WRK_DIR) --out $(REPORTS_DIR) \
		--loads $(OPEN_LOOP_LOADS) --seconds $(OPEN_LOOP_SECONDS) --rounds $(OPEN_LOOP_ROUNDS) \
		--wrk $(WRK)

# Candidate HPA signals (benchmarks/open_loop.py, the service alone, as open-loop): the workers'
# CPU utilisation and the scraped requests_in_flight against the arrival rate, up to 0.9 of
# saturation, where a queue forms.
HPA_SIGNAL_LOADS ?= 0.2 0.35 0.5 0.65 0.8 0.9
hpa-signal: bodies ## CPU utilisation and requests_in_flight (scraped each second) against fixed arrival rates, as an HPA would read them: reports/hpa-signal/open-loop.md (about 9 minutes)
	$(BIN)/python -m benchmarks.open_loop --bodies $(WRK_DIR) --out $(REPORTS_DIR)/hpa-signal \
		--servers service --loads $(HPA_SIGNAL_LOADS) --seconds $(OPEN_LOOP_SECONDS) \
		--rounds $(OPEN_LOOP_ROUNDS) --wrk $(WRK) --scrape-every 1 --command "make hpa-signal"
