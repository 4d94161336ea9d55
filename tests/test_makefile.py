"""The Makefile's `make help`, which the README points every reader to."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import ROOT


def test_help_lists_every_target_with_its_variables_expanded() -> None:
    """The help lines are read from the Makefile's text: a `$(GRPC_RELOADS)` in one was printed
    as it is, not as the 10 it runs."""
    shown = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "$(" not in shown, shown
    makefiles = [ROOT / "Makefile", *sorted((ROOT / "mk").glob("*.mk"))]
    targets = {
        match.group(1)
        for path in makefiles
        for match in re.finditer(r"^([a-zA-Z_-]+):.*## ", path.read_text(), re.M)
    }
    listed = {line.split()[0] for line in shown.splitlines() if line.strip()}
    assert listed == targets
    assert re.search(
        r"^  grpc-reload-kept +gRPC calls on kept connections across \d+ ", shown, re.M
    )
