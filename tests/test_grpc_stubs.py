"""The committed gRPC stubs are exactly what `make grpc-stubs` makes from the vendored proto."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PROTOS = (Path("app/grpc/grpc_predict_v2.proto"), Path("app/grpc/health.proto"))
PROTOC = ["-m", "grpc_tools.protoc", "-I", ".", "--python_out=.", "--pyi_out=."]


@pytest.mark.parametrize("proto", PROTOS, ids=str)
def test_committed_stubs_are_generated_from_the_vendored_proto(tmp_path: Path, proto: Path) -> None:
    (tmp_path / proto.parent).mkdir(parents=True)
    shutil.copy(ROOT / proto, tmp_path / proto)
    subprocess.run(
        [sys.executable, *PROTOC, str(proto)],
        cwd=tmp_path,
        check=True,
    )
    for suffix in ("_pb2.py", "_pb2.pyi"):
        name = proto.stem + suffix
        generated = (tmp_path / proto.parent / name).read_bytes()
        assert generated == (ROOT / proto.parent / name).read_bytes(), (
            f"{name}: run make grpc-stubs"
        )


def test_make_grpc_stubs_generates_every_vendored_proto() -> None:
    line = next(
        line
        for line in (ROOT / "mk/grpc.mk").read_text(encoding="utf-8").splitlines()
        if line.startswith("GRPC_PROTO :=")
    )
    assert line.split(":=")[1].split() == [str(proto) for proto in PROTOS]
    assert sorted(ROOT.glob("app/grpc/*.proto")) == sorted(ROOT / proto for proto in PROTOS)
