"""app.server.reload: a release is copied and loaded before any worker may use it; a broken one is
refused naming the operator's file, and the previous snapshot stays pinned."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from app import processes
from app.errors import ModelLoadError
from app.inference.model import ModelSet
from app.server import reload as reload_module
from app.server.reload import (
    SERVED_ENV,
    SOURCE_ENV,
    forget_inherited_run,
    in_use,
    pin,
    prune,
    reload_models,
    restore,
    take_snapshot,
)
from app.server.run_dirs import RUN_DIR_PATTERN
from benchmarks.chaos import corrupt_release, point, retagged_release
from tests.conftest import fifo_in_place, without_blocking

if TYPE_CHECKING:
    from tests.test_server import Server

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "models"
MINIMAL_WIDTH = len(
    json.loads((MODELS_DIR / "delay-minimal.json").read_text())["encoder"]["features"]
)
"""The minimal model's graph width (2 for the committed one), which a lying card's error quotes."""


def committed_versions() -> dict[str, str]:
    return {
        path.stem: json.loads(path.read_text())["version"] for path in MODELS_DIR.glob("*.json")
    }


def test_a_snapshot_is_a_checked_copy_of_the_release(tmp_path: Path) -> None:
    release = take_snapshot(MODELS_DIR, tmp_path / "snapshots")
    assert release.versions == committed_versions()
    assert release.snapshot.parent == tmp_path / "snapshots"
    for path in MODELS_DIR.iterdir():
        assert (release.snapshot / path.name).read_bytes() == path.read_bytes()
    assert "delay-minimal" in release.describe()


def test_a_snapshot_follows_a_symlink_once(tmp_path: Path) -> None:
    shutil.copytree(MODELS_DIR, tmp_path / "r1")
    current = tmp_path / "current"
    current.symlink_to(tmp_path / "r1")
    release = take_snapshot(current, tmp_path / "snapshots")
    assert release.resolved == (tmp_path / "r1").resolve()
    assert release.source == current


@pytest.mark.parametrize("broken", ["delay-full.onnx", "delay-minimal.json"])
def test_a_broken_release_is_refused_naming_the_operators_file(tmp_path: Path, broken: str) -> None:
    models = Path(shutil.copytree(MODELS_DIR, tmp_path / "models"))
    if broken.endswith(".onnx"):
        (models / broken).write_bytes((models / broken).read_bytes()[:1000])
    else:
        (models / broken).unlink()
    with pytest.raises(ModelLoadError) as refused:
        take_snapshot(models, tmp_path / "snapshots")
    assert str(models / broken) in str(refused.value)
    assert not list((tmp_path / "snapshots").iterdir())  # the failed copy is gone


def test_a_card_naming_a_file_outside_its_directory_is_refused(tmp_path: Path) -> None:
    models = Path(shutil.copytree(MODELS_DIR, tmp_path / "models"))
    card = json.loads((models / "delay-full.json").read_text())
    card["onnx"]["file"] = "../../etc/passwd"
    (models / "delay-full.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="no plain ONNX file name"):
        take_snapshot(models, tmp_path / "snapshots")


def test_reload_pins_a_good_release_and_refuses_a_broken_one(tmp_path: Path) -> None:
    releases = tmp_path / "releases"
    shutil.copytree(MODELS_DIR, releases / "r1")
    new_versions = retagged_release(MODELS_DIR, releases / "r2", "test r2")
    corrupt_release(MODELS_DIR, releases / "broken")
    current = tmp_path / "current"
    current.symlink_to(releases / "r1")
    snapshots = tmp_path / "snapshots"
    environ = {"MODELS_DIR": str(current)}
    pin(take_snapshot(current, snapshots), environ)
    assert environ[SOURCE_ENV] == str(current)
    first_snapshot = environ["MODELS_DIR"]
    infos: list[str] = []
    errors: list[str] = []

    point(current, releases / "r2")
    second = reload_models(snapshots, 1, infos.append, errors.append, environ)
    assert second is not None
    assert second.versions == new_versions
    assert environ["MODELS_DIR"] == str(second.snapshot) != first_snapshot
    assert infos[-1].startswith("models reloaded: ")
    assert new_versions["delay-full"] in infos[-1]

    point(current, releases / "broken")
    assert reload_models(snapshots, 1, infos.append, errors.append, environ) is None
    assert environ["MODELS_DIR"] == str(second.snapshot)  # the new workers load r2 again
    assert Path(environ["MODELS_DIR"]).is_dir()
    assert errors == [errors[0]]
    assert errors[0].startswith(f"model reload refused, still serving {environ[SERVED_ENV]}")
    # the release directory the link resolved to, not the link: which release is broken
    assert str((releases / "broken" / "delay-full.onnx").resolve()) in errors[0]


def test_a_fifo_in_a_release_is_refused_without_blocking_the_reload(tmp_path: Path) -> None:
    """`mkfifo release/delay-full.onnx` then SIGHUP hung the gunicorn master in open (it stopped
    reaping workers and ignored SIGTERM; an operator probe): the reload is now refused at once,
    naming the pipe in the release the link resolves to, and the pinned snapshot stays."""
    shutil.copytree(MODELS_DIR, tmp_path / "releases" / "piped")
    fifo = fifo_in_place(tmp_path / "releases" / "piped" / "delay-full.onnx")
    current = tmp_path / "current"
    current.symlink_to(MODELS_DIR)
    snapshots = tmp_path / "snapshots"
    environ = {"MODELS_DIR": str(current)}
    pin(take_snapshot(current, snapshots), environ)
    pinned = environ["MODELS_DIR"]
    point(current, tmp_path / "releases" / "piped")
    errors: list[str] = []
    refused = without_blocking(
        lambda: reload_models(snapshots, 1, print, errors.append, environ), [fifo]
    )
    assert refused is None
    assert environ["MODELS_DIR"] == pinned
    assert len(errors) == 1
    assert f"cannot read {fifo.resolve()}: not a regular file but a named pipe (FIFO)" in errors[0]


def test_a_link_to_no_directory_is_refused_as_such(tmp_path: Path) -> None:
    current = tmp_path / "current"
    current.symlink_to(tmp_path / "releases" / "never-copied")
    with pytest.raises(ModelLoadError) as refused:
        take_snapshot(current, tmp_path / "snapshots")
    assert str(refused.value) == (
        f"model directory not found: {current} -> {(tmp_path / 'releases' / 'never-copied')}"
    )


def test_a_file_in_place_of_the_release_directory_is_refused_as_such(tmp_path: Path) -> None:
    release = tmp_path / "models"
    release.write_bytes(b"")
    with pytest.raises(ModelLoadError) as refused:
        take_snapshot(release, tmp_path / "snapshots")
    assert str(refused.value) == f"model directory is not a directory: {release}"


def test_a_symlink_loop_or_an_unmakeable_snapshot_is_a_refusal(tmp_path: Path) -> None:
    """What the OS refuses before any model is read (a symlink loop: RuntimeError or OSError,
    by Python version; a snapshot directory under a file) is a one-line ModelLoadError too."""
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(ModelLoadError, match=f"^cannot snapshot {loop}: "):
        take_snapshot(loop, tmp_path / "snapshots")
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ModelLoadError) as refused:
        take_snapshot(MODELS_DIR, tmp_path / "file" / "snapshots")
    assert str(refused.value).startswith(
        f"cannot snapshot {MODELS_DIR}: [Errno 20] Not a directory"
    )


def test_a_symlink_loop_left_unresolved_is_not_a_missing_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python 3.13's Path.resolve() returns a symlink loop as it is (3.11's raised RuntimeError),
    and Path.exists() reads the loop as absent: the refusal said "model directory not found".
    Here 3.13's resolve on any Python: the loop is still what the OS refuses."""
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    monkeypatch.setattr(Path, "resolve", lambda self, strict=False: self)
    with pytest.raises(ModelLoadError, match=f"^cannot snapshot {loop}: .*symbolic links"):
        take_snapshot(loop, tmp_path / "snapshots")


