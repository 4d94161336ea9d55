"""The serving frameworks a user would pick instead, serving the same ONNX models: `make compare-peers`.

Each peer (MLServer, BentoML, LitServe, PyTriton) and Granian runs from its own virtualenv under
build/peers/ (mk/peers.mk), never from the project's: they are benchmark subjects, not
dependencies. The peers' model code is `scoring`, which scores with the project's own
validation, feature encoder and onnxruntime sessions (no table), so that what differs between
the service and a peer is the serving stack alone.
"""
