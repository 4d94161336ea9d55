#!/usr/bin/env bash
# `make test` (requirements.lock's pins, ruff, mypy, the test suite) on another Debian's Python,
# in a chroot: whether requires-python's ">=3.11" holds past bookworm's 3.11, which development,
# CI and the image use. What `make test-python PY=...` runs (mk/python.mk).
#
#   mk/test-python.sh 3.13   Debian trixie's python3.13
#   mk/test-python.sh 3.14   Debian forky's (testing: it moves) python3.14
#
#   SUITE      Debian suite that has python$PY (default: trixie for 3.13, else forky)
#   CHROOT     the root, made by debootstrap on the first run, then reused (default build/python-$PY)
#   MIRROR     Debian mirror (default http://deb.debian.org/debian)
#   CA_BUNDLE  CA bundle mounted read-only over the chroot's while it runs (pip is pointed at it),
#              so pip reaches PyPI through a TLS-intercepting proxy (as test-image.sh's
#              BUILD_CA_BUNDLE). Default: this machine's /etc/ssl/certs/ca-certificates.crt; empty:
#              none.
#   SCL_DATA   the real data, mounted read-only for the real-data tests when it exists
#
# Needs root (debootstrap, mount, chroot). The chroot tests a clone of HEAD: commit first.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${1:?usage: mk/test-python.sh 3.X}
[[ $PY =~ ^3\.[0-9]+$ ]] || { echo "error: PY is a version like 3.13, not $PY" >&2; exit 1; }
if [[ $PY == 3.13 ]]; then SUITE=${SUITE:-trixie}; else SUITE=${SUITE:-forky}; fi
CHROOT=$(realpath -m "${CHROOT:-build/python-$PY}")
MIRROR=${MIRROR:-http://deb.debian.org/debian}
CA_BUNDLE=${CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}
SCL_DATA=${SCL_DATA:-../shared/data/dataset_SCL.csv.gz}
[[ $(id -u) == 0 ]] || { echo "error: needs root (debootstrap, mount, chroot)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "error: apt-get install -y debootstrap" >&2; exit 1; }

# What the tests call besides Python, as .ci/run installs them; the compilers and headers for a
# pinned version that has no wheel for this Python, so that its build is what fails, not a missing gcc.
PACKAGES=python$PY,python$PY-venv,python$PY-dev,gcc,g++,make,git,ca-certificates,procps,wrk,shellcheck
PACKAGES+=,prometheus,nghttp2-client,systemd-standalone-tmpfiles,libgomp1
# A debootstrap older than the suite has no script of its name: testing's is sid's.
script=()
[[ -e /usr/share/debootstrap/scripts/$SUITE ]] || script=(/usr/share/debootstrap/scripts/sid)
if [[ ! -x $CHROOT/usr/bin/python$PY ]]; then
    echo "debootstrap $SUITE with python$PY into $CHROOT ..."
    mkdir -p "$CHROOT"
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$CHROOT" "$MIRROR" "${script[@]}" \
        >"$CHROOT.debootstrap.log" 2>&1 || { tail -n 30 "$CHROOT.debootstrap.log" >&2; exit 1; }
fi

mounted=()
cleanup() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -R "${mounted[i]}" || true; done
}
trap cleanup EXIT
bind() {  # bind SOURCE TARGET [ro]
    mount --rbind "$1" "$2"
    mounted+=("$2")
    mount --make-rslave "$2"
    [[ ${3:-} != ro ]] || mount -o remount,bind,ro "$2"
}
bind /proc "$CHROOT/proc"
bind /sys "$CHROOT/sys"
bind /dev "$CHROOT/dev"
if [[ -n $CA_BUNDLE && -f $CA_BUNDLE ]]; then
    bind "$CA_BUNDLE" "$CHROOT/etc/ssl/certs/ca-certificates.crt" ro
fi
cp /etc/resolv.conf "$CHROOT/etc/resolv.conf"

# A fresh clone each run (pip's cache in the chroot keeps the reinstall short); the data beside
# it, where SCL_DATA's default looks.
rm -rf "$CHROOT/work/repo"
mkdir -p "$CHROOT/work/repo" "$CHROOT/work/shared/data"
git clone --quiet --no-hardlinks . "$CHROOT/work/repo"
if [[ -f $SCL_DATA ]]; then
    touch "$CHROOT/work/shared/data/dataset_SCL.csv.gz"
    bind "$SCL_DATA" "$CHROOT/work/shared/data/dataset_SCL.csv.gz" ro
fi

echo "make test with $(chroot "$CHROOT" "python$PY" -VV | head -n1) (Debian $SUITE) ..."
chroot "$CHROOT" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    bash -c "cd /work/repo && make test PYTHON=python$PY"