def test_a_card_that_is_no_json_is_refused_before_its_onnx_file_is_looked_for(
    tmp_path: Path,
) -> None:
    models = Path(shutil.copytree(MODELS_DIR, tmp_path / "models"))
    (models / "delay-minimal.json").write_bytes(b"{not json")
    with pytest.raises(ModelLoadError) as refused:
        take_snapshot(models, tmp_path / "snapshots")
    assert str(refused.value).startswith(
        f"model card unreadable: {models / 'delay-minimal.json'}: JSONDecodeError("
    )
    assert not list((tmp_path / "snapshots").iterdir())


def test_an_interrupted_snapshot_is_removed_and_the_interrupt_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ModelSet, "load", interrupted)
    with pytest.raises(KeyboardInterrupt):
        take_snapshot(MODELS_DIR, tmp_path / "snapshots")
    assert not list((tmp_path / "snapshots").iterdir())


def test_prune_keeps_the_pinned_snapshot_and_those_live_workers_load(tmp_path: Path) -> None:
    snapshots = [tmp_path / f"release-{n}" for n in range(4)]
    for path in snapshots:
        path.mkdir()
    worker = SimpleNamespace(models_dir=str(snapshots[0]))  # forked long ago, still loading
    keep = in_use({"MODELS_DIR": str(snapshots[3])}, [worker, SimpleNamespace()])
    assert keep == {snapshots[0], snapshots[3]}
    prune(tmp_path, keep)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release-0", "release-3"]


