"""app.cpus: the default worker count is the smaller of the affinity mask and the cgroup
quota, v2 or v1, on the process's own cgroup, an ancestor, or the container's mount."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.cpus import available, cgroup_quota


def cgroup(tmp_path: Path, lines: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    root.mkdir(exist_ok=True)
    proc = tmp_path / "proc-cgroup"
    proc.write_text(lines)
    return root, proc


V1_DOCKER = {
    "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "300000",
    "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000",
}
NO_LIMIT = {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000", "cpu.max": "max 1"}


@pytest.mark.parametrize(
    ("lines", "files", "quota"),
    [
        pytest.param("0::/k/pod1\n", {"k/pod1/cpu.max": "150000 100000"}, 2, id="v2-rounds-up"),
        pytest.param(
            "0::/a/b\n",
            {"a/cpu.max": "100000 100000", "a/b/cpu.max": "max 100000"},
            1,
            id="v2-tightest-ancestor",
        ),
        pytest.param(
            "0::/a/b\n",
            {"a/cpu.max": "100000 100000", "a/b/cpu.max": "400000 100000"},
            1,
            id="v2-tightest-of-several",
        ),
        pytest.param(
            "0::/host/path/not/mounted\n",
            {"cpu.max": "200000 100000"},
            2,
            id="v2-container-own-cgroup-at-the-mount",
        ),
        pytest.param("4:memory:/x\n2:cpu,cpuacct:/docker/abc\n", V1_DOCKER, 3, id="v1"),
        pytest.param(
            # containerd's systemd driver on v1 names the cgroup with colons
            "2:cpu,cpuacct:/system.slice/containerd.service/pod1.slice:cri-containerd:abc\n",
            {
                f"cpu,cpuacct/system.slice/containerd.service/pod1.slice:cri-containerd:abc/{name}": v
                for name, v in (("cpu.cfs_quota_us", "200000"), ("cpu.cfs_period_us", "100000"))
            },
            2,
            id="v1-path-with-colons",
        ),
        pytest.param("1:cpu:/\n0::/\n", NO_LIMIT, None, id="no-limit"),
        pytest.param(
            "1:cpu:/\n0::/\n",
            {"cpu/cpu.cfs_quota_us": "100000", "cpu/cpu.cfs_period_us": "0", "cpu.max": "100000 0"},
            None,
            id="zero-period-is-no-limit",
        ),
    ],
)
def test_cgroup_quota(tmp_path: Path, lines: str, files: dict[str, str], quota: int | None) -> None:
    root, proc = cgroup(tmp_path, lines, files)
    assert cgroup_quota(root, proc) == quota


def test_an_unreadable_cgroup_is_no_quota(tmp_path: Path) -> None:
    assert cgroup_quota(tmp_path, tmp_path / "absent") is None


def test_available_is_the_smaller_and_at_least_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    root, proc = cgroup(tmp_path, "0::/\n", {"cpu.max": "200000 100000"})
    assert available(root, proc) == 2  # a 2-CPU container on a 64-core node
    root, proc = cgroup(tmp_path / "b", "0::/\n", {"cpu.max": "10000 100000"})
    assert available(root, proc) == 1  # 0.1 CPU: still one worker
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    root, proc = cgroup(tmp_path / "c", "0::/\n", {"cpu.max": "800000 100000"})
    assert available(root, proc) == 1  # pinned to one core by taskset


def test_this_machine() -> None:
    assert 1 <= available() <= len(os.sched_getaffinity(0))


def test_available_without_an_affinity_mask_or_a_cpu_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Off Linux there is no affinity mask, and os.cpu_count() may be None: the quota alone
    then counts, and with none either, one worker (not a TypeError at boot)."""
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    root, proc = cgroup(tmp_path, "0::/\n", {"cpu.max": "300000 100000"})
    assert available(root, proc) == 3
    assert available(tmp_path, tmp_path / "absent") == 1
