"""Whether a process is there, for the files a process leaves named after its pid: a server run's
directories (app.server.run_dirs) and a worker's metric files (app.observability.metrics_archive).
Kept apart from both so that neither imports the other's dependencies."""

from __future__ import annotations

import errno
import os


def exists(pid: int) -> bool:
    """Whether a process has this pid: a zombie not yet reaped does, and so does another
    user's (signal 0 is refused it, but it is there)."""
    try:
        os.kill(pid, 0)
    except OSError as error:
        return error.errno != errno.ESRCH
    return True
