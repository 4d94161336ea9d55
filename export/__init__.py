"""ONNX export of the trained models, with the parity check that guards it (`make export`)."""
