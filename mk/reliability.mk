# Reliability and security experiments (reports/reliability.md); included by the Makefile. Uses
# $(BIN), $(DEV_STAMP), $(REPORTS_DIR), and $(WRK_DIR), $(WRK) and `bodies` from mk/stress.mk.
RELIABILITY_DIR ?= $(REPORTS_DIR)/reliability
FUZZ_CASES ?= 10000
WIRE_FUZZ_CASES ?= 4000
WIRE_FUZZ_GRPC_CASES ?= 2000
CHAOS_DURATION ?= 45
SOAK_DURATION ?= 600

OVERLOAD_DURATION ?= 15
OVERLOAD_ROUNDS ?= 3
OVERLOAD_ARGS ?=

.PHONY: fuzz fuzz-wire chaos soak overload audit edge-overhead
fuzz: $(DEV_STAMP) ## property + OpenAPI fuzzing, $(FUZZ_CASES)+ generated requests in-process; zero 5xx, every answer as documented
	FUZZ_CASES=$(FUZZ_CASES) FUZZ_REPORT=$(RELIABILITY_DIR)/fuzz.json \
		$(BIN)/pytest tests/test_fuzz.py -p no:cacheprovider -q

fuzz-wire: $(DEV_STAMP) ## $(WIRE_FUZZ_CASES) mutated raw HTTP requests (pipelined, chunked, trickled, half-closed, upgrade offers) and $(WIRE_FUZZ_GRPC_CASES) gRPC messages against gunicorn as deployed: no 5xx or INTERNAL, whole valid requests all answered, every answer counted in /metrics, no traceback, no worker lost
	$(BIN)/python -m benchmarks.wire_fuzz --cases $(WIRE_FUZZ_CASES) --grpc-cases $(WIRE_FUZZ_GRPC_CASES) --out $(RELIABILITY_DIR)

chaos: bodies ## worker SIGKILL, model reload (SIGHUP), a 20-SIGHUP storm and SIGTERM experiments under $(CHAOS_DURATION)-s wrk runs
	$(BIN)/python -m benchmarks.chaos all --duration $(CHAOS_DURATION) --wrk $(WRK) \
		--bodies $(WRK_DIR)/minimal.jsonl --out $(RELIABILITY_DIR)

soak: bodies ## $(SOAK_DURATION) s of steady wrk load, worker RSS sampled every 10 s: < 5 % growth, zero errors
	$(BIN)/python -m benchmarks.soak --duration $(SOAK_DURATION) --wrk $(WRK) \
		--wrk-dir $(WRK_DIR) --out $(RELIABILITY_DIR)

overload: bodies ## wrk at 16-1,024 connections re-sending at once or honouring Retry-After, in-flight bound on and off; single-flight latency beside the largest batches
	nice $(BIN)/python -m benchmarks.overload --duration $(OVERLOAD_DURATION) \
		--rounds $(OVERLOAD_ROUNDS) --wrk $(WRK) --bodies $(WRK_DIR)/minimal.jsonl \
		--full-bodies $(WRK_DIR)/full.jsonl --out $(RELIABILITY_DIR) $(OVERLOAD_ARGS)

audit: $(DEV_STAMP) ## pip-audit of requirements.lock (needs PyPI's vulnerability data over the network)
	$(BIN)/pip-audit --requirement requirements.lock --no-deps --disable-pip --progress-spinner off

edge-overhead: $(DEV_STAMP) ## in-process cost of the request-ID middleware and the guarded HTTP protocol
	$(BIN)/python -m benchmarks.edge_overhead
