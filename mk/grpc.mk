# `make grpc-stubs`: app/grpc's generated message modules, from the vendored protos (KServe's OIP, gRPC's health)
# (committed, so neither serving nor the container needs grpcio-tools; tests/test_grpc_stubs.py
# checks that they are what this command makes; app/grpc/servicer.py registers the service). Included by the Makefile; uses $(BIN) and $(DEV_STAMP).
GRPC_PROTO := app/grpc/grpc_predict_v2.proto app/grpc/health.proto

.PHONY: grpc-stubs
grpc-stubs: $(DEV_STAMP) ## regenerate app/grpc's protobuf messages from the vendored proto
	$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. $(GRPC_PROTO)

# `make compare-grpc` (run by `make compare` too): gRPC ModelInfer against the REST OIP route,
# single-flight and 1000-flight, alternating rounds, into $(REPORTS_DIR)/grpc.md: wrk drives
# REST, h2load (Debian's nghttp2-client) gRPC. Uses $(COMPARE_*) from mk/compare.mk and
# $(WRK_DIR), $(WRK) and `bodies` from mk/stress.mk.
H2LOAD ?= h2load

.PHONY: compare-grpc
compare-grpc: bodies | $(DEV_STAMP) ## gRPC ModelInfer vs the REST OIP route, same flights (about 5 minutes)
	$(BIN)/python -m benchmarks.grpc_load --rounds $(COMPARE_ROUNDS) --duration $(COMPARE_DURATION) \
		--threads $(COMPARE_THREADS) --wrk $(WRK) --h2load $(H2LOAD) --wrk-dir $(WRK_DIR) \
		--out $(REPORTS_DIR)

compare: compare-grpc

# `make grpc-reload`: what a gRPC client meets across model reloads (app.server.handoff): calls on
# new connections from GRPC_RELOAD_CLIENTS threads while GRPC_RELOADS SIGHUPs follow one another;
# fails if any call fails. Writes $(REPORTS_DIR)/$(GRPC_RELOAD_NAME).md. Without
# net.ipv4.tcp_migrate_req=1 it can fail on a connection reset as a listener closes
# (docs/grpc.md, Reloads).
GRPC_RELOADS ?= 10
GRPC_RELOAD_CLIENTS ?= 2
GRPC_RELOAD_KEPT_CLIENTS ?= 4
GRPC_RELOAD_NAME ?= grpc-reload

.PHONY: grpc-reload
grpc-reload: | $(DEV_STAMP) ## gRPC calls on new connections across $(GRPC_RELOADS) SIGHUP reloads: none may fail (reports/grpc-reload.md)
	$(BIN)/python -m benchmarks.grpc_reload --reloads $(GRPC_RELOADS) \
		--clients $(GRPC_RELOAD_CLIENTS) --out $(REPORTS_DIR) --name $(GRPC_RELOAD_NAME)

# `make grpc-reload-kept`: the same with each client thread keeping one connection for all its
# calls (a long-lived client's), into $(REPORTS_DIR)/grpc-reload-kept.md; fails if any call fails.
# Known to fail now and then: grpcio cancels a call that reaches a worker as its server stops
# (grpc/grpc#41785), docs/grpc.md.
.PHONY: grpc-reload-kept
grpc-reload-kept: | $(DEV_STAMP) ## gRPC calls on kept connections across $(GRPC_RELOADS) SIGHUP reloads (reports/grpc-reload-kept.md)
	$(BIN)/python -m benchmarks.grpc_reload --reloads $(GRPC_RELOADS) --kept-connections \
		--clients $(GRPC_RELOAD_KEPT_CLIENTS) --out $(REPORTS_DIR) --name grpc-reload-kept

# `make grpc-reload-kept-retrying`: the same, the clients configured as docs/grpc.md advises
# (deploy/grpc/service-config.json: UNAVAILABLE and CANCELLED retried), into
# $(REPORTS_DIR)/grpc-reload-kept-retrying.md; fails if any call fails after its retries.
.PHONY: grpc-reload-kept-retrying
grpc-reload-kept-retrying: | $(DEV_STAMP) ## grpc-reload-kept with clients that retry as deploy/grpc/service-config.json says (reports/grpc-reload-kept-retrying.md)
	$(BIN)/python -m benchmarks.grpc_reload --reloads $(GRPC_RELOADS) --kept-connections \
		--retrying --clients $(GRPC_RELOAD_KEPT_CLIENTS) --out $(REPORTS_DIR) \
		--name grpc-reload-kept-retrying
