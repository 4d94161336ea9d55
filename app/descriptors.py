"""The file descriptors a worker may open, and each port's share of them.

Every connection is one descriptor, REST's and gRPC's alike, and a worker that has none left
accepts nothing on any port and cannot open a release's files on SIGHUP. A soft limit of 1,024
is still the default of systemd services and of containerd 2's containers, however high the
hard limit: 1,100 idle gRPC connections took a worker's REST and metrics ports down for as
long as they were held, and 1,100 idle REST connections did the same. So the master raises the
soft limit to the hard one before it forks (as Go's runtime does at start), and each port may
hold at most a share of what remains (Settings.max_connections, Settings.grpc_max_connections).
"""

from __future__ import annotations

import contextlib
import errno
import resource

REST_CONNECTIONS = 10_000
"""The default bound on a worker's REST connections where descriptors are plenty. Past it each
new connection closes another (app.server.protocol), so a load of more clients than the bound,
each reconnecting at once, churns: at 1,000 a worker, wrk's 2,048 connections on 2 workers
closed 36,000 connections in 6 s and fell from 23,000 to 14,000 answers a second (single
minimal flights, the table path, 503s included), where 1,024 closed none. 10,000 idle connections hold about 70 MB (6.8 kB each, 5,000 measured)."""
GRPC_CONNECTIONS = 1_000
"""The default bound on a worker's gRPC connections where descriptors are plenty: a few clients'
channels each, behind a load balancer or not, are far fewer; 1,000 idle ones held about 7 MB.
grpcio refuses the connection past it (no churn)."""
SHARE = 4
"""At most a quarter of the descriptors a port by default; a setting may give one up to half
(`max_connections`): the rest is the other port's, the models' and the metrics' files."""
UNLIMITED = 2**31 - 1
WORKER_DESCRIPTORS = 64
"""The fewest descriptors a worker is started with. A serving worker holds about 40 of its own
(39 counted: listeners, event loops, gRPC's, metric files); under 38 its start crashed (EMFILE
out of uvloop or an import, a traceback each; SIGSEGV in grpcio; SIGABRT), and gunicorn forked
the next at once: 163 boots in 10 s under 24, never serving (reports/reliability.md section 17)."""


def raise_limit() -> int:
    """Raises this process's soft limit to its hard one (its children inherit it); returns the
    soft limit then. A hard limit this process may not take (none on Linux) is left alone."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and hard != resource.RLIM_INFINITY:
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return limit()


def limit() -> int:
    """The descriptors this process may open (its soft limit)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return UNLIMITED if soft == resource.RLIM_INFINITY else soft


def require_worker_descriptors(descriptors: int | None = None) -> None:
    """Raises OSError (EMFILE) when the limit a worker would inherit (this process's, by
    default) is under WORKER_DESCRIPTORS."""
    descriptors = limit() if descriptors is None else descriptors
    if descriptors < WORKER_DESCRIPTORS:
        raise OSError(
            errno.EMFILE,
            f"a descriptor limit (ulimit -n, a container's nofile) of {descriptors} leaves a "
            f"worker too few: it needs {WORKER_DESCRIPTORS}",
        )


def default_connections(most: int, descriptors: int | None = None) -> int:
    """A port's default bound: `most`, or a quarter of the descriptors if that is fewer; at
    least 1."""
    descriptors = limit() if descriptors is None else descriptors
    return max(1, min(most, descriptors // SHARE))


def max_connections(descriptors: int) -> int:
    """The most MAX_CONNECTIONS or GRPC_MAX_CONNECTIONS accepted: half the descriptors, at
    least 1."""
    return max(1, descriptors // 2)
