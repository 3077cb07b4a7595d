"""Which version of the ``ncnn_onnx`` domain a model imports, read without parsing the model.

The custom-op library cannot see a model's opset imports: onnxruntime builds one schema per custom-op
name, so a node of a model that imports ``ncnn_onnx: 2`` resolves to version 1 and would run the version-1
kernel silently. The session helper checks the import here first. Only the model's top-level fields are
read (protobuf wire format); the graph, which holds the weights, is skipped over, not loaded.
"""

from __future__ import annotations

import io
import os
from typing import BinaryIO, Union

DOMAIN = "ncnn_onnx"
OP_VERSION = 1

_OPSET_IMPORT_FIELD = 8  # ModelProto.opset_import: OperatorSetIdProto {domain = 1; version = 2}
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


class _NotAModel(ValueError):
    pass


def _varint(stream: BinaryIO, at_key: bool = False) -> int | None:
    value, shift = 0, 0
    while True:
        byte = stream.read(1)
        if not byte:
            if at_key and shift == 0:
                return None  # the end of the message
            raise _NotAModel("the data ends inside a field")
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise _NotAModel("malformed varint")


def _fields(stream: BinaryIO, end: int | None = None):
    """(field number, wire type, value) of each field up to `end`; a length-delimited value is given as
    (start, length) and skipped after the caller is done with it."""
    while end is None or stream.tell() < end:
        key = _varint(stream, at_key=True)
        if key is None:
            return
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            yield number, wire, _varint(stream)
        elif wire == _LENGTH:
            length = _varint(stream)
            start = stream.tell()
            yield number, wire, (start, length)
            stream.seek(start + length)
        elif wire in (_FIXED64, _FIXED32):
            stream.seek(8 if wire == _FIXED64 else 4, io.SEEK_CUR)
        else:
            raise _NotAModel(f"wire type {wire}")


def domain_versions(model: Union[str, os.PathLike, bytes]) -> dict[str, int]:
    """The model's opset imports, {domain: version} ("" is the ONNX domain). Raises ValueError when the
    data is not a protobuf message."""
    stream = open(model, "rb") if isinstance(model, (str, os.PathLike)) else io.BytesIO(model)
    with stream:
        imports: dict[str, int] = {}
        for number, wire, value in _fields(stream):
            if number != _OPSET_IMPORT_FIELD or wire != _LENGTH:
                continue
            start, length = value
            stream.seek(start)
            domain, version = "", 1
            for inner, inner_wire, inner_value in _fields(stream, start + length):
                if inner == 1 and inner_wire == _LENGTH:
                    domain = stream.read(inner_value[1]).decode("utf-8", "replace")
                elif inner == 2 and inner_wire == _VARINT:
                    version = inner_value
            imports[domain] = version
        return imports


def check_op_version(model: Union[str, os.PathLike, bytes]) -> None:
    """Raises ValueError when the model imports a version of the ncnn_onnx domain this package lacks."""
    try:
        version = domain_versions(model).get(DOMAIN)
    except _NotAModel:
        return  # onnxruntime says what is wrong with the file
    if version is not None and version != OP_VERSION:
        raise ValueError(
            f"the model imports {DOMAIN} opset version {version}; this ncnn_onnx implements NormalizedConv "
            f"version {OP_VERSION} only (docs/op.md). Re-export the model with this package, or upgrade ncnn_onnx."
        )
