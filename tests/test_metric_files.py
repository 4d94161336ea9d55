from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import pytest
from prometheus_client import mmap_dict, values
from prometheus_client.mmap_dict import MmapedDict

from app.observability import metric_files
from app.observability.metric_files import (
    INITIAL_BYTES,
    AllocatedMmapedDict,
    ValuesFile,
    open_values_file,
)
from tests.conftest import ROOT

KEY = mmap_dict.mmap_key("requests", "requests_total", ["status"], ["200"], "help")


def allocated(path: Path) -> bool:
    """Whether every byte of the file has its disk block (no hole a write could SIGBUS on)."""
    stat = path.stat()
    return stat.st_blocks * 512 >= stat.st_size


def keys(count: int) -> list[str]:
    return [mmap_dict.mmap_key("m", "m_total", ["n"], [str(n)], "help") for n in range(count)]


def refuse_space(monkeypatch: pytest.MonkeyPatch) -> None:
    def full(descriptor: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)


def test_initial_bytes_is_prometheus_clients_initial_size() -> None:
    assert mmap_dict._INITIAL_MMAP_SIZE == INITIAL_BYTES


def test_a_new_file_has_every_block_allocated(tmp_path: Path) -> None:
    """prometheus_client's own file is sparse: its pages get blocks only when first written."""
    plain = tmp_path / "counter_1.db"
    MmapedDict(str(plain)).close()  # type: ignore[no-untyped-call]  # unannotated upstream
    ours = tmp_path / "counter_2.db"
    opened: ValuesFile = AllocatedMmapedDict(str(ours))
    opened.close()
    assert ours.stat().st_size == plain.stat().st_size == INITIAL_BYTES
    assert allocated(ours)
    assert not allocated(plain)  # what this module is for: if this changes, it may go


def test_a_grown_file_has_every_block_allocated_and_keeps_its_values(tmp_path: Path) -> None:
    path = tmp_path / "histogram_1.db"
    file: ValuesFile = AllocatedMmapedDict(str(path))
    for n, key in enumerate(keys(2000)):  # about 70 bytes each: past 64 KiB
        file.write_value(key, float(n), 0.0)
    file.close()
    assert path.stat().st_size > INITIAL_BYTES
    assert allocated(path)
    read = {key: value for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path))}  # type: ignore[no-untyped-call]
    assert read == {key: float(n) for n, key in enumerate(keys(2000))}


def test_a_file_the_filesystem_cannot_hold_raises_and_is_not_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty file left behind would break every scrape that reads the directory."""
    refuse_space(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        AllocatedMmapedDict(str(tmp_path / "counter_1.db"))
    assert not list(tmp_path.iterdir())


def test_an_existing_file_the_filesystem_cannot_hold_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "counter_1.db"
    file: ValuesFile = AllocatedMmapedDict(str(path))
    file.write_value(KEY, 3.0, 0.0)
    file.close()
    refuse_space(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        AllocatedMmapedDict(str(path))
    assert [value for _, value, _, _ in MmapedDict.read_all_values_from_file(str(path))] == [3.0]  # type: ignore[no-untyped-call]


def test_a_growth_the_filesystem_refuses_leaves_the_file_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "counter_1.db"
    file: ValuesFile = AllocatedMmapedDict(str(path))
    written = 0
    for key in keys(2000):
        with monkeypatch.context() as refused:
            refuse_space(refused)
            try:
                file.write_value(key, 1.0, 0.0)
            except OSError:
                break
        written += 1
    else:
        pytest.fail("the file never needed to grow")
    assert path.stat().st_size == INITIAL_BYTES
    file.write_value(keys(1)[0], 5.0, 0.0)  # a series it holds is still written
    refused_key = keys(2000)[written]
    file.write_value(refused_key, 7.0, 0.0)  # with space again, the refused series is taken
    file.close()
    read = {key: value for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path))}  # type: ignore[no-untyped-call]
    assert len(read) == written + 1
    assert read[keys(1)[0]] == 5.0
    assert read[refused_key] == 7.0
    assert allocated(path)


def test_values_whose_file_cannot_be_made_are_kept_in_memory_and_said_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    refuse_space(monkeypatch)
    path = tmp_path / "gauge_livesum_12.db"
    with caplog.at_level(logging.ERROR, logger="app"):
        file = open_values_file(str(path))
    assert file.read_value(KEY) == (0.0, 0.0)
    file.write_value(KEY, 2.0, 0.0)
    assert file.read_value(KEY) == (2.0, 0.0)
    assert not path.exists()
    (record,) = caplog.records
    assert record.getMessage() == (
        f"metrics file {path} not made (No space left on device): this process serves on, its "
        "gauge_livesum metrics kept in memory and missing from /metrics until it restarts"
    )


def test_prometheus_clients_multiprocess_values_open_their_files_through_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The private name `install` replaces (prometheus_client.values.MmapedDict): if a release
    stops opening files by it, this fails, and the pin in pyproject stays until it is fixed."""
    import app.observability.metrics  # noqa: F401  # installs, as every process of the service does

    assert values.MmapedDict is open_values_file  # type: ignore[attr-defined]
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    value_class = values.MultiProcessValue(lambda: 41)  # type: ignore[no-untyped-call]
    counted = value_class("counter", "jobs", "jobs_total", (), (), "help")
    counted.inc(2.0)
    assert allocated(tmp_path / "counter_41.db")
    refuse_space(monkeypatch)
    in_memory = values.MultiProcessValue(lambda: 42)("gauge", "g", "g", (), (), "help", "livesum")  # type: ignore[no-untyped-call]
    in_memory.set(4.0)
    assert in_memory.get() == 4.0
    assert not (tmp_path / "gauge_livesum_42.db").exists()
    values.close_all_multiprocess_files()  # type: ignore[no-untyped-call]