def lying_card(models: Path) -> None:
    """delay-full's card, sha256 and version and all, in front of the minimal model's ONNX file:
    every check on the file passes; the card's encoding does not fit the model's graph."""
    card = json.loads((models / "delay-full.json").read_text())
    onnx = (models / "delay-minimal.onnx").read_bytes()
    (models / card["onnx"]["file"]).write_bytes(onnx)
    card["onnx"]["sha256"] = hashlib.sha256(onnx).hexdigest()
    card["version"] = card["onnx"]["sha256"][:12]
    (models / "delay-full.json").write_text(json.dumps(card))


def directory_in_place(models: Path) -> None:
    (models / "delay-full.onnx").unlink()
    (models / "delay-full.onnx").mkdir()


def directory_card(models: Path) -> None:
    (models / "delay-minimal.json").unlink()
    (models / "delay-minimal.json").mkdir()


def profile_features_a_list(models: Path) -> None:
    """The operator probe: the reload took it, and every new worker crashed on it, then
    gunicorn's master."""
    card = json.loads((models / "delay-full.json").read_text())
    card["profile"]["features"] = []
    (models / "delay-full.json").write_text(json.dumps(card))


def threshold_above_every_sample(models: Path) -> None:
    """A threshold inside (0, 1) that no flight reaches: the reload took it, and every flight
    was then on time (`make check-models` alone refused it)."""
    card = json.loads((models / "delay-full.json").read_text())
    card["threshold"] = max(sample["proba"] for sample in card["samples"]) + 0.01
    (models / "delay-full.json").write_text(json.dumps(card))


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (
            lying_card,
            f"delay-full.json: the ONNX graph takes [features tensor(float) [None, {MINIMAL_WIDTH}]]",
        ),
        (threshold_above_every_sample, "every flight would get one label"),
        (profile_features_a_list, "delay-full.json: its drift profile does not fit delay-full's"),
        (directory_in_place, "delay-full.onnx: not a regular file but a directory"),
        (directory_card, "delay-minimal.json: not a regular file but a directory"),
    ],
)
def test_any_failure_of_a_release_is_a_one_line_refusal(
    tmp_path: Path, damage: Callable[[Path], None], named: str
) -> None:
    models = Path(shutil.copytree(MODELS_DIR, tmp_path / "models"))
    environ = {"MODELS_DIR": str(MODELS_DIR)}
    pin(take_snapshot(MODELS_DIR, tmp_path / "snapshots"), environ)
    pinned = environ["MODELS_DIR"]
    damage(models)
    environ[SOURCE_ENV] = str(models)
    errors: list[str] = []
    assert reload_models(tmp_path / "snapshots", 1, print, errors.append, environ) is None
    assert len(errors) == 1
    assert "\n" not in errors[0]
    assert named in errors[0]
    assert environ["MODELS_DIR"] == pinned
    assert [p.name for p in (tmp_path / "snapshots").iterdir()] == [Path(pinned).name]


def test_an_unreadable_file_is_refused_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """chmod 000 does not stop root, who runs the tests: the refusal of the read is simulated
    here (benchmarks/chaos.py's storm runs the server as an unprivileged user instead)."""
    models = Path(shutil.copytree(MODELS_DIR, tmp_path / "models"))
    real_open = os.open

    def refusing_open(path: str | Path, flags: int, *args: int, **kwargs: int) -> int:
        if Path(path) == models / "delay-full.onnx":
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    with pytest.raises(ModelLoadError, match=r"cannot read .*delay-full\.onnx: Permission denied"):
        take_snapshot(models, tmp_path / "snapshots")
    # and the same file read by a worker at start-up (app.inference.model): the same kind of one
    # line
    with pytest.raises(ModelLoadError, match=r"cannot read .*delay-full\.onnx: Permission denied"):
        ModelSet.load(models)


