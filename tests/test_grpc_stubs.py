"""The committed gRPC stubs are exactly what `make grpc-stubs` makes from the vendored proto."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

PROTO = Path("app/grpc/grpc_predict_v2.proto")
PROTOC = ["-m", "grpc_tools.protoc", "-I", ".", "--python_out=.", "--pyi_out=."]
STUBS = ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2.pyi")


def test_committed_stubs_are_generated_from_the_vendored_proto(tmp_path: Path) -> None:
    (tmp_path / PROTO.parent).mkdir(parents=True)
    shutil.copy(ROOT / PROTO, tmp_path / PROTO)
    subprocess.run(
        [sys.executable, *PROTOC, str(PROTO)],
        cwd=tmp_path,
        check=True,
    )
    for name in STUBS:
        generated = (tmp_path / PROTO.parent / name).read_bytes()
        assert generated == (ROOT / PROTO.parent / name).read_bytes(), (
            f"{name}: run make grpc-stubs"
        )
