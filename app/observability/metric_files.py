"""prometheus_client's multiprocess files, with their disk blocks allocated before they are mapped.

prometheus_client sizes each file with truncate(): a sparse file, whose pages get their blocks
only when first written through the memory mapping. On a full filesystem that write is a SIGBUS,
which kills the process at once: a worker that wrote a new series (a new status, at boot its
first values) died, and every worker forked to replace it died the same way, a crash loop
(reports/reliability.md). Blocks allocated first (posix_fallocate) turn a full filesystem into
an OSError where a file is made or grown, which the callers can survive:

- a process that cannot make its file keeps that file's values in memory: it serves on, its
  series are missing from the scrapes, and it says so once (`open_values_file`);
- a file that cannot grow refuses the new series (the flush that brought it logs and goes on,
  app.observability.metrics), and the series it holds go on being written.

A file removed from under the server (an operator's `rm`, a /tmp cleaner that ignores the
master's lock: app.server.run_dirs.hold), its directory with it, is written again where it was,
with every value it held, by `restore_removed` (each flush, app.observability.metrics): the counts
go on where they were, where before they vanished from the scrapes until the process restarted.
A directory made again is this user's own (app.server.run_dirs.private_directory).

prometheus_client's multiprocess values open their files by the name `MmapedDict` in its
`values` module: `install` puts `open_values_file` there. A private name, so pyproject pins
prometheus-client to the range tests/test_metric_files.py checks.
"""

from __future__ import annotations

import logging
import mmap
import os
import weakref
from pathlib import Path
from typing import IO, Protocol

from prometheus_client import values
from prometheus_client.mmap_dict import MmapedDict

from app.server.run_dirs import private_directory

INITIAL_BYTES = 1 << 16
"""The size prometheus_client gives a new file (its `_INITIAL_MMAP_SIZE`; a test checks)."""
RESTORING = ".restoring"
"""Suffix of a file being written again: not `.db`, so no scrape reads it half-written."""


class ValuesFile(Protocol):
    """What prometheus_client's multiprocess values call on their file."""

    def read_value(self, key: str) -> tuple[float, float]: ...

    def write_value(self, key: str, value: float, timestamp: float) -> None: ...

    def close(self) -> None: ...


class AllocatedMmapedDict(MmapedDict):
    """A MmapedDict whose every mapped page has its disk block: a full filesystem raises
    OSError when it is opened or grown, never SIGBUS when it is written."""

    def __init__(self, filename: str, read_mode: bool = False) -> None:
        if not read_mode:
            _allocate(filename)
        super().__init__(filename, read_mode)  # type: ignore[no-untyped-call]  # unannotated upstream
        if not read_mode:  # only truncate, fileno and close are called on it
            self._f = _AllocatingFile(self._f)  # type: ignore[assignment]
            self._owner = os.getpid()  # a forked worker leaves its master's files to the master
            self._directory = _identity(os.path.dirname(filename))
            _writable.add(self)

    def restore(self) -> bool:
        """Writes the file again where it was, its directory too, if it was removed (or replaced)
        since it was opened, with every value it holds; returns whether it did."""
        if self._f is None or self._owner != os.getpid():  # closed, or the master's
            return False
        opened = os.fstat(self._f.fileno())
        try:
            if os.stat(self._fname).st_ino == opened.st_ino:
                return False
        except FileNotFoundError:
            pass
        directory = os.path.dirname(self._fname)
        if _identity(directory) != self._directory:  # gone, or made again: by this user only
            private_directory(Path(directory))
        restoring = self._fname + RESTORING
        _allocate(restoring, self._capacity, new=True)
        file = open(restoring, "r+b")  # noqa: SIM115  # kept open for the mapping, as upstream's
        try:
            mapping = mmap.mmap(file.fileno(), self._capacity)
            mapping[: self._used] = self._m[: self._used]
            os.replace(restoring, self._fname)
        except BaseException:
            file.close()
            os.unlink(restoring)
            raise
        self._m.close()
        self._f.close()
        self._m, self._f = mapping, _AllocatingFile(file)  # type: ignore[assignment]
        return True

    def _init_value(self, key: str) -> None:
        """A new key; on a growth the filesystem refuses, the file stays as it was."""
        capacity = self._capacity
        try:
            super()._init_value(key)  # type: ignore[no-untyped-call]
        except OSError:
            self._capacity = capacity  # doubled before the file was grown
            raise