def test_a_snapshot_the_disk_cannot_take_is_refused_naming_the_servers_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full TMPDIR was reported as `release unusable: <MODELS_DIR>: OSError: No space left`,
    sending the operator to a release that is fine."""
    real_write = Path.write_bytes

    def full(path: Path, data: bytes) -> int:
        if path.name.endswith(".onnx"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_write(path, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    snapshots = tmp_path / "snapshots"
    with pytest.raises(ModelLoadError) as refused:
        take_snapshot(MODELS_DIR, snapshots)
    assert str(refused.value) == (
        f"model snapshot not written in {snapshots} (the server's run directory, under TMPDIR): "
        "No space left on device"
    )
    assert not list(snapshots.iterdir())


def test_any_other_error_refuses_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("onnxruntime said no\nin two lines")

    monkeypatch.setattr(ModelSet, "load", broken)
    with pytest.raises(ModelLoadError) as refused:
        take_snapshot(MODELS_DIR, tmp_path / "snapshots")
    assert str(refused.value) == (
        f"release unusable: {MODELS_DIR}: RuntimeError: onnxruntime said no in two lines"
    )
    assert not list((tmp_path / "snapshots").iterdir())


def test_reloads_are_serialised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    active = []
    overlaps = []
    real = reload_module.take_snapshot

    def slow(*args: object, **kwargs: object) -> object:
        active.append(1)
        overlaps.append(len(active))
        time.sleep(0.05)
        active.pop()
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(reload_module, "take_snapshot", slow)
    environ = {"MODELS_DIR": str(MODELS_DIR)}
    threads = [
        threading.Thread(target=reload_models, args=(tmp_path / "s", 1, print, print, environ))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == [1, 1, 1, 1]
    assert len(list((tmp_path / "s").iterdir())) == 1  # only the pinned one is left


def test_a_master_re_executed_by_sigusr2_forgets_the_old_masters_run(tmp_path: Path) -> None:
    """gunicorn hands the new master the environment it copied at the old master's last SIGHUP:
    the old run's directories and MODELS_DIR naming one of its snapshots. The new master takes
    the operator's MODELS_DIR and makes its own directories; a prometheus directory given from
    outside is kept."""
    old = f"/tmp/latam-delay-run-{os.getppid()}-old"
    environ = {
        "LATAM_DELAY_RUN_DIR": old,
        "LATAM_DELAY_OWN_METRICS_DIR": "/tmp/latam-delay-metrics-1-old",
        "PROMETHEUS_MULTIPROC_DIR": "/tmp/latam-delay-metrics-1-old",
        "MODELS_SOURCE": "/srv/models/current",
        "MODELS_SERVED": "delay-minimal abc from /srv/models/releases/1",
        "MODELS_DIR": f"{old}/models/release-x",
        "LATAM_DELAY_GENERATION": "3",
        "BIND": "0.0.0.0:8000",
    }
    assert forget_inherited_run(environ)
    assert environ == {"MODELS_DIR": "/srv/models/current", "BIND": "0.0.0.0:8000"}
    given = {"LATAM_DELAY_RUN_DIR": old, "PROMETHEUS_MULTIPROC_DIR": "/var/metrics"}
    assert forget_inherited_run(given)
    assert given == {"PROMETHEUS_MULTIPROC_DIR": "/var/metrics"}


def test_a_masters_own_run_is_kept_when_its_conf_runs_again_on_sighup() -> None:
    environ = {
        "LATAM_DELAY_RUN_DIR": f"/tmp/latam-delay-run-{os.getpid()}-mine",
        "MODELS_DIR": "/tmp/snapshot",
        "MODELS_SOURCE": "/srv/models/current",
    }
    assert not forget_inherited_run(dict(environ))
    assert not forget_inherited_run({"MODELS_DIR": "models"})


def stop_upgraded(server: Server, new: int, deadline: float) -> None:
    """SIGTERM to a binary upgrade's new master, the old one gone: it started without a
    refusal, and every run and metrics directory of both masters is removed by `deadline`."""
    import signal

    assert "cannot start" not in server.log()
    os.kill(new, signal.SIGTERM)
    while any(True for _ in server.workdir.glob("latam-delay-*")):
        assert time.monotonic() < deadline, sorted(server.workdir.iterdir())
        time.sleep(0.2)


def test_a_binary_upgrade_after_a_reload_serves_from_its_own_run(tmp_path: Path) -> None:
    """SIGHUP, then SIGUSR2 and SIGTERM to the old master, as gunicorn's upgrade goes: the new
    master checks the operator's models, serves /predict and its metrics, reloads, and leaves
    nothing behind. Before, it failed to start on the old master's pruned snapshot and its exit
    removed the running master's directories (its /metrics then a 500)."""
    import signal

    import httpx2 as httpx

    from tests.test_server import spawn, stop, wait_until_ready

    server = spawn(tmp_path / "run", WORKERS="1")
    try:
        wait_until_ready(server, startups=1)
        old = server.process.pid
        os.kill(old, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while server.log().count("Application startup complete") < 2:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        os.kill(old, signal.SIGUSR2)
        while "Listening at" not in server.log().partition("Handling signal: usr2")[2]:
            assert time.monotonic() < deadline + 30, server.log()
            time.sleep(0.1)
        new_runs = [
            path for path in server.workdir.glob("latam-delay-run-*") if f"-{old}-" not in path.name
        ]
        assert len(new_runs) == 1, (sorted(server.workdir.iterdir()), server.log())
        (new_run,) = new_runs
        new = int(RUN_DIR_PATTERN.fullmatch(new_run.name).group(1))  # type: ignore[union-attr]
        os.kill(old, signal.SIGTERM)
        server.process.wait(timeout=30)
        body = {"flights": [{"OPERA": "Grupo LATAM", "TIPOVUELO": "N", "MES": 3}]}
        while True:
            try:
                answer = httpx.post(server.url + "/predict", json=body, timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline + 60, server.log()
                time.sleep(0.2)
        assert answer.json() == {"predict": [0]}
        assert httpx.get(server.url + "/metrics", timeout=5).status_code == 200
        stop_upgraded(server, new, deadline + 90)
    finally:
        stop(server)


@pytest.mark.parametrize("given", [False, True], ids=["own", "given"])
def test_both_generations_of_a_binary_upgrade_scrape_the_same_counts(
    tmp_path: Path, given: bool
) -> None:
    """SIGUSR2 (no SIGHUP before it), then SIGTERM to the old master: both generations' workers
    answer the metrics port, so each scrape must read every worker's counts. The new master
    wrote to a directory of its own: a scrape read one generation's counters or the other's
    (3 or none: a counter reset to Prometheus at every flip), model_workers 1 of 2 live
    workers, and after the old master's exit the counters started again from 0. With a
    PROMETHEUS_MULTIPROC_DIR given from outside, the new master (not told an upgrade without a
    SIGHUP before it) removed the running workers' files as a fresh start's leftovers."""
    import re
    import signal

    import httpx2 as httpx

    from tests.test_server import spawn, stop, wait_until_ready

    body = {"flights": [{"OPERA": "Grupo LATAM", "TIPOVUELO": "N", "MES": 3}]}

    def scrape(url: str) -> tuple[float, float]:
        text = httpx.get(url + "/metrics", timeout=5).text
        answered = re.search(
            r'^http_requests_total\{[^}]*route="/predict"[^}]*\} (\S+)', text, re.M
        )
        workers = re.search(r'^model_workers\{model="delay-full"[^}]*\} (\S+)', text, re.M)
        return (
            float(answered.group(1)) if answered else 0.0,
            float(workers.group(1)) if workers else 0.0,
        )

    env = {"WORKERS": "1"}
    if given:
        (tmp_path / "metrics").mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "metrics")
    server = spawn(tmp_path / "run", preexec=None, wrapper=(), **env)  # named: env binds neither
    new = 0
    try:
        wait_until_ready(server, startups=1)
        for _ in range(3):
            assert httpx.post(server.url + "/predict", json=body, timeout=5).status_code == 200
        old = server.process.pid
        deadline = time.monotonic() + 60
        os.kill(old, signal.SIGUSR2)
        while server.log().partition("Handling signal: usr2")[2].count("startup complete") < 1:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        (new_run,) = [
            path for path in server.workdir.glob("latam-delay-run-*") if f"-{old}-" not in path.name
        ]
        new = int(RUN_DIR_PATTERN.fullmatch(new_run.name).group(1))  # type: ignore[union-attr]
        assert len(list(server.workdir.glob("latam-delay-metrics-*"))) == (0 if given else 1)
        time.sleep(1.5)  # the old worker's last flush
        for _ in range(10):  # fresh connections: either generation's worker may answer
            assert scrape(server.url) == (3.0, 2.0)
        os.kill(old, signal.SIGTERM)
        server.process.wait(timeout=30)
        for _ in range(2):
            assert httpx.post(server.url + "/predict", json=body, timeout=5).status_code == 200
        time.sleep(1.5)
        assert scrape(server.url) == (5.0, 1.0)
        stop_upgraded(server, new, deadline + 30)
    finally:
        if new and processes.exists(new):
            os.kill(new, signal.SIGTERM)
        stop(server)


def test_a_refused_reload_shows_in_the_metrics_until_one_is_applied(tmp_path: Path) -> None:
    """A refused SIGHUP was one log line in the master: the workers it forked serve the old
    release, so /metrics looked healthy while MODELS_DIR held a release the server would not
    serve, and no alert could see it (LatamDelayModelReloadRefused reads these series)."""
    import re
    import signal

    import httpx2 as httpx

    from tests.test_server import spawn, stop, wait_until_ready

    def reloads(url: str) -> tuple[float, float, float]:
        text = httpx.get(url + "/metrics", timeout=5).text

        def value(series: str) -> float:
            found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
            assert found, (series, text)
            return float(found.group(1))

        return (
            value('model_reloads_total{outcome="applied"}'),
            value('model_reloads_total{outcome="refused"}'),
            value("model_last_reload_successful"),
        )

    def reload_to(release: Path, logged: str) -> None:
        point(link, release)
        before = server.log().count(logged)
        os.kill(server.process.pid, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while server.log().count(logged) == before:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)

    good, broken, link = tmp_path / "good", tmp_path / "broken", tmp_path / "current"
    shutil.copytree(MODELS_DIR, good)
    corrupt_release(MODELS_DIR, broken)
    point(link, good)
    server = spawn(tmp_path / "run", WORKERS="1", MODELS_DIR=str(link))
    try:
        wait_until_ready(server, startups=1)
        assert reloads(server.url) == (0.0, 0.0, 1.0)  # from zero, so that increase() sees one
        reload_to(broken, "model reload refused")
        assert reloads(server.url) == (0.0, 1.0, 0.0)
        reload_to(good, "models reloaded")
        assert reloads(server.url) == (1.0, 1.0, 1.0)
    finally:
        stop(server)


def test_a_failure_to_count_a_reload_does_not_stop_the_master(
    gunicorn_conf: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The count runs in gunicorn's arbiter (on_reload's, app.server.forks' reloaded): an error
    raised there stops the whole server."""
    from app.observability import metrics
    from app.server import handoff

    def cannot_count(applied: bool | None) -> None:
        raise OSError(28, "No space left on device")

    conf = gunicorn_conf
    monkeypatch.setattr(metrics, "count_reload", cannot_count)
    monkeypatch.setattr(handoff, "advance", lambda directory, workers: None)
    monkeypatch.setattr(reload_module, "reload_models", lambda *args, **kwargs: None)
    warnings: list[str] = []
    server = SimpleNamespace(
        cfg=SimpleNamespace(workers=1),
        WORKERS={},
        log=SimpleNamespace(
            info=print, error=print, warning=lambda message, *args: warnings.append(message % args)
        ),
    )
    conf["on_reload"](server)
    conf["_count_reload"](server, True)
    assert warnings == [
        "reload outcome not counted in /metrics: OSError(28, 'No space left on device')"
    ]


def test_restore_writes_back_what_is_gone_from_a_snapshot_as_checked(tmp_path: Path) -> None:
    """A file removed or altered under the server comes back as the bytes that were checked,
    whatever MODELS_DIR holds now; an intact snapshot is left as it is."""
    models = Path(shutil.copytree(MODELS_DIR, tmp_path / "models"))
    release = take_snapshot(models, tmp_path / "snapshots")
    checked = {path.name: path.read_bytes() for path in release.snapshot.iterdir()}
    assert dict(release.files) == checked
    assert len(checked) == 4
    assert restore(release) == []
    (models / "delay-full.onnx").write_bytes(b"a newer release")
    (release.snapshot / "delay-full.onnx").unlink()
    (release.snapshot / "delay-minimal.json").write_bytes(b"{}")
    assert sorted(restore(release)) == ["delay-full.onnx", "delay-minimal.json"]
    shutil.rmtree(release.snapshot.parent)  # the whole run directory
    assert sorted(restore(release)) == sorted(checked)
    assert {path.name: path.read_bytes() for path in release.snapshot.iterdir()} == checked
    ModelSet.load(release.snapshot)


@pytest.mark.skipif(os.geteuid() != 0, reason="making another user's directory needs root")
def test_restore_writes_nothing_in_a_directory_another_user_made_at_the_snapshots_name(
    tmp_path: Path,
) -> None:
    """The snapshot's names are in a shared TMPDIR's listing: after a /tmp cleaner took the run
    directory, another local user made the snapshot's path and a symlink at a file's temporary
    name, and the master (root) wrote the model card through it over a file of root's alone, and
    the next worker loaded whatever that user then put in the snapshot."""
    run = tmp_path / "latam-delay-run-1-x"
    release = take_snapshot(MODELS_DIR, run / "models")
    victim = tmp_path / "victim"
    victim.write_text("root's own")
    victim.chmod(0o600)
    shutil.rmtree(run)  # the cleaner
    release.snapshot.mkdir(parents=True)  # the other user, in turn
    for made in (run, run / "models", release.snapshot):
        os.chown(made, 65534, 65534)
    (release.snapshot / ".delay-minimal.json.restoring").symlink_to(victim)
    with pytest.raises(PermissionError):
        restore(release)
    assert victim.read_text() == "root's own"
    assert sorted(path.name for path in release.snapshot.iterdir()) == [
        ".delay-minimal.json.restoring"
    ]


@pytest.mark.skipif(os.geteuid() != 0, reason="making another user's directory needs root")
def test_a_worker_does_not_load_a_snapshot_another_user_made_again(
    gunicorn_conf: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write-back refused, the other user's directory stays where the worker would load its
    models from: whatever model that user put there was served."""
    snapshot = tmp_path / "latam-delay-run-1-x" / "models" / "release-y"
    shutil.copytree(MODELS_DIR, snapshot)  # a consistent release, the other user's
    for made in (snapshot, snapshot.parent, snapshot.parent.parent):
        os.chown(made, 65534, 65534)
    monkeypatch.setenv("MODELS_DIR", str(snapshot))
    errors: list[str] = []
    server = SimpleNamespace(
        WORKER_BOOT_ERROR=3,
        log=SimpleNamespace(error=lambda message, *args: errors.append(message % args)),
    )
    with pytest.raises(SystemExit) as exited:
        gunicorn_conf["post_fork"](server, SimpleNamespace())
    assert exited.value.code == 3
    assert errors == [
        f"model snapshot not loaded: {snapshot}: not a directory of this user's or root's"
    ]
    monkeypatch.setenv("MODELS_DIR", str(take_snapshot(MODELS_DIR, tmp_path / "own").snapshot))
    gunicorn_conf["post_fork"](server, SimpleNamespace())  # this user's own: loaded


def test_a_file_that_cannot_be_written_back_leaves_no_partial_copy(tmp_path: Path) -> None:
    """A failed write-back (here a directory in the file's place; a full disk alike) raises for
    pre_fork to log and leaves the snapshot as it found it, without a `.<name>.restoring`."""
    release = take_snapshot(MODELS_DIR, tmp_path / "snapshots")
    target = release.snapshot / "delay-full.onnx"
    target.unlink()
    target.mkdir()
    with pytest.raises(IsADirectoryError):
        restore(release)
    assert sorted(path.name for path in release.snapshot.iterdir()) == sorted(release.files)
    assert target.is_dir()


def test_a_snapshot_removed_from_under_the_server_is_written_back_before_a_worker_loads_it(
    tmp_path: Path,
) -> None:
    """A /tmp cleaner that ignores the master's lock (tmpwatch, tmpreaper) or an operator's rm
    took the snapshot: the next worker to boot, a killed one's replacement or a refused
    reload's, could not load its models and gunicorn halted (exit 3). pre_fork writes it back."""
    import signal

    import httpx2 as httpx

    from tests.test_server import (
        MINIMAL_FLIGHTS,
        spawn,
        stop,
        wait_until_ready,
        workers_of,
    )

    def started() -> int:
        return server.log().count("Application startup complete")

    def snapshot_removed() -> None:
        (run,) = server.workdir.glob("latam-delay-run-*")
        shutil.rmtree(run / "models")

    def answers() -> int:
        body = {"flights": MINIMAL_FLIGHTS}
        return httpx.post(server.url + "/predict", json=body, timeout=30).status_code

    release = Path(shutil.copytree(MODELS_DIR, tmp_path / "release"))
    server = spawn(tmp_path / "run", WORKERS="1", MODELS_DIR=str(release))
    try:
        wait_until_ready(server, startups=1)
        snapshot_removed()
        before = started()
        os.kill(next(iter(workers_of(server))), signal.SIGKILL)
        wait_until_ready(server, startups=before + 1)
        assert answers() == 200
        snapshot_removed()
        (release / "delay-full.json").unlink()
        before = started()
        os.kill(server.process.pid, signal.SIGHUP)
        wait_until_ready(server, startups=before + 1)
        assert answers() == 200
        log = server.log()
        assert log.count("had lost") == 2, log
        assert "model reload refused" in log
    finally:
        stop(server)


def test_a_failure_to_restore_a_snapshot_does_not_stop_the_master(
    gunicorn_conf: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pre_fork runs in gunicorn's arbiter: an error raised there stops the whole server. The
    worker then fails to load as it would have, and the log says why."""
    release = take_snapshot(MODELS_DIR, tmp_path / "snapshots")
    shutil.rmtree(tmp_path / "snapshots")
    (tmp_path / "snapshots").write_text("a file in its place: the snapshot cannot be made again")
    monkeypatch.setenv("MODELS_DIR", str(release.snapshot))
    warnings: list[str] = []
    server = SimpleNamespace(
        pinned_release=release,
        log=SimpleNamespace(warning=lambda message, *args: warnings.append(message % args)),
    )
    worker = SimpleNamespace()
    gunicorn_conf["pre_fork"](server, worker)
    assert worker.models_dir == str(release.snapshot)
    assert len(warnings) == 1
    assert warnings[0].startswith(f"model snapshot {release.snapshot} not restored: ")


def test_an_inherited_run_keeps_a_prometheus_directory_given_from_outside() -> None:
    """The old master's own metrics directory goes with its run; a PROMETHEUS_MULTIPROC_DIR the
    operator gave (not the old master's own) stays, whatever the old master named as its own."""
    old = f"/tmp/latam-delay-run-{os.getppid()}-old"
    environ = {
        "LATAM_DELAY_RUN_DIR": old,
        "LATAM_DELAY_OWN_METRICS_DIR": "/tmp/latam-delay-metrics-1-old",
        "PROMETHEUS_MULTIPROC_DIR": "/var/metrics",
    }
    assert forget_inherited_run(environ)
    assert environ == {"PROMETHEUS_MULTIPROC_DIR": "/var/metrics"}


def test_a_snapshot_is_taken_when_its_run_directory_is_gone(tmp_path: Path) -> None:
    """A /tmp cleaner that took the master's whole run directory: the next reload makes it
    again rather than refusing the release."""
    snapshots = tmp_path / "run-gone" / "models"
    release = take_snapshot(MODELS_DIR, snapshots)
    assert release.snapshot.parent == snapshots
    assert release.versions == committed_versions()


@pytest.mark.parametrize(
    ("failure", "refusal"),
    [
        (ModelLoadError("model card unreadable"), ModelLoadError),
        (RuntimeError("onnxruntime said no"), ModelLoadError),
        (KeyboardInterrupt(), KeyboardInterrupt),
    ],
    ids=["unloadable", "onnxruntime", "interrupt"],
)
def test_a_snapshot_taken_from_under_a_failing_load_is_still_that_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException, refusal: type
) -> None:
    """A /tmp cleaner (or an operator's rm) that took the snapshot while it was loading: the
    release is refused (or the interrupt goes on) as if it were there, not a FileNotFoundError
    out of gunicorn's on_reload, which would stop the master."""

    def failing(snapshot: Path, *args: object) -> None:
        shutil.rmtree(snapshot)
        raise failure

    monkeypatch.setattr(ModelSet, "load", failing)
    with pytest.raises(refusal):
        take_snapshot(MODELS_DIR, tmp_path / "snapshots")
    assert not list((tmp_path / "snapshots").iterdir())


def test_prune_leaves_what_it_cannot_remove(tmp_path: Path) -> None:
    """A snapshot name that is no directory (here a symlink, which rmtree refuses) stays; the
    reload that prunes goes on."""
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    (snapshots / "release-odd").symlink_to(tmp_path)
    (snapshots / "release-old").mkdir()
    prune(snapshots, keep=[])
    assert [path.name for path in snapshots.iterdir()] == ["release-odd"]