FILL_AND_WRITE = textwrap.dedent(
    """
    import sys
    from prometheus_client.mmap_dict import MmapedDict, mmap_key
    from app.observability.metric_files import AllocatedMmapedDict

    directory, kind = sys.argv[1], sys.argv[2]
    opened = (AllocatedMmapedDict if kind == "allocated" else MmapedDict)(directory + "/counter_1.db")
    with open(directory + "/filler", "wb", buffering=0) as filler:  # the filesystem fills up
        try:
            while True:
                filler.write(bytes(4096))
        except OSError:
            pass
    for n in range(400):  # new series: they reach pages never written
        opened.write_value(mmap_key("m", "m_total", ["n"], [str(n)], "help"), 1.0, 0.0)
    print("written")
    """
)


@pytest.mark.usefixtures("private_mounts")
@pytest.mark.parametrize("kind", ["plain", "allocated"])
def test_on_a_filesystem_that_fills_up_a_write_is_no_sigbus(tmp_path: Path, kind: str) -> None:
    """On a real full tmpfs (mounted in a user and mount namespace of its own): prometheus_client's
    own file kills its process with SIGBUS at the first new page; ours, allocated when made, takes
    every series its first 64 KiB hold."""
    script = tmp_path / "fill_and_write.py"
    script.write_text(FILL_AND_WRITE)
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(
        [
            "unshare",
            "-rm",
            "sh",
            "-c",
            'mount -t tmpfs -o size=512k tmpfs "$1" && exec "$2" "$3" "$1" "$4"',
            "sh",
            str(mount),
            sys.executable,
            str(script),
            kind,
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if kind == "plain":
        assert done.returncode == -7, (done.returncode, done.stderr)  # SIGBUS: what was fixed
    else:
        assert (done.returncode, done.stdout) == (0, "written\n"), done.stderr


def write(file: ValuesFile, value: float) -> None:
    """One value under KEY, through the typed view of a file (its methods are unannotated)."""
    file.write_value(KEY, value, 0.0)


def values_in(path: Path) -> dict[str, float]:
    return {key: value for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path))}  # type: ignore[no-untyped-call]


def test_a_removed_file_is_written_again_with_its_values_and_written_on(tmp_path: Path) -> None:
    path = tmp_path / "counter_1.db"
    file = AllocatedMmapedDict(str(path))
    assert not file.restore()  # nothing to do
    write(file, 3.0)
    path.unlink()
    assert file.restore()
    assert values_in(path) == {KEY: 3.0}
    assert allocated(path)
    write(file, 4.0)
    assert values_in(path) == {KEY: 4.0}
    assert not list(tmp_path.glob("*.restoring"))
    closing: ValuesFile = file
    closing.close()
    assert not file.restore()  # closed: nothing to write


