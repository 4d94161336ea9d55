"""Flight-delay prediction service for Santiago de Chile airport (SCL)."""

from __future__ import annotations

import os

TELEMETRY_ENV = "ORT_DISABLE_TELEMETRY"
"""onnxruntime's Linux wheels (1.32) carry Microsoft's 1DS telemetry, on unless this is set
when onnxruntime is imported (here: before any module of the service imports it; an operator's
own value is kept). On, every process that imported it wrote a device ID and a database of
events to upload (its executable's path, the OS, CPU, memory, container) under
$HOME/.cache/Microsoft/DeveloperTools (or $XDG_CACHE_HOME), where the image says it writes only
under /tmp, and a `.ses` file in TMPDIR that stayed after the server's exit; with no writable
home (a read-only root filesystem, an arbitrary uid) it wrote a colored line of its own, no JSON,
on stderr instead."""
os.environ.setdefault(TELEMETRY_ENV, "1")