def _identity(directory: str) -> tuple[int, int] | None:
    """The directory's device and inode, None if it is gone."""
    try:
        info = os.stat(directory)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


class _AllocatingFile:
    """The file object MmapedDict grows with truncate(): this one allocates the blocks too."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file

    def truncate(self, size: int) -> int:
        os.posix_fallocate(self._file.fileno(), 0, size)  # extends the file with real blocks
        return self._file.truncate(size)

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        self._file.close()


def _allocate(filename: str, size: int = INITIAL_BYTES, new: bool = False) -> None:
    """Makes the file if missing (`new`: anew, empty), at least `size` long, every block
    allocated. A file made here and refused is removed: a scrape cannot read an empty one."""
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | (os.O_TRUNC if new else 0)
    descriptor = os.open(filename, flags, 0o666)
    try:
        had = os.fstat(descriptor).st_size
        try:
            os.posix_fallocate(descriptor, 0, max(had, size))
        except OSError:
            if had == 0:
                os.unlink(filename)
            raise
    finally:
        os.close(descriptor)


class _MemoryValues:
    """In place of a values file that could not be made: this process's values, kept but never
    scraped, with the methods prometheus_client's values call."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[float, float]] = {}

    def read_value(self, key: str) -> tuple[float, float]:
        return self._values.setdefault(key, (0.0, 0.0))

    def write_value(self, key: str, value: float, timestamp: float) -> None:
        self._values[key] = (value, timestamp)

    def close(self) -> None:
        self._values.clear()


def open_values_file(filename: str) -> ValuesFile:
    """The file one of prometheus_client's multiprocess values writes to; in memory when the
    filesystem cannot hold it (logged: the process's metrics of that type are not scraped until
    it restarts)."""
    try:
        return AllocatedMmapedDict(filename)
    except OSError as error:
        logging.getLogger("app").error(
            "metrics file %s not made (%s): this process serves on, its %s metrics kept in "
            "memory and missing from /metrics until it restarts",
            filename,
            error.strerror or error,
            os.path.basename(filename).rpartition("_")[0],
        )
        return _MemoryValues()


_writable: weakref.WeakSet[AllocatedMmapedDict] = weakref.WeakSet()
"""This process's files open for writing, for `restore_removed`."""
_restore_failed = False


def restore_removed() -> int:
    """Writes again each of this process's files that was removed from under it, logged in one
    line; returns how many. A failure to is logged the first time only: its values stay in
    memory, and the next call tries again."""
    global _restore_failed
    restored = []
    for file in list(_writable):
        try:
            if file.restore():
                restored.append(file._fname)
        except Exception as error:  # in the master's hooks, raised, it would stop gunicorn
            if not _restore_failed:
                _restore_failed = True
                logging.getLogger("app").error(
                    "metrics file %s removed and not written again (%s; logged once, tried again "
                    "at each flush): its values are missing from /metrics",
                    file._fname,
                    error,
                )
    if restored:
        logging.getLogger("app").warning(
            "metrics files removed from under the server (a /tmp cleaner?), written again with "
            "their values: %s",
            ", ".join(sorted(restored)),
        )
    return len(restored)


def forget_files() -> None:
    """No file of this process is written again from now on: a master about to remove the
    directory it made (gunicorn.conf.py's on_exit) would make it again at its last flush."""
    _writable.clear()


def install() -> None:
    """Makes prometheus_client's multiprocess values open their files with `open_values_file`:
    before any metric is made (app.observability.metrics, drift_metrics)."""
    values.MmapedDict = open_values_file  # type: ignore[attr-defined,assignment]  # private
