from __future__ import annotations

import os
import subprocess
import sys

from app.processes import exists


def test_a_child_exists_until_it_is_reaped() -> None:
    """A dead worker not yet reaped is a zombie: still there, its files not yet another's."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped
    assert exists(child.pid)
    child.wait()
    assert not exists(child.pid)


def test_another_users_process_exists() -> None:
    """Signal 0 may be refused it (EPERM to an unprivileged run); it is there all the same."""
    assert exists(1)
