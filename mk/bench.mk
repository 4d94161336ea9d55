# In-process latency benchmarks (pytest-benchmark); included by the Makefile. Kept out of the
# default test run: timing never gates `make test`.
BENCH_STORAGE ?= .benchmarks
BENCH_ARGS = -p no:cacheprovider --benchmark-storage=$(BENCH_STORAGE) \
	--benchmark-columns=min,median,iqr,ops --benchmark-sort=name

.PHONY: bench bench-compare bench-ort lambda-local
bench: $(DEV_STAMP) ## in-process latency of /predict, OIP infer and the bare onnxruntime call; saved to .benchmarks/, reports/latency.json and reports/latency.md
	$(BIN)/pytest benchmarks $(BENCH_ARGS) --benchmark-autosave --benchmark-json=$(REPORTS_DIR)/latency.json
	$(BIN)/python -m benchmarks.latency_report $(REPORTS_DIR)/latency.json --out $(REPORTS_DIR)/latency.md

bench-compare: $(DEV_STAMP) ## run the benchmarks again and compare with the last saved run
	$(BIN)/pytest benchmarks $(BENCH_ARGS) --benchmark-autosave \
		$(if $(wildcard $(BENCH_STORAGE)/*/*.json),--benchmark-compare,)

bench-ort: $(DEV_STAMP) ## onnxruntime session options and the most micro-batching could save, in-process (reports/benchmarks-ort.md)
	$(BIN)/python -m benchmarks.ort_options --out $(REPORTS_DIR)

lambda-local: $(DEV_STAMP) ## the Lambda handler locally: import, cold start and a /predict event's time, table and onnxruntime full (reports/lambda-local.md)
	$(BIN)/python -m benchmarks.lambda_local --out $(REPORTS_DIR)