def test_a_file_replaced_under_its_name_is_written_again_with_this_processs_values(
    tmp_path: Path,
) -> None:
    """Another file at the path (a directory removed and made again, then filled by hand): the
    scrapes would read it, not this process's values."""
    path = tmp_path / "counter_1.db"
    file = AllocatedMmapedDict(str(path))
    write(file, 6.0)
    other = tmp_path / "other.db"
    stranger: ValuesFile = AllocatedMmapedDict(str(other))
    stranger.write_value(KEY, 1.0, 0.0)
    os.replace(other, path)
    assert file.restore()
    assert values_in(path) == {KEY: 6.0}


def test_a_removed_directory_is_made_again_for_its_files(tmp_path: Path) -> None:
    directory = tmp_path / "latam-delay-metrics-1"
    directory.mkdir()
    files = {kind: AllocatedMmapedDict(str(directory / f"{kind}_1.db")) for kind in ("a", "b")}
    for n, file in enumerate(files.values()):
        write(file, float(n))
    shutil.rmtree(directory)
    assert [file.restore() for file in files.values()] == [True, True]
    assert directory.stat().st_mode & 0o777 == 0o700
    assert [values_in(directory / f"{kind}_1.db") for kind in files] == [{KEY: 0.0}, {KEY: 1.0}]


@pytest.mark.skipif(os.geteuid() != 0, reason="making another user's directory needs root")
def test_a_removed_directory_another_user_made_again_is_not_written_in(tmp_path: Path) -> None:
    """A run's metrics directory has a name anyone can list in TMPDIR: after a /tmp cleaner took
    it, another user made it first with a symlink at a file's temporary name, and the process
    (root) truncated and filled the symlink's target. Its values stay in memory, said once."""
    directory = tmp_path / "latam-delay-metrics-1-x"
    directory.mkdir()
    file = AllocatedMmapedDict(str(directory / "counter_1.db"))
    write(file, 2.0)
    victim = tmp_path / "victim"
    victim.write_text("root's own")
    shutil.rmtree(directory)
    directory.mkdir()
    os.chown(directory, 65534, 65534)
    (directory / "counter_1.db.restoring").symlink_to(victim)
    with pytest.raises(PermissionError):
        file.restore()
    assert victim.read_text() == "root's own"
    kept: ValuesFile = file
    assert kept.read_value(KEY) == (2.0, 0.0)


def test_a_forked_process_leaves_the_files_it_inherited_to_their_owner(tmp_path: Path) -> None:
    path = tmp_path / "counter_1.db"
    file = AllocatedMmapedDict(str(path))
    path.unlink()
    file._owner = os.getpid() + 1  # as in a worker, which forked with its master's files open
    assert not file.restore()
    assert not path.exists()


def test_restore_removed_says_so_in_one_line_and_a_failure_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(metric_files, "_writable", weakref.WeakSet())
    monkeypatch.setattr(metric_files, "_restore_failed", False)
    paths = [tmp_path / f"{kind}_1.db" for kind in ("counter", "histogram")]
    files = [AllocatedMmapedDict(str(path)) for path in paths]
    for file in files:
        write(file, 2.0)
    for path in paths:
        path.unlink()
    with caplog.at_level(logging.WARNING, logger="app"), monkeypatch.context() as refused:
        refuse_space(refused)
        assert metric_files.restore_removed() == 0
        assert metric_files.restore_removed() == 0
    assert [record.levelname for record in caplog.records] == ["ERROR"]
    assert "removed and not written again (" in caplog.records[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="app"):
        assert metric_files.restore_removed() == 2
    (record,) = caplog.records
    assert record.getMessage() == (
        "metrics files removed from under the server (a /tmp cleaner?), written again with "
        f"their values: {paths[0]}, {paths[1]}"
    )
    assert [values_in(path) for path in paths] == [{KEY: 2.0}, {KEY: 2.0}]
    assert not list(tmp_path.glob("*.restoring"))


def test_forgotten_files_are_not_written_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A master leaving removes the directory it made, then flushes at the interpreter's exit:
    that flush made the directory again, left behind for good."""
    monkeypatch.setattr(metric_files, "_writable", weakref.WeakSet())
    directory = tmp_path / "metrics"
    directory.mkdir()
    kept = [AllocatedMmapedDict(str(directory / f"{kind}_1.db")) for kind in ("counter", "gauge")]
    shutil.rmtree(directory)
    assert metric_files.restore_removed() == 2  # as every flush does
    metric_files.forget_files()
    shutil.rmtree(directory)
    assert metric_files.restore_removed() == 0
    assert not directory.exists()
    assert kept  # open all along
