# The flight-delay service: gunicorn + uvicorn workers serving the ONNX models in models/.
#
#   docker build -t latam-delay .   # anywhere a registry is reachable: the public python:3.11-slim
#   make image                      # buildah, no registry: passes its own base, made locally by
#                                   # debootstrap (BASE_IMAGE=localhost/latam-python-base:bookworm)
#
# Every stage uses the same base: the venv's python is a link to the base's interpreter.
ARG BASE_IMAGE=python:3.11-slim

# ---- requirements: [project].dependencies out of pyproject.toml ----
# Its own stage so that an edit elsewhere in pyproject.toml (tool settings) leaves the builder's
# pip layer cached: that layer is keyed on this file's content only.
FROM ${BASE_IMAGE} AS requirements
COPY pyproject.toml /tmp/pyproject.toml
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /runtime-requirements.txt

# ---- builder: the project's runtime dependencies and the project itself, in /opt/venv ----
FROM ${BASE_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
WORKDIR /src

# Only [project].dependencies, never the train/dev extras: no scikit-learn or pandas in the image.
# requirements.lock pins the versions the models were exported and tested with.
COPY --from=requirements /runtime-requirements.txt /tmp/runtime-requirements.txt
COPY requirements.lock /tmp/requirements.lock
RUN /opt/venv/bin/pip install --quiet -c /tmp/requirements.lock -r /tmp/runtime-requirements.txt

COPY pyproject.toml ./
COPY README.md ./
COPY app ./app
COPY train ./train
COPY export ./export
# Non-editable, without dependencies: the code lands in the venv's site-packages. Then the venv
# sheds what serving never imports: pip and setuptools, numpy's test suite, onnxruntime's
# model-conversion tooling (transformers/, quantization/). The import check below guards it.
RUN /opt/venv/bin/pip install --quiet --no-deps . \
    && /opt/venv/bin/python -m pip uninstall --quiet --yes pip setuptools \
    && cd /opt/venv/lib/python3*/site-packages \
    && rm -rf numpy/tests numpy/*/tests onnxruntime/transformers onnxruntime/quantization \
    && cd /src \
    && /opt/venv/bin/python -c "import app.main, onnxruntime, numpy" \
    && ! /opt/venv/bin/python -c "import sklearn" 2>/dev/null \
    && ! /opt/venv/bin/python -c "import pandas" 2>/dev/null

# ---- runtime: the venv, the models, the gunicorn config; a non-root user ----
FROM ${BASE_IMAGE}
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app
COPY --from=builder /opt/venv /opt/venv
WORKDIR /srv/app
COPY gunicorn.conf.py ./
COPY models ./models

LABEL org.opencontainers.image.title="latam-delay" \
      org.opencontainers.image.description="Flight-delay (>15 min) prediction service for SCL: gunicorn + uvicorn workers, onnxruntime"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MODELS_DIR=/srv/app/models

# The release check (app/inference/check_models.py, `make check-models`) on exactly what the image will
# serve: models that do not load, warm up or reproduce the export's probabilities fail the build.
# Before USER: nothing runs after it (tests/test_security.py).
RUN python -m app.inference.check_models "$MODELS_DIR"
USER 10001:10001
EXPOSE 8000
EXPOSE 8001
# No curl in the image: python's urllib, on the port the server listens on (app.settings: BIND,
# else PORT, which platforms such as Cloud Run set, else 8000; no BIND above, so that PORT counts).
# urlopen raises on a non-2xx.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = (os.environ.get('BIND', '').strip() or ':' + (os.environ.get('PORT', '').strip() or '8000')).rsplit(':', 1)[-1]; urllib.request.urlopen(f'http://127.0.0.1:{port}/v2/health/ready', timeout=2)"]
CMD ["gunicorn", "-c", "gunicorn.conf.py", "app.main:create_app()"]
