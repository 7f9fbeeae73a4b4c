"""Regenerate the Python modules of ``model_gateway.proto`` with grpc_tools.protoc.

Usage: ``python -m proto.generate [OUT_DIR]``. Without OUT_DIR the modules are
written next to the .proto (into this package). The .proto is compiled with
the repository root as include path, so generated imports read
``from proto import model_gateway_pb2``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
PROTO_FILE = "proto/model_gateway.proto"
GENERATED = ("model_gateway_pb2.py", "model_gateway_pb2.pyi", "model_gateway_pb2_grpc.py")


def generate(out_root: Path) -> list[Path]:
    """Compile the .proto into ``out_root/proto/``; return the generated files."""
    (out_root / "proto").mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{REPO_ROOT}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        PROTO_FILE,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO_FILE}")
    return [out_root / "proto" / name for name in GENERATED]


def main(argv: list[str] | None = None) -> None:
    """Command line entry: generate into OUT_DIR or into the repository."""
    argv = sys.argv[1:] if argv is None else argv
    out_root = Path(argv[0]) if argv else REPO_ROOT
    for path in generate(out_root):
        print(path)


if __name__ == "__main__":
    main()
