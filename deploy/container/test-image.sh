#!/usr/bin/env bash
# Builds the service image with buildah (no Docker engine needed) and serves /predict from it.
#
#   deploy/container/test-image.sh               build, run, check, stop; exits non-zero on failure
#   deploy/container/test-image.sh --build-only  build only (what `make image` does)
#
#   IMAGE            tag to build      (default localhost/latam-delay:test)
#   BASE_IMAGE       base of every stage (default localhost/latam-python-base:bookworm, made by
#                    make-base-image.sh when it is a localhost/ name buildah does not have yet)
#   BUILD_CA_BUNDLE  CA bundle mounted read-only over the build's own while RUN steps run, so pip
#                    reaches PyPI through a TLS-intercepting proxy; never copied into the image.
#                    Default: this machine's /etc/ssl/certs/ca-certificates.crt; empty: none.
#   READY_TIMEOUT    seconds to wait for /v2/health/ready (default 90)
#   REPORT           a Markdown file to write the run's figures to (image size, build time, time
#                    to ready) with the date, the revision and the machine (default: none;
#                    `make image-report` writes reports/image.md)
#
# The server runs with `buildah run --isolation chroot`, on the host network, bound to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."

IMAGE=${IMAGE:-localhost/latam-delay:test}
BASE_IMAGE=${BASE_IMAGE:-localhost/latam-python-base:bookworm}
BUILD_CA_BUNDLE=${BUILD_CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}
READY_TIMEOUT=${READY_TIMEOUT:-90}
BUILD_ONLY=0
[[ ${1:-} == --build-only ]] && BUILD_ONLY=1

fail() { echo "FAIL: $*" >&2; exit 1; }
command -v buildah >/dev/null || fail "buildah is not installed (apt-get install -y buildah)"
PY=$(command -v python3) || fail "python3 is needed on the host to drive the checks"

