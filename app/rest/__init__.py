"""The REST transport: routes, the HTTP edge, the Open Inference Protocol's REST codec and the
OpenAPI description. It only translates; the model side does the work."""
