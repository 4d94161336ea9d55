# `make grpc-stubs`: app/grpc's generated modules, from the vendored KServe proto (committed, so
# neither serving nor the container needs grpcio-tools; tests/test_grpc_stubs.py checks that
# they are what this command makes). Included by the Makefile; uses $(BIN) and $(DEV_STAMP).
GRPC_PROTO := app/grpc/grpc_predict_v2.proto

.PHONY: grpc-stubs
grpc-stubs: $(DEV_STAMP) ## regenerate app/grpc's protobuf and gRPC stubs from the vendored proto
	$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. $(GRPC_PROTO)
