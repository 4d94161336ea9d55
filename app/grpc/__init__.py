"""The Open Inference Protocol over gRPC: KServe V2's `GRPCInferenceService`.

`grpc_predict_v2.proto` is KServe's, vendored unchanged (see README.md); the `_pb2` message
modules beside it are generated from it by `make grpc-stubs`. Every worker serves it on
GRPC_BIND from its own event loop (app.server.worker), through the same data plane as the REST
routes (app.dataplane): `codec` translates the messages, `servicer` holds the methods and
`calls` times and counts each call and maps its errors to status codes. `health` serves gRPC's
standard health service beside it (`health.proto`, grpc-proto's, vendored too).

Import `app.grpc.server` only to serve: its generated messages live in the `inference` proto
package, as tritonclient.grpc's do, and protobuf refuses both in one process.
"""
