# What observability costs in-process (reports/observability.md); included by the Makefile.
# `make bench` runs the same benchmarks among the others; this runs them alone and keeps the JSON.
.PHONY: bench-observability
bench-observability: $(DEV_STAMP) ## drift per flight, traceparent scan, each optional layer on: reports/observability.json
	$(BIN)/pytest benchmarks/test_observability.py -p no:cacheprovider \
		--benchmark-columns=min,median,iqr,ops --benchmark-sort=name \
		--benchmark-json=$(REPORTS_DIR)/observability.json

.PHONY: metrics-archive
metrics-archive: $(DEV_STAMP) ## a scrape over 500 dead workers' metric files, archived or not: reports/metrics-archive.md
	$(BIN)/python -m benchmarks.metrics_archive --out $(REPORTS_DIR)

.PHONY: drift-replay
drift-replay: $(DEV_STAMP) ## each month of $(SCL_DATA) alone through a real server, its drift gauges: reports/drift-replay.md
	$(BIN)/python -m benchmarks.drift_replay --data $(SCL_DATA) --out $(REPORTS_DIR)
