#!/usr/bin/env bash
# Makes the local base image $BASE_IMAGE (Debian bookworm, minbase + Python 3.11 with venv and pip)
# with debootstrap, for machines that reach Debian's mirror but no container registry.
# Idempotent: does nothing when buildah already has the image (FORCE=1 rebuilds it).
#
#   BASE_IMAGE  image name        (default localhost/latam-python-base:bookworm)
#   SUITE       Debian suite      (default bookworm: Python 3.11)
#   MIRROR      Debian mirror     (default: the first Debian URI apt uses on this machine)
set -euo pipefail

BASE_IMAGE=${BASE_IMAGE:-localhost/latam-python-base:bookworm}
SUITE=${SUITE:-bookworm}
PACKAGES=${PACKAGES:-python3,python3-venv,python3-pip,ca-certificates}

if [[ ${FORCE:-0} != 1 ]] && buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
    echo "base image $BASE_IMAGE already present"
    exit 0
fi

for tool in buildah debootstrap; do
    command -v "$tool" >/dev/null || { echo "error: $tool is not installed (apt-get install -y buildah debootstrap)" >&2; exit 1; }
done

# The mirror apt is set up with here (deb822 .sources or one-line .list), else Debian's CDN.
detect_mirror() {
    local uri
    uri=$(grep -hsE '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
    if [[ -z $uri ]]; then
        uri=$(grep -hsE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | sed -E 's/\[[^]]*\]//' | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}
MIRROR=${MIRROR:-$(detect_mirror)}

# debootstrap straight into a scratch working container's root: no copy, no temp tree to import.
log=$(mktemp)
ctr=$(buildah from scratch)
cleanup() {
    buildah umount "$ctr" >/dev/null 2>&1 || true
    buildah rm "$ctr" >/dev/null 2>&1 || true
    rm -f "$log"
}
trap cleanup EXIT
root=$(buildah mount "$ctr")

echo "debootstrap $SUITE ($PACKAGES) from $MIRROR ..."
start=$SECONDS
if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "error: debootstrap failed (full log above)" >&2
    exit 1
fi

# Slim it: no package caches, lists, docs, man pages or locales (the image has no apt use at run time).
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* \
    "$root"/var/log/* "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/locale/* "$root"/debootstrap "$root"/tmp/* "$root"/root/.cache

buildah config \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 \
    --cmd /usr/bin/python3 \
    --os linux --arch "$(buildah info --format '{{.host.arch}}' 2>/dev/null || echo amd64)" \
    --label org.opencontainers.image.description="Debian $SUITE minbase + python3 (made by debootstrap)" \
    "$ctr"
buildah umount "$ctr" >/dev/null
buildah commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
ctr=
echo "base image $BASE_IMAGE made in $((SECONDS - start))s"
