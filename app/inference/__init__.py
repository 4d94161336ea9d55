"""The model side: the request contract, the feature encoder, the ONNX models, micro-batching
and the release check a model directory passes before it goes live."""
