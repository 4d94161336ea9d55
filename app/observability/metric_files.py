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

prometheus_client's multiprocess values open their files by the name `MmapedDict` in its
`values` module: `install` puts `open_values_file` there. A private name, so pyproject pins
prometheus-client to the range tests/test_metric_files.py checks.
"""

from __future__ import annotations

import logging
import os
from typing import IO, Protocol

from prometheus_client import values
from prometheus_client.mmap_dict import MmapedDict

INITIAL_BYTES = 1 << 16
"""The size prometheus_client gives a new file (its `_INITIAL_MMAP_SIZE`; a test checks)."""


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

    def _init_value(self, key: str) -> None:
        """A new key; on a growth the filesystem refuses, the file stays as it was."""
        capacity = self._capacity
        try:
            super()._init_value(key)  # type: ignore[no-untyped-call]
        except OSError:
            self._capacity = capacity  # doubled before the file was grown
            raise


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


def _allocate(filename: str) -> None:
    """Makes the file if missing, at least INITIAL_BYTES long, every block allocated. A file
    made here and refused is removed: a scrape cannot read an empty one."""
    descriptor = os.open(filename, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        size = os.fstat(descriptor).st_size
        try:
            os.posix_fallocate(descriptor, 0, max(size, INITIAL_BYTES))
        except OSError:
            if size == 0:
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


def install() -> None:
    """Makes prometheus_client's multiprocess values open their files with `open_values_file`:
    before any metric is made (app.observability.metrics, drift_metrics)."""
    values.MmapedDict = open_values_file  # type: ignore[attr-defined,assignment]  # private