# ---- build ----
if [[ $BASE_IMAGE == localhost/* ]]; then
    BASE_IMAGE=$BASE_IMAGE deploy/container/make-base-image.sh
fi
build_args=(--isolation chroot --layers --force-rm --format docker --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE")
# --format docker: the OCI image format has no HEALTHCHECK; buildah would drop it.
if [[ -n $BUILD_CA_BUNDLE && -f $BUILD_CA_BUNDLE ]]; then
    build_args+=(--volume "$BUILD_CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
fi
build_log=$(mktemp)
echo "building $IMAGE from $BASE_IMAGE ..."
build_start=$SECONDS
if ! buildah build "${build_args[@]}" . >"$build_log" 2>&1; then
    tail -n 40 "$build_log" >&2
    rm -f "$build_log"
    fail "buildah build"
fi
rm -f "$build_log"
size=$(buildah images --format '{{.Size}}' "$IMAGE" | head -n1)
build_seconds=$((SECONDS - build_start))
echo "built $IMAGE in ${build_seconds}s: $size"
[[ $BUILD_ONLY == 1 ]] && exit 0

# ---- the image's own configuration ----
config=$(buildah inspect --type image "$IMAGE")
read -r -d '' CONFIG_CHECK <<'PYEOF' || true
import json, sys
config = json.loads(sys.argv[1])["Docker"]["config"]
user = (config.get("User") or "").split(":")[0]
assert user not in ("", "0", "root"), f"image user is {user!r}: must not be root"
health = (config.get("Healthcheck") or {}).get("Test") or []
assert any("/v2/health/ready" in part for part in health), f"no readiness HEALTHCHECK: {health}"
assert config.get("Cmd"), "no CMD"
command = {"CMD": health[1:], "CMD-SHELL": ["/bin/sh", "-c", *health[1:]]}[health[0]]
print(json.dumps({"cmd": config["Cmd"], "health": command}))
PYEOF
config_summary=$("$PY" -c "$CONFIG_CHECK" "$config") || fail "image configuration"
mapfile -t CMD < <("$PY" -c 'import json,sys; print(*json.loads(sys.argv[1])["cmd"], sep="\n")' "$config_summary")
mapfile -t HEALTH < <("$PY" -c 'import json,sys; print(*json.loads(sys.argv[1])["health"], sep="\n")' "$config_summary")

# ---- run it ----
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
grpc_port=$(free_port)  # the host's network: not GRPC_BIND's default 0.0.0.0:8001
base_url="http://127.0.0.1:$port"
ctr=$(buildah from --pull=never "$IMAGE")
server_log=$(mktemp)
server_pid=
descendants() {  # every process below $1, by id
    local child
    # shellcheck disable=SC2013  # the children files hold ids apart by spaces, not lines
    for child in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        echo "$child"
        descendants "$child"
    done
}
is_gunicorn() { [[ $(cat /proc/"$1"/comm 2>/dev/null) == gunicorn ]]; }  # not buildah's exec shim
gunicorns() {  # the server's gunicorn processes, master first
    local pid
    for pid in $(descendants "$server_pid"); do
        if is_gunicorn "$pid"; then echo "$pid"; fi
    done
}
# SIGTERM to gunicorn's master is its graceful stop. It is signalled directly: a SIGTERM to
# buildah's exec shim would orphan the workers. Fails when something had to be killed.
stop_server() {
    local pid master='' seen=() waited=0
    while kill -0 "$server_pid" 2>/dev/null && ((waited < 250)); do
        if [[ -z $master ]]; then
            master=$(gunicorns | head -n1)
            if [[ -n $master ]]; then
                mapfile -t seen < <(gunicorns)
                kill -TERM "$master" 2>/dev/null || true
            elif ((waited >= 50)); then  # no gunicorn after 5 s: stop buildah itself
                kill -TERM "$server_pid" 2>/dev/null || true
            fi
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    local clean=0
    if kill -0 "$server_pid" 2>/dev/null; then
        echo "server did not stop in 25s: killing it" >&2
        mapfile -t seen < <(gunicorns)
        local below
        mapfile -t below < <(descendants "$server_pid")
        kill -KILL "${seen[@]}" "${below[@]}" "$server_pid" 2>/dev/null || true
        clean=1
    fi
    wait "$server_pid" 2>/dev/null || true
    for pid in "${seen[@]}"; do  # none may outlive the run
        if is_gunicorn "$pid" && [[ $(awk '/^State:/ {print $2}' /proc/"$pid"/status 2>/dev/null) != Z ]]; then
            echo "gunicorn process $pid outlived the server: killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
            clean=1
        fi
    done
    return "$clean"
}
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [[ -n $server_pid ]]; then
        stop_server || status=1
    fi
    if [[ $status != 0 && -s $server_log ]]; then
        echo "---- server log (last 30 lines) ----" >&2
        tail -n 30 "$server_log" >&2
    fi
    buildah rm "$ctr" >/dev/null 2>&1 || true
    rm -f "$server_log"
    exit "$status"
}
trap cleanup EXIT
trap "exit 130" INT
trap "exit 143" TERM

echo "serving ${CMD[*]} from $IMAGE on $base_url (2 workers) ..."
launch=$("$PY" -c 'import time; print(time.monotonic())')
buildah run --isolation chroot --env "BIND=127.0.0.1:$port" --env "GRPC_BIND=127.0.0.1:$grpc_port" \
    --env WORKERS=2 "$ctr" -- "${CMD[@]}" \
    >"$server_log" 2>&1 &
server_pid=$!

read -r -d '' WAIT_READY <<'PYEOF' || true
import os, sys, time, urllib.request
url, launch, deadline, pid = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
while time.monotonic() - launch < deadline:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                print(f"{time.monotonic() - launch:.2f}")
                sys.exit(0)
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("server exited before it was ready")
    time.sleep(0.1)
sys.exit(f"not ready after {deadline:.0f}s")
PYEOF
cold_start=$("$PY" -c "$WAIT_READY" "$base_url/v2/health/ready" "$launch" "$READY_TIMEOUT" "$server_pid") \
    || fail "waiting for $base_url/v2/health/ready"
echo "ready after ${cold_start}s"

# ---- check it ----
read -r -d '' PREDICT <<'PYEOF' || true
import json, sys, urllib.request
body = json.dumps({"flights": [{"OPERA": "Grupo LATAM", "TIPOVUELO": "N", "MES": 3}]}).encode()
request = urllib.request.Request(sys.argv[1], data=body, headers={"Content-Type": "application/json"})
with urllib.request.urlopen(request, timeout=10) as response:
    status, payload = response.status, json.loads(response.read())
assert status == 200, status
labels = payload.get("predict")
assert isinstance(labels, list) and len(labels) == 1 and labels[0] in (0, 1), payload
print(json.dumps(payload))
PYEOF
answer=$("$PY" -c "$PREDICT" "$base_url/predict") || fail "POST /predict"
echo "POST /predict -> 200 $answer"

# Every process of the server (master and both workers) runs as uid 10001 (effective uid).
gunicorn_uids() {
    local pid
    for pid in $(descendants "$server_pid"); do
        if is_gunicorn "$pid"; then
            awk '/^Uid:/ {print $3}' /proc/"$pid"/status 2>/dev/null
        fi
    done
}
for _ in $(seq 40); do  # the second worker may still be booting when the first answers
    mapfile -t uids < <(gunicorn_uids)
    ((${#uids[@]} >= 3)) && break
    sleep 0.25
done
((${#uids[@]} >= 3)) || fail "expected a gunicorn master and 2 workers, found ${#uids[@]} processes"
for uid in "${uids[@]}"; do [[ $uid == 10001 ]] || fail "a server process runs as uid $uid, not 10001"; done
echo "${#uids[@]} gunicorn processes, all uid 10001"

# The image's own HEALTHCHECK command, run inside the image against the live server.
buildah run --isolation chroot --env "BIND=127.0.0.1:$port" "$ctr" -- "${HEALTH[@]}" \
    || fail "the image's HEALTHCHECK command failed against a ready server"
echo "HEALTHCHECK command passes"

# The serving image holds no training libraries.
buildah run --isolation chroot "$ctr" -- python -c \
    'import importlib.util as u, sys; found = [m for m in ("sklearn", "pandas", "skl2onnx", "matplotlib") if u.find_spec(m)]; sys.exit(f"training libraries in the image: {found}" if found else 0)' \
    || fail "training libraries in the image"

echo "SUMMARY image=$IMAGE size=$size cold_start=${cold_start}s"

# ---- the report ----
if [[ -n ${REPORT:-} ]]; then
    revision=$(git rev-parse --short HEAD)
    [[ -z $(git status --porcelain --untracked-files=no) ]] || revision="$revision + uncommitted changes"
    cat >"$REPORT" <<REPORT_END
# The container image (\`make image-report\`)

- Date: $(date -u +%Y-%m-%dT%H:%M:%S+00:00); code: $revision
- Machine: $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(nproc) cores (\`$(uname -srvm)\`); load average after: $(cut -d' ' -f1-3 /proc/loadavg)
- Image: \`$IMAGE\` from \`$BASE_IMAGE\`, built by \`buildah build --isolation chroot --layers\`: layers
  an earlier build made from the same inputs are reused, so the build time is that of the layers
  that changed.
- Run: \`buildah run --isolation chroot\` on the host's network, WORKERS=2, the image's CMD;
  ready: from the launch to the first \`200\` of \`/v2/health/ready\` (polled every 0.1 s),
  buildah's own start-up included.

| image size | build | ready after launch | \`POST /predict\` | server processes | HEALTHCHECK |
| ---: | ---: | ---: | --- | --- | --- |
| $size | $build_seconds s | $cold_start s | 200 \`$answer\` | ${#uids[@]}, all uid 10001 | passes |
REPORT_END
    echo "wrote $REPORT"
fi
