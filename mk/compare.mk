# `make compare`: side-by-side wrk benchmark of the service, its variants, the framework ceiling
# and a FastAPI + pandas + pickle reference. Included by the Makefile; uses $(BIN), $(DEV_STAMP),
# $(REPORTS_DIR), and $(WRK_DIR), $(BODIES_DATA), $(WRK) and `bodies` from mk/stress.mk.
REFERENCE_MODEL ?= build/reference/model.pkl
COMPARE_ROUNDS ?= 3
COMPARE_DURATION ?= 10
COMPARE_CONNECTIONS ?= 64
COMPARE_THREADS ?= 2
COMPARE_VARIANTS ?=

.PHONY: compare compare-http reference
compare: compare-http ## side-by-side benchmark of the service and its variants: HTTP (compare-http), then gRPC (compare-grpc)

compare-http: bodies $(REFERENCE_MODEL) ## the HTTP part of `make compare` alone: reports/benchmarks.* (about 10 minutes; COMPARE_VARIANTS=a,b for some)
	$(BIN)/python -m benchmarks.compare --rounds $(COMPARE_ROUNDS) --duration $(COMPARE_DURATION) \
		--connections $(COMPARE_CONNECTIONS) --threads $(COMPARE_THREADS) --wrk $(WRK) \
		--wrk-dir $(WRK_DIR) --reference-model $(REFERENCE_MODEL) --out $(REPORTS_DIR) \
		$(if $(COMPARE_VARIANTS),--variants $(COMPARE_VARIANTS))

reference: $(REFERENCE_MODEL) ## train the FastAPI reference's pickle (compare only, never served)

# The data scientist's pickled pipeline, trained from the real data into a git-ignored directory.
$(REFERENCE_MODEL): $(BODIES_DATA) benchmarks/reference_fastapi.py | $(DEV_STAMP)
	$(BIN)/python -m benchmarks.reference_fastapi --data $(BODIES_DATA) --out $@
