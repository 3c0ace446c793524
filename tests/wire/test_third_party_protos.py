"""The vendored protos under proto/third_party are the ones both SDKs speak.

The Node SDK is generated from those files (buf.gen.yaml; `scripts/check` keeps the
output fresh). The Python SDK imports the same messages from googleapis-common-protos
and grpcio-health-checking: here every vendored file is compiled and compared, message
by message, field by field, method by method, with the descriptor those packages
registered. A drift on either side (a new upstream field, a package upgrade) fails.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import grpc_tools
import pytest
from google.protobuf import descriptor_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
THIRD_PARTY = ROOT / "proto" / "third_party"
RUNTIME = {
    "google/rpc/status.proto": status_pb2,
    "google/rpc/error_details.proto": error_details_pb2,
    "google/rpc/code.proto": code_pb2,
    "grpc/health/v1/health.proto": health_pb2,
}


def compiled(tmp_path: Path) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    out = tmp_path / "third_party.binpb"
    well_known = importlib.resources.files(grpc_tools) / "_proto"
    code = protoc.main(
        [
            "protoc",
            f"-I{THIRD_PARTY}",
            f"-I{well_known}",
            f"--descriptor_set_out={out}",
            *RUNTIME,
        ]
    )
    assert code == 0
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return {f.name: f for f in files.file}


def normalized(file: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    """What the messages on the wire depend on: package, messages, enums, services.
    Not the file's own name (grpcio-health-checking registers its copy as
    `grpc_health/v1/health.proto`), its imports' names, declaration order, or the
    per-language file options (objc_class_prefix...)."""
    copy = descriptor_pb2.FileDescriptorProto(
        package=file.package,
        message_type=file.message_type,
        enum_type=file.enum_type,
        service=file.service,
        syntax=file.syntax,
    )
    copy.message_type.sort(key=lambda m: m.name)
    for message in copy.message_type:
        _drop_json_names(message)
    copy.enum_type.sort(key=lambda e: e.name)
    for service in copy.service:
        service.method.sort(key=lambda m: m.name)
    return copy


def _drop_json_names(message: descriptor_pb2.DescriptorProto) -> None:
    """protoc fills in `json_name` (derived from the field name); the runtime copy
    leaves it out. Derived either way, so it is not compared."""
    for field in message.field:
        field.ClearField("json_name")
    for nested in message.nested_type:
        _drop_json_names(nested)


def test_every_vendored_file_is_checked() -> None:
    vendored = {str(p.relative_to(THIRD_PARTY)) for p in THIRD_PARTY.rglob("*.proto")}
    assert vendored == set(RUNTIME)


@pytest.mark.parametrize("name", sorted(RUNTIME))
def test_python_runtime_matches_the_vendored_proto(tmp_path: Path, name: str) -> None:
    runtime = descriptor_pb2.FileDescriptorProto()
    RUNTIME[name].DESCRIPTOR.CopyToProto(runtime)
    assert normalized(runtime) == normalized(compiled(tmp_path)[name])


def test_node_sdk_is_generated_from_them() -> None:
    gen = ROOT / "clients" / "node" / "src" / "gen"
    for name in RUNTIME:
        generated = gen / name.replace(".proto", "_pb.ts")
        assert generated.is_file(), generated
        assert 'fileDesc("' in generated.read_text() or "file_" in generated.read_text()
