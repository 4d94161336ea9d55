"""Training and evaluation of the delay models (run by `make export`)."""
