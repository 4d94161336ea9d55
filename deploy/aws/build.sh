#!/usr/bin/env bash
# Builds the Lambda code bundle that deploy/aws/template.yaml deploys (CodeUri: build/lambda):
#   - the service's runtime dependencies ([project].dependencies, pinned by requirements.lock, less
#     the HTTP server's) and mangum, as Linux wheels for the function's Python and architecture,
#     whatever this machine is;
#   - the project's packages (app/, ...), without its models: the function reads them from S3;
#   - deploy/aws/handler.py at the bundle's root (Handler: handler.handler).
#
#   deploy/aws/build.sh
#   PYTHON_VERSION=3.12  must match the template's Runtime (python3.12)
#   ARCH=x86_64          must match the template's Architectures (aarch64 for arm64)
#   OUT=build/lambda
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON_VERSION=${PYTHON_VERSION:-3.12}
ARCH=${ARCH:-x86_64}
OUT=${OUT:-build/lambda}
PYTHON=${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}

requirements=$(mktemp)
source_copy=$(mktemp -d)
trap 'rm -rf "$requirements" "$source_copy"' EXIT
"$PYTHON" - "$requirements" <<'EOF'
import re
import sys
import tomllib

# The HTTP server stack (gunicorn and its uvicorn workers, uvloop, httptools) stays out: on Lambda,
# Mangum turns API Gateway events into ASGI calls and there is no socket to serve.
SERVER_ONLY = {"gunicorn", "uvicorn-worker", "uvloop", "httptools"}

with open("pyproject.toml", "rb") as handle:
    dependencies = tomllib.load(handle)["project"]["dependencies"]
kept = [d for d in dependencies if re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0] not in SERVER_ONLY]
with open(sys.argv[1], "w") as out:
    out.write("\n".join([*kept, "mangum"]) + "\n")
EOF

# Wheels for any glibc up to Amazon Linux 2023's 2.34: pip takes the listed tags only.
platforms=()
for tag in manylinux_2_34 manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014; do
    platforms+=(--platform "${tag}_$ARCH")
done

rm -rf "${OUT:?}"
mkdir -p "$OUT"
"$PYTHON" -m pip install --quiet --disable-pip-version-check --no-compile --target "$OUT" \
    "${platforms[@]}" --python-version "$PYTHON_VERSION" --implementation cp \
    --only-binary=:all: -c requirements.lock -r "$requirements"
# The project itself is pure Python: built from source, no dependencies (installed above), from a
# copy so that setuptools leaves no build/lib behind in the work tree.
cp -r pyproject.toml README.md app train export "$source_copy"/
"$PYTHON" -m pip install --quiet --disable-pip-version-check --no-compile --target "$OUT" \
    --no-deps "$source_copy"
cp deploy/aws/handler.py "$OUT/handler.py"
# What serving never imports (as in the Dockerfile): numpy's tests, onnxruntime's tooling.
rm -rf "${OUT:?}"/numpy/tests "$OUT"/numpy/*/tests "$OUT"/onnxruntime/transformers \
    "$OUT"/onnxruntime/quantization "${OUT:?}"/bin
echo "built $OUT ($(du -sh "$OUT" | cut -f1)) for python$PYTHON_VERSION on $ARCH"
