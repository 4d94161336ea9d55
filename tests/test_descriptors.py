from __future__ import annotations

import errno
import resource
import subprocess
import sys

import pytest

from app import descriptors


def test_raise_limit_lifts_the_soft_limit_to_the_hard_one() -> None:
    """In a child whose soft limit was lowered, as a systemd service's or containerd 2's is."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise")

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    script = (
        "from app import descriptors; before = descriptors.limit(); "
        "print(before, descriptors.raise_limit(), descriptors.limit())"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], preexec_fn=lower, capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["256", str(hard), str(hard)]


@pytest.mark.parametrize(
    ("files", "rest", "grpc", "most"),
    [
        (1_048_576, 10_000, 1_000, 524_288),
        (20_000, 5_000, 1_000, 10_000),
        (1_024, 256, 256, 512),  # the soft default of systemd services and containerd 2
        (3, 1, 1, 1),
    ],
)
def test_a_port_takes_a_quarter_of_the_files_by_default_and_half_at_most(
    files: int, rest: int, grpc: int, most: int
) -> None:
    assert descriptors.default_connections(descriptors.REST_CONNECTIONS, files) == rest
    assert descriptors.default_connections(descriptors.GRPC_CONNECTIONS, files) == grpc
    assert descriptors.max_connections(files) == most


def test_a_limit_too_low_for_a_worker_is_an_emfile_naming_it() -> None:
    """Below it a worker's start crashed, and gunicorn started another at once (a crash loop)."""
    with pytest.raises(
        OSError, match=r"descriptor limit .* of 32 leaves a worker too few"
    ) as caught:
        descriptors.require_worker_descriptors(32)
    assert caught.value.errno == errno.EMFILE
    descriptors.require_worker_descriptors(descriptors.WORKER_DESCRIPTORS)  # enough: no error
